"""Faulty workers: inject them before the vote (or the mean), and name them from vote statistics."""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from signvote_jax import axes

KINDS = ("negate", "random", "zero", "nan", "scale")
SCALE = -1e3  # What a "scale" worker multiplies by: large and negated, fatal to an average.


class ByzantineState(NamedTuple):
  """State of :func:`byzantine`."""

  count: jax.Array  # i32[]: steps so far; with the seed and worker index it keys "random" signs.


def _corrupt(kind: str, update: jax.Array, key: jax.Array) -> jax.Array:
  if kind == "negate":
    return -update
  if kind == "random":
    flip = jax.random.bernoulli(key, 0.5, update.shape)
    return jnp.where(flip, -1, 1).astype(update.dtype) * jnp.abs(update)
  if kind == "zero":
    return jnp.zeros_like(update)
  if kind == "nan":
    return jnp.full_like(update, jnp.nan)
  return update * jnp.asarray(SCALE, update.dtype)


def byzantine(kind: str, workers: Sequence[int], axis_name, seed: int = 0) -> optax.GradientTransformation:
  """Replaces what the listed workers send with a fault of the given ``kind``.

  Place it right before :func:`signvote_jax.scale_by_majority_vote` (``signum(..., fault=...)``) or
  before :func:`signvote_jax.mean_allreduce`; everything before it, including a faulty worker's own
  momentum, stays honest, as in the paper's experiments.

  Kinds: ``"negate"`` sends ``-u`` (the paper's adversary); ``"random"`` sends ``|u|`` with random
  signs; ``"zero"`` sends zeros (a dead worker) and ``"nan"`` sends NaN, both of which the vote
  abstains on (averaging does not); ``"scale"`` sends ``-1000 u``
  (harmless to a vote, fatal to an average).

  Args:
    kind: one of ``"negate"``, ``"random"``, ``"zero"``, ``"nan"``, ``"scale"``.
    workers: indices along ``axis_name`` of the faulty workers.
    axis_name: the workers' mapped axis (a tuple of axes counts them row-major).
    seed: seed of the ``"random"`` signs; each step and worker draws its own.

  Returns:
    An ``optax.GradientTransformation`` with a :class:`ByzantineState`.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import signvote_jax as sv
  >>> liar = sv.faults.byzantine("negate", workers=[0], axis_name="workers")
  >>> def step(u):
  ...   return liar.update(u, liar.init(u))[0]
  >>> jax.pmap(step, axis_name="workers")(jnp.ones((jax.device_count(), 1)))[0].tolist()
  [-1.0]
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown fault kind {kind!r}; valid kinds are {KINDS}.")
  workers = tuple(workers)
  if not all(isinstance(w, (int, np.integer)) and w >= 0 for w in workers) or len(set(workers)) != len(workers):
    raise ValueError(f"workers must be distinct non-negative worker indices, got {workers!r}.")
  if axis_name is None:
    raise ValueError("byzantine needs the workers' axis_name to know which worker it runs on; got None.")
  who = f"byzantine({kind!r})"

  def init_fn(params):
    del params
    return ByzantineState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    size = axes.axis_size(axis_name, who)
    if workers and max(workers) >= size:
      raise ValueError(
          f"{who}: faulty worker {max(workers)} does not exist; axis {axis_name!r} has {size} workers "
          f"(indices 0..{size - 1})."
      )
    index = jax.lax.axis_index(axis_name)
    faulty = jnp.isin(index, jnp.asarray(workers, jnp.int32))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.count), index)
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(key, max(len(leaves), 1))
    sent = [jnp.where(faulty, _corrupt(kind, leaf, k), leaf) for leaf, k in zip(leaves, keys)]
    return treedef.unflatten(sent), ByzantineState(count=state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)


def suspected_workers(kappa) -> list[int]:
  """Names the workers whose chance-corrected agreement with the vote is suspiciously low.

  Honest workers share the true gradient sign, so they agree with the vote well beyond chance
  (kappa well above 0, see :func:`signvote_jax.vote.vote_statistics`); a worker sending random signs,
  or a constant ballot, sits near 0, and a negating one below it. A worker with nothing to say
  (a dead one sending zeros, a NaN one) abstains: its kappa is NaN, and it is reported as
  abstaining (``MajorityVoteState.nonfinite`` tells why), never suspected. With fewer than M/2
  faulty workers the median is an honest worker's, so a worker is suspected when its kappa falls
  below half the median. When the median itself is 0 or below, the statistics carry no signal and
  no one is named.

  Args:
    kappa: ``f32[M]``, e.g. ``MajorityVoteState.kappa`` (averaged over a few steps: one step's is
      noisy once the gradients are small).

  Returns:
    Sorted indices of the suspected workers.

  >>> suspected_workers([0.6, 0.55, 0.0, 0.62, -0.5, float("nan")])  # the last abstained everywhere
  [2, 4]
  """
  kappa = np.asarray(kappa, np.float64)
  if kappa.ndim != 1:
    raise ValueError(f"kappa must be one value per worker (shape [M]), got shape {kappa.shape}.")
  measured = np.isfinite(kappa)  # NaN: a worker that abstained everywhere, or a lone worker.
  if not measured.any():
    return []
  median = float(np.median(kappa[measured]))
  if not median > 0:
    return []
  return [int(i) for i in np.flatnonzero(measured & (kappa < median / 2))]
