"""Starting JAX for a training job: simulated CPU devices and the multi-process runtime.

Both must be set before JAX creates its backends, so ``python -m train`` calls :func:`initialize`
first thing. Library code and in-process callers (the tests) never call it.
"""

import os
import sys
import threading

import jax
from jax.experimental import multihost_utils

# The environment the local launcher (``python -m train.launch``) sets for each process; on a real
# cluster, flags or JAX's own cluster detection (SLURM, Open MPI, ...) provide the same.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None


def to_host(tree):
  """A tree of global arrays as numpy, gathered from every process (all of them must call it)."""
  return multihost_utils.process_allgather(tree, tiled=True)


class JoinError(RuntimeError):
  """The job's processes did not all join in time."""


def initialize(*, num_workers: int, coordinator_address=None, num_processes=None, process_id=None,
               join_timeout: int = 300, heartbeat_timeout: int = 30) -> None:
  """Joins the job's processes (if there are several) and gives this one its share of CPU devices.

  On the CPU each worker is a simulated device, so a process gets ``num_workers / num_processes``
  of them; on a GPU host the setting is unused and each worker is a real GPU. Collectives between
  CPU processes go over gloo (TCP). A process says that it waits for its peers, and gives up after
  ``join_timeout`` seconds with a :class:`JoinError`; once joined, a process that stops answering
  for ``heartbeat_timeout`` seconds fails the whole job.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
  num_processes = num_processes or _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  jax.config.update("jax_num_cpu_devices", max(1, num_workers // (num_processes or 1)))
  if coordinator_address or (num_processes or 1) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(f"process {process_id} of {num_processes}: joining the job at {coordinator_address} "
          f"(waiting up to {join_timeout} s for the other processes)", file=sys.stderr, flush=True)
    giving_up = (f"process {process_id} of {num_processes} could not join the job at {coordinator_address} within "
                 f"{join_timeout} s; start every process with the same --coordinator_address and "
                 "--num_processes, or raise --join_timeout.")
    joined = threading.Event()

    def give_up():
      # JAX's own deadline aborts the process from C++ with a stack dump; this one says it in a line.
      if not joined.wait(join_timeout):
        print(f"error: {giving_up}", file=sys.stderr, flush=True)
        os._exit(1)  # pylint: disable=protected-access  (the main thread is blocked inside JAX)

    threading.Thread(target=give_up, daemon=True).start()
    try:
      jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                 initialization_timeout=join_timeout + 60, heartbeat_timeout_seconds=heartbeat_timeout)
    except Exception as e:  # pylint: disable=broad-exception-caught  (JAX raises its runtime's errors)
      raise JoinError(f"{giving_up[:-1]} ({type(e).__name__}: {str(e).strip()[:200]}).") from e
    finally:
      joined.set()
