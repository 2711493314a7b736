"""Starting JAX for a training job: simulated CPU devices and the multi-process runtime.

Both must be set before JAX creates its backends, so ``python -m train`` calls :func:`initialize`
first thing. Library code and in-process callers (the tests) never call it.
"""

import os

import jax

# The environment the local launcher (``python -m train.launch``) sets for each process; on a real
# cluster, flags or JAX's own cluster detection (SLURM, Open MPI, ...) provide the same.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None


def initialize(*, num_workers: int, coordinator_address=None, num_processes=None, process_id=None) -> None:
  """Joins the job's processes (if there are several) and gives this one its share of CPU devices.

  On the CPU each worker is a simulated device, so a process gets ``num_workers / num_processes``
  of them; on a GPU host the setting is unused and each worker is a real GPU. Collectives between
  CPU processes go over gloo (TCP).
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
  num_processes = num_processes or _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  jax.config.update("jax_num_cpu_devices", max(1, num_workers // (num_processes or 1)))
  if coordinator_address or (num_processes or 1) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
