"""Orbax checkpoints of the train state, each stored with the config that made it and a checksum.

A restore verifies the checksum and that every restored leaf is finite. A damaged checkpoint
(bytes flipped, a file truncated or missing) is reported in one line naming its step, and the run
resumes from the newest intact one; where none is intact it stops with one line naming the folder.
"""

import contextlib
import hashlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from train import config_checks, distributed, elastic, errors
from train.errors import ConfigError, StorageError


def _digest(name: str, array: np.ndarray) -> int:
  array = np.ascontiguousarray(array)
  digest = hashlib.sha256(f"{name}:{array.dtype}:{array.shape};".encode())
  digest.update(array.tobytes())
  return int.from_bytes(digest.digest(), "big")


def _sum_over_processes(value: int, bits: int) -> int:
  """``value`` summed over the job's processes modulo 2**bits: ``bits / 8`` bytes from each."""
  if jax.process_count() == 1:
    return value
  parts = multihost_utils.process_allgather(np.frombuffer(value.to_bytes(bits // 8, "big"), np.uint8))
  return sum(int.from_bytes(np.asarray(part, np.uint8).tobytes(), "big") for part in parts) % 2**bits


def fingerprint(state, stacked) -> str:
  """A checksum of a train state, computed where each part of it lives, without gathering it.

  The state is cut into units: one worker's row of each per-worker leaf (``stacked``), and each
  other (replicated) leaf whole. The process holding a unit's first replica hashes it with SHA-256
  (with its path, row, dtype and shape), and the digests are summed modulo 2**256 over the units
  and then the processes: a save sends 32 bytes per process, and the checksum does not depend on
  how the state is laid out over devices and processes (an elastic resume reads it replicated).
  It detects damage (a flipped bit, a truncated or swapped file), not forgery.
  """
  total = 0
  for (path, leaf), is_stacked in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(stacked)):
    name = jax.tree_util.keystr(path)
    for shard in leaf.addressable_shards:
      if shard.replica_id != 0:
        continue
      data = np.asarray(shard.data)
      if is_stacked:
        first = shard.index[0].start or 0
        total += sum(_digest(f"{name}[{first + i}]", row) for i, row in enumerate(data))
      else:
        total += _digest(name, data)
  return f"{_sum_over_processes(total % 2**256, 256):064x}"


def whole_state_sha256(host_state) -> str:
  """The checksum of checkpoints written before :func:`fingerprint` (their ``sha256``): SHA-256 of
  every leaf of the gathered state, in tree order."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(host_state):
    array = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _nonfinite_leaf(state, may_be_nan) -> str | None:
  """The path of the first floating leaf of ``state`` holding a NaN or an infinity, if any (leaves
  ``may_be_nan`` marks left out): each process checks its own shards, and they agree on the first."""
  leaves = jax.tree_util.tree_leaves_with_path(state)

  def nonfinite(leaf, allowed):
    if allowed or not jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
      return False
    return any(not np.all(np.isfinite(np.asarray(shard.data))) for shard in leaf.addressable_shards)

  first = next((i for i, ((_, leaf), allowed) in enumerate(zip(leaves, jax.tree.leaves(may_be_nan)))
                if nonfinite(leaf, allowed)), len(leaves))
  if jax.process_count() > 1:
    first = int(np.min(multihost_utils.process_allgather(np.int32(first))))
  return jax.tree_util.keystr(leaves[first][0]) if first < len(leaves) else None


def _say(line: str) -> None:
  """One line on stderr, from process 0 only (every process restores the same checkpoints)."""
  if distributed.is_leader():
    print(line, file=sys.stderr, flush=True)


class Checkpointer:
  """Saves ``TrainState`` every few steps; restores the newest intact one if the config matches."""

  def __init__(self, workdir: str, config):
    self._config = config
    self._directory = epath.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoints_to_keep, create=True,
                                           async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=("state", "config", "integrity"))
    self._writing = None  # The step of the save last started (Orbax finishes it in the background).

  def restore_or(self, state, *, averaged=None, may_be_nan=None):
    """The newest intact checkpoint's state (shaped and sharded like ``state``), or ``state`` if none.

    Two trees of booleans shaped like ``state`` say what the trainer knows of its leaves:
    ``averaged``, the per-worker leaves that a resume on another worker count averages (batch
    statistics) rather than hands from worker to worker (momentum; see :mod:`train.elastic`), and
    ``may_be_nan``, those where NaN means "not measured" rather than damage (the vote's statistics).
    """
    nowhere = jax.tree.map(lambda _: False, state)
    averaged, may_be_nan = averaged or nowhere, may_be_nan or nowhere
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return state
    for step in steps:
      problem, restored = self._restore(step, state, averaged, may_be_nan)
      if problem is None:
        return restored
      _say(f"warning: the checkpoint of step {step} in {self._directory} is damaged ({problem}); "
           "it is removed and the run resumes from the one before")
      self._manager.delete(step)
    raise ConfigError(
        f"no intact checkpoint in {self._directory} (damaged: steps {', '.join(map(str, steps))}, now "
        "removed); rerun to start from step 0, or use another workdir.")

  def _restore(self, step: int, state, averaged, may_be_nan):
    """``(None, state)`` for an intact checkpoint, else ``(what is wrong, None)``."""
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # pylint: disable=broad-exception-caught  (any unreadable file)
      # The state may be intact: its checksum decides. The run's config was checked against the workdir's record.
      _say(f"warning: the config stored with the checkpoint of step {step} is unreadable ({type(e).__name__}); "
           "its state is checked without it")
      saved = None
    if saved is not None:
      config_checks.check_resume(saved, self._config)  # Another run's checkpoint is an error, not damage.
    try:
      shapes = elastic.saved_shapes(self._directory / str(step) / "state")
      stacked = per_worker_leaves(state)
      # Another worker count (elastic resume) shows in the shapes of the per-worker leaves.
      saved_workers = {shapes[elastic.canonical(path)][0] for path, is_stacked in jax.tree_util.tree_leaves_with_path(stacked)
                       if is_stacked and elastic.canonical(path) in shapes}
      resized = bool(saved_workers - {self._config.num_workers})
      if resized:  # Read the saved arrays whole (replicated), then remap them.
        replicated = jax.sharding.NamedSharding(jax.tree.leaves(state)[0].sharding.mesh, jax.sharding.PartitionSpec())
        target = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jax.ShapeDtypeStruct(shapes[elastic.canonical(path)], leaf.dtype, sharding=replicated), state)
      else:
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      items = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), integrity=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-exception-caught
      return f"its state is unreadable: {type(e).__name__}", None
    integrity = items["integrity"] if isinstance(items["integrity"], dict) else {}
    if "checksum" in integrity:
      intact = integrity["checksum"] == fingerprint(items["state"], stacked)
    else:  # Written by an earlier version of the trainer.
      intact = integrity.get("sha256") == whole_state_sha256(distributed.to_host(items["state"]))
    if not intact:
      return "its checksum does not match its state", None
    leaf = None if config_checks.is_fault_experiment(self._config) else _nonfinite_leaf(items["state"], may_be_nan)
    if leaf is not None:
      return f"{leaf} is not finite", None
    if not resized:
      return None, items["state"]
    # Elastic resume is rare (a host lost or added): the whole state is gathered to remap it.
    remapped = elastic.remap_workers(distributed.to_host(items["state"]), distributed.to_host(state), stacked, averaged)
    _say(f"resuming the checkpoint of step {step}, saved by {min(saved_workers)} workers, on "
         f"{self._config.num_workers}: new worker i takes the momentum of worker i mod {min(saved_workers)}, "
         "batch statistics are averaged")
    return None, jax.tree.map(
        lambda value, leaf: jax.make_array_from_callback(value.shape, leaf.sharding, lambda index: value[index]),
        remapped, state)

  def save(self, step: int, state) -> None:
    """Starts writing ``state`` as the checkpoint of ``step`` (Orbax writes it in the background)."""
    checksum = fingerprint(state, per_worker_leaves(state))
    with self._storage(self._writing):  # A failure of the previous save, in the background, shows here.
      self._manager.wait_until_finished()
    self._writing = step
    with self._storage(step):
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          config=ocp.args.JsonSave(config_checks.config_to_json(self._config)),
          integrity=ocp.args.JsonSave({"step": step, "checksum": checksum})))

  def close(self) -> None:
    """Waits for saves still being written (also when training stopped on an error)."""
    with self._storage(self._writing):
      self._manager.wait_until_finished()
      self._manager.close()

  @contextlib.contextmanager
  def _storage(self, step):
    """A failed save of ``step`` as one StorageError line (Orbax raises its own and its threads' errors)."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-exception-caught
      if distributed.lost_a_peer(e):
        raise  # Not the storage: a process of the job is gone (train/desk.py names it).
      raise StorageError(
          f"cannot save the checkpoint of step {step} in {self._directory}: {errors.reason(e)}; the checkpoints before "
          "it are intact: make room and rerun the same command to resume from the newest of them.") from e

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc_info):
    try:
      self.close()
    except StorageError:
      if exc_type is None:
        raise  # Else the error that ended the run is the one to report.


def per_worker_leaves(state):
  """True for each leaf stacked over the workers (sharded along its first axis), as the state's shardings say."""
  return jax.tree.map(lambda leaf: len(leaf.sharding.spec) > 0 and leaf.sharding.spec[0] is not None, state)
