"""Emulated networks for the cluster benchmarks: each host behind a link capped at a given rate.

Each host is a network namespace with one veth link to a bridge; ``tc`` (token bucket) caps the
link at the given rate in each direction, so a host sends and receives at most that much, as with
a real NIC (``netns``, needs root). Without the rights for namespaces it falls back to one
unprivileged user and network namespace whose loopback is capped (``capped-loopback``: all links
then share one capped medium, pessimistic); without even that, to uncapped loopback. All traffic
stays on this machine. Used by :mod:`benchmarks.cluster` and :mod:`benchmarks.time_to_accuracy`.
"""

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys

SUBNET = "10.231.0"  # The hosts' addresses: SUBNET.1, SUBNET.2, ...


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
def emulated(mode: str, num_hosts: int):
  """The network of ``mode`` for ``num_hosts`` hosts, taken down on exit."""
  net = Namespaces(num_hosts) if mode == "netns" else Loopback(capped=mode == "capped-loopback")
  try:
    yield net
  finally:
    net.close()


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


def rate_bits(rate: str) -> float:
  units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
  for unit, scale in units.items():
    if rate.lower().endswith(unit):
      return float(rate[: -len(unit)]) * scale
  raise ValueError(f"a rate is a number and kbit, mbit or gbit (tc's units), like 1gbit; got {rate!r}")
