"""Orbax checkpoints of the train state, each stored with the config that made it and a checksum.

A restore verifies the checksum and that every restored leaf is finite. A damaged checkpoint
(bytes flipped, a file truncated or missing) is reported in one line naming its step, and the run
resumes from the newest intact one; where none is intact it stops with one line naming the folder.
"""

import hashlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

import signvote_jax as sv
from train import config_checks, distributed
from train.errors import ConfigError


def fingerprint(host_state) -> str:
  """SHA-256 of every leaf of a numpy tree (path, dtype, shape and bytes, in tree order)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(host_state):
    array = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


# The vote's statistics: NaN where nothing was measured (no voters to compare, a worker that
# abstained everywhere), so a NaN there is not damage.
_STATISTICS = frozenset(sv.MajorityVoteState._fields) - {"count", "nonfinite"}


def _nonfinite_leaf(host_state) -> str | None:
  """The path of the first floating leaf of a numpy tree holding a NaN or an infinity, if any
  (the vote's statistics left out)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(host_state):
    if getattr(path[-1], "name", None) in _STATISTICS:
      continue
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating) and not np.all(np.isfinite(leaf)):
      return jax.tree_util.keystr(path)
  return None


def _say(line: str) -> None:
  """One line on stderr, from process 0 only (every process restores the same checkpoints)."""
  if jax.process_index() == 0:
    print(line, file=sys.stderr, flush=True)


class Checkpointer:
  """Saves ``TrainState`` every few steps; restores the newest intact one if the config matches."""

  def __init__(self, workdir: str, config):
    self._config = config
    self._directory = epath.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoints_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=("state", "config", "integrity"))

  def restore_or(self, state):
    """The newest intact checkpoint's state (shaped and sharded like ``state``), or ``state`` if none."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return state
    for step in steps:
      problem, restored = self._restore(step, state)
      if problem is None:
        return restored
      _say(f"warning: the checkpoint of step {step} in {self._directory} is damaged ({problem}); "
           "it is removed and the run resumes from the one before")
      self._manager.delete(step)
    raise ConfigError(
        f"no intact checkpoint in {self._directory} (damaged: steps {', '.join(map(str, steps))}, now "
        "removed); rerun to start from step 0, or use another workdir.")

  def _restore(self, step: int, state):
    """``(None, state)`` for an intact checkpoint, else ``(what is wrong, None)``."""
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # pylint: disable=broad-exception-caught  (any unreadable file: damaged)
      return f"its config is unreadable: {type(e).__name__}", None
    config_checks.check_resume(saved, self._config)  # Another run's checkpoint is an error, not damage.
    elastic = any(saved.get(field) != self._config[field] for field in ("num_workers", "workers_per_host"))
    try:
      if elastic:  # Another worker count: read the saved arrays whole (replicated), then remap them.
        shapes = saved_shapes(self._directory / str(step) / "state")
        replicated = jax.sharding.NamedSharding(jax.tree.leaves(state)[0].sharding.mesh, jax.sharding.PartitionSpec())
        target = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jax.ShapeDtypeStruct(shapes[_canonical(path)], leaf.dtype, sharding=replicated), state)
      else:
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
      items = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), integrity=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-exception-caught
      return f"its state is unreadable: {type(e).__name__}", None
    host_state = distributed.to_host(items["state"])
    if items["integrity"].get("sha256") != fingerprint(host_state):
      return "its checksum does not match its state", None
    leaf = None if self._config.faults.kind else _nonfinite_leaf(host_state)  # A fault run may diverge.
    if leaf is not None:
      return f"{leaf} is not finite", None
    if not elastic:
      return None, items["state"]
    stacked = jax.tree.map(lambda leaf: len(leaf.sharding.spec) > 0 and leaf.sharding.spec[0] is not None, state)
    remapped = remap_workers(host_state, distributed.to_host(state), stacked)
    _say(f"resuming the checkpoint of step {step}, saved by {saved['num_workers']} workers, on "
         f"{self._config.num_workers}: new worker i takes the momentum of worker i mod {saved['num_workers']}, "
         "batch statistics are averaged")
    return None, jax.tree.map(
        lambda value, leaf: jax.make_array_from_callback(value.shape, leaf.sharding, lambda index: value[index]),
        remapped, state)

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_checks.config_to_json(self._config)),
        integrity=ocp.args.JsonSave({"step": step, "sha256": fingerprint(distributed.to_host(state))})))

  def close(self) -> None:
    """Waits for saves still being written (also when training stopped on an error)."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


# Elastic resume: a checkpoint of M workers on M' workers.


def _canonical(path) -> str:
  """A leaf's path as names alone, the same for a train state and the checkpoint's metadata tree."""
  names = []
  for entry in path:
    for attribute in ("name", "key", "idx"):
      if hasattr(entry, attribute):
        names.append(str(getattr(entry, attribute)))
        break
  return "/".join(names)


def saved_shapes(state_directory) -> dict:
  """Each saved leaf's shape, by :func:`_canonical` path."""
  metadata = ocp.PyTreeCheckpointer().metadata(state_directory).item_metadata.tree
  return {_canonical(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(metadata)}


def remap_workers(saved, fresh, stacked):
  """The saved state of M workers as the state of M' workers (numpy trees; DESIGN: elastic resume).

  For each leaf: the same shape is kept (parameters, counters); a leaf stacked over the workers
  (``stacked`` says which) gives new worker i the saved worker i mod M's value (momentum), except
  batch statistics (under ``model_state``), which every new worker takes as the saved workers'
  mean; anything else shaped by M (the vote's statistics of the last step) starts afresh
  (``fresh``, the new run's initial state).
  """

  def remap(path, old, new, is_stacked):
    old, new = np.asarray(old), np.asarray(new)
    if old.shape == new.shape:
      return old
    if is_stacked and old.shape[1:] == new.shape[1:]:
      if _canonical(path).startswith("model_state"):
        return np.broadcast_to(old.mean(axis=0, dtype=np.float64).astype(old.dtype), new.shape).copy()
      return old[np.arange(new.shape[0]) % old.shape[0]]
    return new

  return jax.tree_util.tree_map_with_path(remap, saved, fresh, stacked)
