"""Step time on an emulated cluster: M processes over gloo, each host behind a capped network link.

    python -m benchmarks.cluster            # M = 2, 4, 8 at 1 and 10 Gbit/s (as root: network namespaces)
    python -m benchmarks.cluster --quick    # M = 2, one rate, the small workloads (the smoke test)

Each host is a network namespace with one veth link to a bridge; ``tc`` (token bucket) caps the
link at the given rate in each direction, so a host sends and receives at most that much, as with
a real NIC. The M processes of one JAX job (``jax.distributed`` over gloo, one worker each) run in
those namespaces, started like ``train.launch``; all traffic stays on this machine. Without the
rights for namespaces (not root) it falls back to one unprivileged user and network namespace whose
loopback is capped (all links then share one capped medium: pessimistic); without even that,
to uncapped loopback. The result says which (``network``).

Hosts are built as real ones are: one process per host, holding the host's devices. Workloads,
each timed as the median of ``--steps`` steps after compiling and a warm-up step:

* ``optimizer_step``: the update of a 25.6M-parameter tree (20 leaves; ResNet-50's size) from
  fixed per-worker gradients: the exchange and the optimizer, no model;
* ``train_step``: forward, backward and update of ResNet-18 (CIFAR stem, 11.2M parameters) on a
  batch of ``--batch`` 32x32 images per host (split over its devices).

Methods: ``sgd_allreduce`` (SGD with momentum over ``mean_allreduce``, float32), and Signum with
majority vote over ``allgather`` and ``alltoall`` (one device per host), and ``hierarchical``:
hosts of 2 devices (``DEVICES_PER_HOST``, simulated CPU devices of the host's one process) that
sum their momentum inside the process, then vote across hosts with ``alltoall``.

For each step the result gives ``local``, the same workload timed on each process alone at the
same time with no exchange (the CPU is shared the same way), and the communication time
``step - local``, which counts packing and counting the vote as communication, as the paper's
Figure 5 does with compression. Beside it stands the wire time: the bytes each host sends in the
step's collectives (read from the compiled HLO, bandwidth-optimal algorithms) at the link rate.
The gap between the two is the overhead of our packing and of gloo. Every process is stopped
after ``--timeout`` seconds. Writes ``benchmarks/results/cluster-<device>-<date>.{json,md,png}``.
"""

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from benchmarks import results, timing

WORKLOADS = ("optimizer_step", "train_step")
FLAT_METHODS = ("sgd_allreduce", "signum_allgather", "signum_alltoall")
HIERARCHICAL = "signum_hierarchical"
DEVICES_PER_HOST = 2  # For the hierarchical layout.
SUBNET = "10.231.0"
TREE_COORDINATES, TREE_LEAVES = 25_600_000, 20


# ----------------------------------------------------------------------------------------------
# The network: namespaces and links (run as root), a capped user-namespace loopback, or nothing.


def _run(*command):
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"cluster: `{' '.join(command)}` failed: {done.stderr.strip()}")


def _tbf(rate: str) -> list[str]:
  # The bucket must hold a few 64 kB segments (veth offloads) and a timer tick of traffic.
  return ["tbf", "rate", rate, "burst", "4mb" if rate.endswith(("gbit", "Gbit")) else "256kb", "latency", "100ms"]


class Namespaces:
  """One network namespace per host, joined to a bridge (in its own namespace) by a capped veth link."""

  mode = "netns"

  def __init__(self, num_hosts: int):
    self.tag = f"sv{os.getpid() % 100000}"
    self.hosts = [f"{self.tag}h{h}" for h in range(num_hosts)]
    self.bridge = f"{self.tag}br"
    self.links = []  # (namespace, device) of every link end that gets a qdisc.
    _run("ip", "netns", "add", self.bridge)
    _run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
    _run("ip", "-n", self.bridge, "link", "set", "br0", "up")
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{self.address(h)} {self.hostname(h)}\n" for h in range(num_hosts))
    for h, ns in enumerate(self.hosts):
      # `ip netns exec` shows /etc/netns/<ns>/hosts as /etc/hosts: gloo binds to its hostname's address.
      pathlib.Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)
      pathlib.Path(f"/etc/netns/{ns}/hosts").write_text(hosts_file)
      _run("ip", "netns", "add", ns)
      host_end, bridge_end = f"{self.tag}a{h}", f"{self.tag}b{h}"
      _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", bridge_end)
      _run("ip", "link", "set", host_end, "netns", ns)
      _run("ip", "link", "set", bridge_end, "netns", self.bridge)
      _run("ip", "-n", ns, "addr", "add", f"{self.address(h)}/24", "dev", host_end)
      for dev in ("lo", host_end):
        _run("ip", "-n", ns, "link", "set", dev, "up")
      _run("ip", "-n", self.bridge, "link", "set", bridge_end, "master", "br0")
      _run("ip", "-n", self.bridge, "link", "set", bridge_end, "up")
      self.links += [(ns, host_end), (self.bridge, bridge_end)]
    self._rate = None

  @staticmethod
  def address(host: int) -> str:
    return f"{SUBNET}.{host + 1}"

  @staticmethod
  def hostname(host: int) -> str:
    return f"svhost{host}"

  def coordinator(self, port: int) -> str:
    return f"{self.address(0)}:{port}"

  def prefix(self, host: int) -> list[str]:
    return ["ip", "netns", "exec", self.hosts[host], "unshare", "--uts", "sh", "-c",
            f'hostname {self.hostname(host)} && exec "$@"', "sh"]

  def set_rate(self, rate: str) -> None:
    verb = "add" if self._rate is None else "change"
    for ns, dev in self.links:
      _run("ip", "netns", "exec", ns, "tc", "qdisc", verb, "dev", dev, "root", *_tbf(rate))
    self._rate = rate

  def close(self) -> None:
    for ns in [*self.hosts, self.bridge]:
      subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    for ns in self.hosts:
      shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


class Loopback:
  """All processes on this namespace's loopback, capped as a whole when ``capped`` (one shared medium)."""

  def __init__(self, capped: bool):
    self.capped = capped
    self.mode = "capped-loopback" if capped else "uncapped-loopback"
    self._rate = None

  @staticmethod
  def coordinator(port: int) -> str:
    return f"127.0.0.1:{port}"

  @staticmethod
  def prefix(host: int) -> list[str]:
    del host
    return []

  def set_rate(self, rate: str) -> None:
    if self.capped:
      _run("tc", "qdisc", "add" if self._rate is None else "change", "dev", "lo", "root", *_tbf(rate))
    self._rate = rate

  def close(self) -> None:
    if self.capped and self._rate is not None:
      subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False, capture_output=True)


def namespaces_work() -> bool:
  if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc") or not os.access("/etc", os.W_OK):
    return False
  probe = f"svprobe{os.getpid() % 100000}"
  ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
  subprocess.run(["ip", "netns", "del", probe], capture_output=True)
  return ok


def in_private_user_namespace() -> bool:
  return os.environ.get("SIGNVOTE_CLUSTER_USERNS") == "1"


def user_namespace_works() -> bool:
  return bool(shutil.which("unshare") and shutil.which("tc")) and subprocess.run(
      ["unshare", "-rnu", "sh", "-c", "ip link set lo up && tc qdisc add dev lo root tbf rate 1gbit burst 4mb latency 100ms"],
      capture_output=True).returncode == 0


def choose_network(requested: str, module: str, argv) -> str | None:
  """The network mode to run in: ``requested``, or with ``auto`` the best this process may build.

  ``capped-loopback`` needs a private user namespace: this reruns ``python -m module argv`` inside
  one and returns None once it has finished (the caller is then done).
  """
  mode = requested
  if mode == "auto":
    if namespaces_work():
      mode = "netns"
    elif in_private_user_namespace() or user_namespace_works():
      mode = "capped-loopback"
    else:
      mode = "uncapped-loopback"
  if mode == "capped-loopback" and not in_private_user_namespace():
    # A new unprivileged user + network + UTS namespace, whose `lo` this process may shape without
    # touching the machine's.
    script = 'ip link set lo up && hostname localhost && exec "$@"'
    env = {**os.environ, "SIGNVOTE_CLUSTER_USERNS": "1"}
    command = [sys.executable, "-m", module, *(sys.argv[1:] if argv is None else argv), "--network", mode]
    subprocess.run(["unshare", "-rnu", "sh", "-c", script, "sh", *command], env=env, check=True)
    return None
  print(f"{module.rsplit('.', 1)[-1]}: network {mode}", flush=True)
  return mode


NETWORK_MODES = ("auto", "netns", "capped-loopback", "uncapped-loopback")
HOW = {"netns": "one network namespace per host, veth links capped by tc in both directions",
       "capped-loopback": "one user namespace's loopback capped by tc, shared by all processes (not per link)",
       "uncapped-loopback": "plain loopback, not capped (no rights to shape traffic): link rates NOT applied"}


def exit_cleanly_on_signals() -> None:
  """SIGTERM and SIGHUP end this process as Ctrl-C does, through every ``finally``: its host processes
  are stopped and its network namespaces removed, rather than left behind."""

  def stop(signum, frame):
    del frame
    raise SystemExit(128 + signum)

  for signum in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, stop)


@contextlib.contextmanager
def network(mode: str, num_hosts: int):
  net = Namespaces(num_hosts) if mode == "netns" else Loopback(capped=mode == "capped-loopback")
  try:
    yield net
  finally:
    net.close()


# ----------------------------------------------------------------------------------------------
# The parent: start the job's processes, switch the link rate when process 0 asks for it.


def host_environment(net, port: int, hosts: int, host: int) -> dict:
  """The environment of host ``host``'s process in a job of ``hosts``: where the coordinator listens
  (on host 0) and its place in the job, as ``train.launch`` sets them, and this checkout importable."""
  from train import distributed  # pylint: disable=import-outside-toplevel

  return {**os.environ, distributed.ENV_COORDINATOR: net.coordinator(port), distributed.ENV_NUM_PROCESSES: str(hosts),
          distributed.ENV_PROCESS_ID: str(host), "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}


def setting_order(setting: tuple) -> tuple:
  """Sort key of ``(hosts, rate, ...)`` tuples: by hosts, then link rate, then the rest."""
  hosts, rate, *rest = setting
  return (hosts, rate_bits(rate), *rest)


def run_job(mode: str, hosts: int, per_host: int, methods, workloads, rates, args) -> list[dict]:
  """One JAX job of ``hosts`` processes with ``per_host`` devices each; returns process 0's rows."""
  from train import launch  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as control, network(mode, hosts) as net:
    port = launch.free_port()
    result = pathlib.Path(control) / "rows.json"
    worker_args = ["--worker", "--control", control, "--per-host", str(per_host), "--methods", *methods,
                   "--workloads", *workloads, "--rates", *rates, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--coordinates", str(args.coordinates)]
    processes = []
    for host in range(hosts):
      command = [*net.prefix(host), sys.executable, "-m", "benchmarks.cluster", *worker_args]
      processes.append(subprocess.Popen(command, env=host_environment(net, port, hosts, host),
                                        stdout=subprocess.DEVNULL if host else None))
    deadline, served = time.monotonic() + args.timeout, 0
    try:
      while not result.exists():
        wanted = pathlib.Path(control) / f"rate-{served}"
        if wanted.exists():
          net.set_rate(wanted.read_text())
          (pathlib.Path(control) / f"go-{served}").touch()
          served += 1
        failed = [p.returncode for p in processes if p.poll() not in (None, 0)]
        if failed:
          raise RuntimeError(f"cluster: a host process of the M={hosts} job failed (exit {failed[0]})")
        if time.monotonic() > deadline:
          raise TimeoutError(f"cluster: the M={hosts} job ran past --timeout={args.timeout} s")
        time.sleep(0.05)
      for p in processes:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
      return json.loads(result.read_text())
    finally:
      for p in processes:
        if p.poll() is None:
          p.kill()
          p.wait()


# ----------------------------------------------------------------------------------------------
# The hosts: one process each, with its devices.


def worker(args) -> None:
  from train import distributed  # pylint: disable=import-outside-toplevel

  hosts = int(os.environ["JAX_NUM_PROCESSES"])
  distributed.initialize(num_workers=hosts * args.per_host)  # This host's process gets per_host devices.
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  from benchmarks import cluster_steps  # pylint: disable=import-outside-toplevel
  from signvote_jax import hlo  # pylint: disable=import-outside-toplevel

  control = pathlib.Path(args.control)
  requests = [0]
  # Every process compiles the same programs: process 0 compiles each first into a shared
  # persistent cache and the others load it, rather than M compilers sharing the CPU.
  jax.config.update("jax_compilation_cache_dir", str(control / "compiled"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

  def compiled_everywhere(step, name: str):
    # Process 0 first, the others then from the cache; no process may enter the step's collectives
    # while another still compiles (gloo gives up on a peer after a timeout).
    if jax.process_index() == 0:
      compiled = step.compile()
    multihost_utils.sync_global_devices(f"compiled {name} on process 0")
    if jax.process_index() != 0:
      compiled = step.compile()
    multihost_utils.sync_global_devices(f"compiled {name}")
    return step, compiled

  def network_bytes_per_host(compiled) -> float:
    # A hierarchical host's own sum stays inside it (local), and is not counted.
    network, _ = hlo.bytes_per_device(compiled.as_text(), hosts * args.per_host, hosts)
    return network * args.per_host

  def at_rate(rate: str) -> None:
    """Every process waits here until the parent has set the links to ``rate``."""
    if jax.process_index() == 0:
      pending = control / f"rate-{requests[0]}.tmp"
      pending.write_text(rate)
      pending.rename(control / f"rate-{requests[0]}")  # Whole, never half written, when the parent sees it.
      while not (control / f"go-{requests[0]}").exists():
        time.sleep(0.02)
    requests[0] += 1
    multihost_utils.sync_global_devices(f"rate {requests[0]}")

  rows = []
  for workload in args.workloads:
    multihost_utils.sync_global_devices(f"local {workload}")
    local_step = cluster_steps.local_step(workload, args.batch, args.coordinates, TREE_LEAVES)
    local = timing.median_seconds(local_step, args.steps, warmup=1)
    for method in args.methods:
      step, compiled = compiled_everywhere(cluster_steps.distributed_step(
          workload, method, args.per_host, args.batch, args.coordinates, TREE_LEAVES), f"{workload} {method}")
      sent = network_bytes_per_host(compiled)
      for rate in args.rates:
        at_rate(rate)
        seconds = timing.median_seconds(step, args.steps, warmup=1)
        rows.append({"workload": workload, "method": method, "rate": rate, "seconds": seconds,
                     "local_seconds": local, "communication_seconds": max(0.0, seconds - local),
                     "communication_share": max(0.0, 1 - local / seconds), "network_bytes_per_host": sent,
                     "wire_seconds": 8 * sent / rate_bits(rate)})
      del step, compiled
  if jax.process_index() == 0:
    (control / "rows.tmp").write_text(json.dumps(rows))
    (control / "rows.tmp").rename(control / "rows.json")
  multihost_utils.sync_global_devices("done")


# ----------------------------------------------------------------------------------------------
# Results.


def table(rows, workload):
  mine = [r for r in rows if r["workload"] == workload]
  lines = ["| M hosts | link | method | step ms | local ms | communication ms | wire ms at link rate | "
           "MB sent per host | speed-up over all-reduce |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in sorted(mine, key=lambda r: setting_order((r["hosts"], r["rate"], r["method"]))):
    base = next(b["seconds"] for b in mine if b["hosts"] == r["hosts"] and b["rate"] == r["rate"]
                and b["method"] == "sgd_allreduce")
    lines.append(f"| {r['hosts']} | {r['rate']} | {r['method']} | {1e3 * r['seconds']:.0f} | "
                 f"{1e3 * r['local_seconds']:.0f} | {1e3 * r['communication_seconds']:.0f} | "
                 f"{1e3 * r['wire_seconds']:.1f} | {r['network_bytes_per_host'] / 1e6:.2f} | {base / r['seconds']:.1f}x |")
  return "\n".join(lines)


def rate_bits(rate: str) -> float:
  units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
  for unit, scale in units.items():
    if rate.lower().endswith(unit):
      return float(rate[: -len(unit)]) * scale
  raise ValueError(f"a rate is a number and kbit, mbit or gbit (tc's units), like 1gbit; got {rate!r}")


def plot(rows):

  rates = sorted({r["rate"] for r in rows}, key=rate_bits)
  workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
  fig, axs = results.figure(len(workloads), len(rates), (5.5 * len(rates), 3.6 * len(workloads)))
  for ax_row, workload in zip(axs, workloads):
    for ax, rate in zip(ax_row, rates):
      mine = [r for r in rows if r["workload"] == workload and r["rate"] == rate]
      labels = [f"M={r['hosts']}\n{r['method'].replace('signum_', '').replace('sgd_', 'sgd ')}" for r in mine]
      local = [1e3 * min(r["local_seconds"], r["seconds"]) for r in mine]
      comm = [1e3 * r["communication_seconds"] for r in mine]
      ax.bar(range(len(mine)), local, label="compute")
      ax.bar(range(len(mine)), comm, bottom=local, label="communication")
      ax.scatter(range(len(mine)), [a + 1e3 * r["wire_seconds"] for a, r in zip(local, mine)], marker="_",
                 color="k", s=200, zorder=3, label="compute + wire time")
      ax.set_xticks(range(len(mine)), labels, fontsize=6)
      ax.set(title=f"{workload}, {rate} links", ylabel="ms per step")
      ax.legend(fontsize=8)
  return fig


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hosts", type=int, nargs="+", default=[2, 4, 8], help="hosts M, one process each")
  parser.add_argument("--rates", nargs="+", default=["1gbit", "10gbit"], help="link rates, in tc's units")
  parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
  parser.add_argument("--methods", nargs="+", choices=FLAT_METHODS + (HIERARCHICAL,), default=None)
  parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement (median)")
  parser.add_argument("--batch", type=int, default=4, help="images per host in train_step (a multiple of 2)")
  parser.add_argument("--coordinates", type=int, default=TREE_COORDINATES, help="size of optimizer_step's tree")
  parser.add_argument("--network", choices=NETWORK_MODES, default="auto")
  parser.add_argument("--timeout", type=float, default=600, help="seconds before a job's processes are stopped")
  parser.add_argument("--quick", action="store_true", help="M = 2, 1gbit, optimizer_step on a small tree")
  parser.add_argument("--out", default=None)
  # Internal: a worker process of one job.
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--control", help=argparse.SUPPRESS)
  parser.add_argument("--per-host", type=int, default=1, help=argparse.SUPPRESS)  # Devices per host.
  args = parser.parse_args(argv)
  if args.worker:
    try:
      return worker(args)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      # At exit JAX would wait for the other processes of the job; fail now so the parent sees it.
      os._exit(1)  # pylint: disable=protected-access
  for rate in args.rates:
    try:
      rate_bits(rate)
    except ValueError as e:
      parser.error(str(e))
  if args.batch % DEVICES_PER_HOST:
    parser.error(f"--batch={args.batch} must be a multiple of {DEVICES_PER_HOST}: a hierarchical host splits it over its devices")
  if args.quick:
    args.hosts, args.rates, args.steps = [2], args.rates[:1], 2
    args.workloads, args.coordinates = ["optimizer_step"], 1_000_000

  mode = choose_network(args.network, "benchmarks.cluster", argv)
  if mode is None:
    return None
  exit_cleanly_on_signals()

  rows = []
  for m in args.hosts:
    layouts = [(1, [x for x in (args.methods or FLAT_METHODS) if x != HIERARCHICAL])]
    if args.methods is None or HIERARCHICAL in args.methods:
      layouts.append((DEVICES_PER_HOST, [HIERARCHICAL]))
    for per_host, methods in layouts:
      if methods:
        for r in run_job(mode, m, per_host, methods, args.workloads, args.rates, args):
          rows.append({**r, "hosts": m, "devices_per_host": per_host, "workers": m * per_host})
        print(f"M={m} {', '.join(methods)} done", flush=True)

  meta = {"network": mode, "rates": args.rates, "steps": args.steps, "batch_per_host": args.batch,
          "tree": f"{args.coordinates} coordinates in {TREE_LEAVES} leaves"}
  markdown = f"Network: **{mode}** ({HOW[mode]}).\n\n" + "\n\n".join(
      f"### {w}\n\n{table(rows, w)}" for w in WORKLOADS if any(r["workload"] == w for r in rows))
  return results.write("cluster", meta, rows, markdown, plot, args.out or results.RESULTS)


if __name__ == "__main__":
  main()
