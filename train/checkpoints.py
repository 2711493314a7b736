"""Orbax checkpoints of the train state, each stored with the config that made it."""

import jax
import orbax.checkpoint as ocp
from etils import epath

from train import config_checks


class Checkpointer:
  """Saves ``TrainState`` every few steps; restores the latest one if the config matches."""

  def __init__(self, workdir: str, config):
    self._config = config
    options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoints_to_keep, create=True)
    self._manager = ocp.CheckpointManager(
        epath.Path(workdir).absolute() / "checkpoints", options=options, item_names=("state", "config"))

  def restore_or(self, state):
    """The latest checkpoint's state (shaped and sharded like ``state``), or ``state`` if none."""
    step = self._manager.latest_step()
    if step is None:
      return state
    saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    config_checks.check_resume(saved, self._config)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]

  def save(self, step: int, state) -> None:
    self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_checks.config_to_json(self._config))))

  def close(self) -> None:
    """Waits for saves still being written (also when training stopped on an error)."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
