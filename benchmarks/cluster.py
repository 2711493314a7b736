"""Step time on an emulated cluster: M processes over gloo, each host behind a capped network link.

    python -m benchmarks.cluster            # M = 2, 4, 8 at 1 and 10 Gbit/s (as root: network namespaces)
    python -m benchmarks.cluster --quick    # M = 2, one rate, the small workloads (the smoke test)

Each host sits behind a link capped at the given rate in each direction (``benchmarks/network.py``:
a network namespace per host as root, else a capped shared loopback, else uncapped loopback). The M
processes of one JAX job (``jax.distributed`` over gloo, one worker each) run there, started like
``train.launch``. The result says which network it had (``network``).

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
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback

from benchmarks import network, results, timing

WORKLOADS = ("optimizer_step", "train_step")
FLAT_METHODS = ("sgd_allreduce", "signum_allgather", "signum_alltoall")
HIERARCHICAL = "signum_hierarchical"
DEVICES_PER_HOST = 2  # For the hierarchical layout.
TREE_COORDINATES, TREE_LEAVES = 25_600_000, 20


# ----------------------------------------------------------------------------------------------
# The parent: start the job's processes, switch the link rate when process 0 asks for it.


def run_job(mode: str, hosts: int, per_host: int, methods, workloads, rates, args) -> list[dict]:
  """One JAX job of ``hosts`` processes with ``per_host`` devices each; returns process 0's rows."""
  from train import launch  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as control, network.emulated(mode, hosts) as net:
    port = launch.free_port()
    result = pathlib.Path(control) / "rows.json"
    worker_args = ["--worker", "--control", control, "--per-host", str(per_host), "--methods", *methods,
                   "--workloads", *workloads, "--rates", *rates, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--coordinates", str(args.coordinates)]
    processes = []
    for host in range(hosts):
      command = [*net.prefix(host), sys.executable, "-m", "benchmarks.cluster", *worker_args]
      processes.append(subprocess.Popen(command, env=network.host_environment(net, port, hosts, host),
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
                     "wire_seconds": 8 * sent / network.rate_bits(rate)})
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
  for r in sorted(mine, key=lambda r: network.setting_order((r["hosts"], r["rate"], r["method"]))):
    base = next(b["seconds"] for b in mine if b["hosts"] == r["hosts"] and b["rate"] == r["rate"]
                and b["method"] == "sgd_allreduce")
    lines.append(f"| {r['hosts']} | {r['rate']} | {r['method']} | {1e3 * r['seconds']:.0f} | "
                 f"{1e3 * r['local_seconds']:.0f} | {1e3 * r['communication_seconds']:.0f} | "
                 f"{1e3 * r['wire_seconds']:.1f} | {r['network_bytes_per_host'] / 1e6:.2f} | {base / r['seconds']:.1f}x |")
  return "\n".join(lines)


def plot(rows):

  rates = sorted({r["rate"] for r in rows}, key=network.rate_bits)
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
  parser.add_argument("--network", choices=network.NETWORK_MODES, default="auto")
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
      network.rate_bits(rate)
    except ValueError as e:
      parser.error(str(e))
  if args.batch % DEVICES_PER_HOST:
    parser.error(f"--batch={args.batch} must be a multiple of {DEVICES_PER_HOST}: a hierarchical host splits it over its devices")
  if args.quick:
    args.hosts, args.rates, args.steps = [2], args.rates[:1], 2
    args.workloads, args.coordinates = ["optimizer_step"], 1_000_000

  mode = network.choose_network(args.network, "benchmarks.cluster", argv)
  if mode is None:
    return None
  network.exit_cleanly_on_signals()

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
  markdown = f"Network: **{mode}** ({network.HOW[mode]}).\n\n" + "\n\n".join(
      f"### {w}\n\n{table(rows, w)}" for w in WORKLOADS if any(r["workload"] == w for r in rows))
  return results.write("cluster", meta, rows, markdown, plot, args.out or results.RESULTS)


if __name__ == "__main__":
  main()
