"""Starting JAX for a training job: simulated CPU devices and the multi-process runtime.

Both must be set before JAX creates its backends, so ``python -m train`` calls :func:`initialize`
first thing. Library code and in-process callers (the tests) never call it.
"""

import os
import socket
import sys
import threading
import time
import traceback
from typing import NamedTuple, NoReturn

import jax
from jax.experimental import multihost_utils

from train import desk as desk_lib
from train import guard
from train.errors import first_line

# The environment the local launcher (``python -m train.launch``) sets for each process; on a real
# cluster, flags or JAX's own cluster detection (SLURM, Open MPI, ...) provide the same.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


class Place(NamedTuple):
  """A process's place in a job: where process 0 listens, how many processes, which one this is."""

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  source: str  # Who said so: "flags", "environment", a cluster JAX detected ("slurm", "ompi", ...), or "none".


def detected_cluster() -> Place | None:
  """The place JAX's own cluster detection finds in the environment (SLURM, Open MPI, Kubernetes,
  ...; what ``jax.distributed.initialize()`` with no arguments would use), or None outside one.

  Read from JAX's detector itself, so that the trainer agrees with JAX on every cluster JAX knows,
  including ``JAX_COORDINATOR_PORT``; it is not public API, so a JAX without it is no cluster.
  """
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel

    found = [env for env in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
             if not env.opt_in_only_method and env.is_env_present()]
    if not found:
      return None
    coordinator_address, num_processes, process_id, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, None)
  except (ImportError, AttributeError, TypeError, KeyError, ValueError, RuntimeError):
    return None
  return Place(coordinator_address, num_processes, process_id, found[0].name)


def place_in_job(coordinator_address=None, num_processes=None, process_id=None) -> Place:
  """This process's place: from the flags, else the launcher's environment, else JAX's cluster detection."""
  if coordinator_address or num_processes or process_id is not None:
    return Place(coordinator_address, num_processes, process_id, "flags")
  environment = Place(os.environ.get(ENV_COORDINATOR), _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID), "environment")
  if environment.coordinator_address or environment.num_processes:
    return environment
  cluster = detected_cluster()
  if cluster is None or (cluster.num_processes or 1) < 2:  # A cluster job of one task is one process.
    return Place(None, None, None, "none")
  return cluster


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None


def to_host(tree):
  """A tree of global arrays as numpy, gathered from every process (all of them must call it)."""
  return multihost_utils.process_allgather(tree, tiled=True)


class JoinError(RuntimeError):
  """This process cannot be part of the job: its place in it is wrong, or the others did not join in time."""


def end_process(line: str | None, status: int = 1) -> NoReturn:
  """Says ``line`` and ends this process now, skipping JAX's shutdown (which would wait for a lost
  process, then abort with a stack dump). Once per process: a second caller, on another thread,
  waits for the first one's exit."""
  if not _ending.acquire(blocking=False):
    threading.Event().wait()
  if line:
    print(line, file=sys.stderr, flush=True)
  guard.said()
  sys.stdout.flush()
  guard.release(ending=True)
  os._exit(status)  # pylint: disable=protected-access


_ending = threading.Lock()


class Job:
  """This process's part in a job of one or more processes, and how it leaves it.

  In a job of several, the roll call (:mod:`train.desk`) ends this process in one line when
  another is lost, and :meth:`leave` and :meth:`fail` tell the others how this one ended.
  """

  def __init__(self, process_id: int = 0, num_processes: int = 1, heartbeat_timeout: float = 30):
    self.process_id, self.num_processes, self.heartbeat_timeout = process_id, num_processes, heartbeat_timeout
    self.roll_call: desk_lib.Desk | desk_lib.Member | None = None

  def lost(self, process: int, how: str) -> None:
    """Ends this process: ``process`` of the job is lost (called by the roll call's thread)."""
    end_process(f"error: process {self.process_id} of {self.num_processes} lost process {process}: {how}; rerun the "
                "job to resume from its last checkpoint.")

  def leave(self) -> None:
    """This process ends its run (trained, or stopped by a notice with the others)."""
    if self.roll_call is not None:
      self.roll_call.leave("done")

  def fail(self, line: str | None) -> NoReturn:
    """This process ends with an error: ``line`` (None: the traceback being handled, a defect of ours)."""
    if line is None:
      traceback.print_exc()
    if self.num_processes == 1:
      sys.exit(line or 1)
    if self.roll_call is not None:
      self.roll_call.leave("failed")
    end_process(line)

  def lost_a_peer(self, error: BaseException) -> NoReturn:
    """A collective failed because a process is gone: the roll call names it, else JAX's error is the line."""
    if self.roll_call is not None:
      time.sleep(self.heartbeat_timeout + 2)  # The roll call ends this process with the name well before.
    end_process(f"error: {lost_peer_message(error)}")


def backstop(heartbeat_timeout: int) -> int:
  """JAX's own heartbeat timeout, behind the roll call's: it aborts with a stack dump, so it must come last."""
  return 2 * heartbeat_timeout + 10


def initialize(*, num_workers: int, coordinator_address=None, num_processes=None, process_id=None,
               join_timeout: int = 300, heartbeat_timeout: int = 30) -> Job:
  """Joins the job's processes (if there are several) and gives this one its share of CPU devices.

  On the CPU each worker is a simulated device, so a process gets ``num_workers / num_processes``
  of them; on a GPU host the setting is unused and each worker is a real GPU. Collectives between
  CPU processes go over gloo (TCP). A process says that it waits for its peers, and gives up after
  ``join_timeout`` seconds with a :class:`JoinError`. Once joined, a process that is lost (its
  connection to process 0 closed, or silent for ``heartbeat_timeout`` seconds) ends the job: each
  other process says which in one line (:mod:`train.desk`). Its place in the job comes from the
  flags, else the launcher's environment, else JAX's cluster detection (:func:`place_in_job`).
  """
  coordinator_address, num_processes, process_id, source = place_in_job(coordinator_address, num_processes, process_id)
  jax.config.update("jax_num_cpu_devices", max(1, num_workers // (num_processes or 1)))
  if not coordinator_address and (num_processes or 1) == 1:
    return Job()
  host, port = check_job(coordinator_address, num_processes, process_id)
  job = Job(process_id, num_processes, heartbeat_timeout)
  guard.install(process_id, num_processes)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  found = f", detected from {source}" if source not in ("flags", "environment") else ""
  print(f"process {process_id} of {num_processes}: joining the job at {coordinator_address}{found} "
        f"(waiting up to {join_timeout} s for the other processes)", file=sys.stderr, flush=True)
  giving_up = (f"process {process_id} of {num_processes} could not join the job at {coordinator_address} within "
               f"{join_timeout} s; start every process with the same --coordinator_address and "
               "--num_processes, or raise --join_timeout.")
  joined = threading.Event()

  def give_up():
    # JAX's own deadline aborts the process from C++ with a stack dump; this one says it in a line.
    if not joined.wait(join_timeout):
      end_process(f"error: {giving_up}")  # The main thread is blocked inside JAX.

  if process_id == 0:
    job.roll_call = desk_lib.Desk.open(port, num_processes, heartbeat_timeout, job.lost)
  elif (running := desk_lib.running_job(host, port)) is not None:
    raise JoinError(f"the job at {coordinator_address} is already running with all its {running} processes; a "
                    "process cannot join a running job (JAX's coordinator would take it for a restart and end the "
                    "job): give this job its own --coordinator_address port.")
  threading.Thread(target=give_up, daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=join_timeout + 60,
                               heartbeat_timeout_seconds=backstop(heartbeat_timeout))
  except Exception as e:  # pylint: disable=broad-exception-caught  (JAX raises its runtime's errors)
    raise JoinError(f"process {process_id} of {num_processes} could not join the job at {coordinator_address}: "
                    f"{first_line(e)[:200]}; start every process with the same --coordinator_address and --num_processes.") from e
  finally:
    joined.set()
  if process_id == 0 and job.roll_call is not None:
    job.roll_call.running()
  elif process_id != 0:
    job.roll_call = desk_lib.Member.join(host, port, process_id, heartbeat_timeout, job.lost)
  return job


def check_job(coordinator_address, num_processes, process_id) -> tuple[str, int]:
  """What a process can tell is wrong with its place in a job before it joins, as a JoinError; so
  that it never reaches the coordinator of a job it does not belong to. Returns the coordinator's
  host and port."""
  if not num_processes or num_processes < 1:
    raise JoinError(f"--num_processes={num_processes} must be a positive number of processes.")
  if process_id is None or not 0 <= process_id < num_processes:
    raise JoinError(f"--process_id={process_id} must be in [0, {num_processes}) for a job of --num_processes="
                    f"{num_processes}.")
  if not coordinator_address:
    raise JoinError(f"a job of {num_processes} processes needs --coordinator_address=HOST:PORT: process 0's host "
                    "and a free port, the same for every process.")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise JoinError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT, the address of process 0.")
  try:
    socket.getaddrinfo(host.strip("[]"), int(port))
  except (socket.gaierror, UnicodeError) as e:
    raise JoinError(f"cannot resolve the coordinator's host {host!r} ({e}); pass --coordinator_address=HOST:PORT "
                    "with a host this machine can reach.") from e
  if process_id == 0:  # It starts the coordinator: the port must be free, or another job's would be joined.
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # A port left in TIME_WAIT is free.
      try:
        probe.bind(("", int(port)))
      except OSError as e:
        raise JoinError(f"the coordinator's port {port} is in use on this host ({e.strerror}), by another job or "
                        "program; pass --coordinator_address with a free port (every process the same).") from e
  return host, int(port)


def is_leader() -> bool:
  """Whether this is process 0, the one that writes the workdir's files and speaks for the job."""
  return jax.process_index() == 0


# What JAX's runtime says when a collective or the coordinator loses a process of the job: gloo's
# socket errors, gRPC's UNAVAILABLE. Only the runtime's errors are matched (an out-of-memory is not one).
_LOST_PEER_SIGNS = ("gloo", "connection reset", "connection closed", "socket closed", "unavailable", "broken pipe")


def lost_a_peer(error: BaseException) -> bool:
  """Whether ``error`` is JAX's runtime reporting that another process of the job is gone (itself,
  or as the cause of another error: Orbax wraps a failed collective of a save in a ValueError)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    text = str(error).lower()
    if (jax.process_count() > 1 and (isinstance(error, jax.errors.JaxRuntimeError) or "gloo" in text)
        and any(sign in text for sign in _LOST_PEER_SIGNS)):
      return True
    error = error.__cause__ or error.__context__
  return False


def lost_peer_message(error: BaseException) -> str:
  """One line for a survivor: what the runtime saw, and where to look for why."""
  return (f"process {jax.process_index()} of {jax.process_count()} lost contact with another process of the job "
          f"({first_line(error)[:160]}); that process's own output (or the launcher's last line) says why. Rerun the job "
          "to resume from its last checkpoint.")
