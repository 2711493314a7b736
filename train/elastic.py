"""Elastic resume: a checkpoint of M workers read by a run of M' workers (a host lost or added).

What may change between the runs and how the per-worker state is carried over is one rule,
:func:`remap_workers`; :mod:`train.checkpoints` reads the saved shapes to see that the count changed.
"""

import jax
import numpy as np
import orbax.checkpoint as ocp


def canonical(path) -> str:
  """A leaf's path as names alone, the same for a train state and the checkpoint's metadata tree."""
  names = []
  for entry in path:
    for attribute in ("name", "key", "idx"):
      if hasattr(entry, attribute):
        names.append(str(getattr(entry, attribute)))
        break
  return "/".join(names)


def saved_shapes(state_directory) -> dict:
  """Each saved leaf's shape, by :func:`canonical` path."""
  metadata = ocp.PyTreeCheckpointer().metadata(state_directory).item_metadata.tree
  return {canonical(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(metadata)}


def remap_workers(saved, fresh, stacked, averaged):
  """The saved state of M workers as the state of M' workers (numpy trees; README: "Elastic resume").

  For each leaf: the same shape is kept (parameters, counters); a leaf stacked over the workers
  (``stacked`` says which) gives new worker i the saved worker i mod M's value (momentum), except
  the leaves ``averaged`` marks (batch statistics), which every new worker takes as the saved
  workers' mean; anything else shaped by M (the vote's statistics of the last step) starts afresh
  (``fresh``, the new run's initial state).
  """

  def remap(old, new, is_stacked, is_averaged):
    old, new = np.asarray(old), np.asarray(new)
    if old.shape == new.shape:
      return old
    if is_stacked and old.shape[1:] == new.shape[1:]:
      if is_averaged:
        return np.broadcast_to(old.mean(axis=0, dtype=np.float64).astype(old.dtype), new.shape).copy()
      return old[np.arange(new.shape[0]) % old.shape[0]]
    return new

  return jax.tree.map(remap, saved, fresh, stacked, averaged)
