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
from jax.experimental import multihost_utils

from train import config_checks
from train.errors import ConfigError


def on_host(state):
  """The global arrays of ``state`` as numpy, gathered to every process (all of them must call it)."""
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(state, tiled=True))


def fingerprint(host_state) -> str:
  """SHA-256 of every leaf of a numpy tree (path, dtype, shape and bytes, in tree order)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(host_state):
    array = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _nonfinite_leaf(host_state) -> str | None:
  """The path of the first floating leaf of a numpy tree holding a NaN or an infinity, if any."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(host_state):
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating) and not np.all(np.isfinite(leaf)):
      return jax.tree_util.keystr(path)
  return None


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
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    for step in steps:
      problem, restored = self._restore(step, target)
      if problem is None:
        return restored
      print(f"warning: the checkpoint of step {step} in {self._directory} is damaged ({problem}); "
            "it is removed and the run resumes from the one before", file=sys.stderr, flush=True)
      self._manager.delete(step)
    raise ConfigError(
        f"no intact checkpoint in {self._directory} (damaged: steps {', '.join(map(str, steps))}, now "
        "removed); rerun to start from step 0, or use another workdir.")

  def _restore(self, step: int, target):
    """``(None, state)`` for an intact checkpoint, else ``(what is wrong, None)``."""
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # pylint: disable=broad-exception-caught  (any unreadable file: damaged)
      return f"its config is unreadable: {type(e).__name__}", None
    config_checks.check_resume(saved, self._config)  # Another run's checkpoint is an error, not damage.
    try:
      items = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), integrity=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-exception-caught
      return f"its state is unreadable: {type(e).__name__}", None
    host_state = on_host(items["state"])
    if items["integrity"].get("sha256") != fingerprint(host_state):
      return "its checksum does not match its state", None
    leaf = None if self._config.faults.kind else _nonfinite_leaf(host_state)  # A fault run may diverge.
    if leaf is not None:
      return f"{leaf} is not finite", None
    return None, items["state"]

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_checks.config_to_json(self._config)),
        integrity=ocp.args.JsonSave({"step": step, "sha256": fingerprint(on_host(state))})))

  def close(self) -> None:
    """Waits for saves still being written (also when training stopped on an error)."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
