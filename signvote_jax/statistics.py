"""How far each worker's ballot (or its returned votes) agrees with the vote, and who that names.

The vote's state (:class:`signvote_jax.MajorityVoteState`) carries, per worker, its agreement with
the vote and that agreement beyond chance (Cohen's kappa, :func:`vote_statistics`);
:func:`suspected_workers` names the workers whose kappa is too low. The faults these statistics
detect are injected by :mod:`signvote_jax.faults`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from signvote_jax import ops


def vote_statistics(counts: ops.AgreementCounts) -> tuple[jax.Array, jax.Array]:
  r"""Agreement of each worker with the vote, raw and corrected for chance.

  With :math:`a_m` the fraction of non-tied coordinates where worker m's sign equals the vote,
  :math:`q_m` the fraction where worker m sent +1 and :math:`p` the fraction where the vote is +1,
  a ballot unrelated to the vote agrees by chance on :math:`e_m = q_m p + (1 - q_m)(1 - p)`, and

  .. math::  \kappa_m = \frac{a_m - e_m}{1 - e_m}

  (Cohen's kappa) is 0 for a ballot that carries no information about the vote, whatever its share
  of +1: exactly 0 for a constant ballot (a dead worker sends all +1, a NaN one all -1), whose raw
  agreement is high wherever the vote leans its way; near 0 for random signs (a little above, as
  the ballot is one of the M that make the vote). Honest workers score well above 0, negating ones
  below. Where :math:`e_m = 1` (worker and vote constant and equal) kappa is 0.

  Args:
    counts: the counts of a vote, summed over all coordinates.

  Returns:
    ``(agreement, kappa)``: :math:`a_m` and :math:`\kappa_m`, NaN for a worker with nothing counted.
  """
  total = counts.total.astype(jnp.float32)
  decided = total > 0

  def share(count):
    return count.astype(jnp.float32) / jnp.maximum(total, 1)

  agree, positive, vote_positive = share(counts.agree), share(counts.positive), share(counts.vote_positive)
  chance = positive * vote_positive + (1 - positive) * (1 - vote_positive)
  informative = decided & (chance < 1)
  kappa = jnp.where(informative, (agree - chance) / jnp.where(informative, 1 - chance, 1), 0.0)
  return jnp.where(decided, agree, jnp.nan), jnp.where(decided, kappa, jnp.nan)


def suspected_workers(kappa) -> list[int]:
  """Names the workers whose chance-corrected agreement with the vote is suspiciously low.

  Honest workers share the true gradient sign, so they agree with the vote well beyond chance
  (kappa well above 0, see :func:`vote_statistics`); a worker sending random signs,
  or a constant ballot, sits near 0, and a negating one below it. A worker with nothing to say
  (a dead one sending zeros, a NaN one) abstains: its kappa is NaN, and it is reported as
  abstaining (``MajorityVoteState.nonfinite`` tells why), never suspected. With fewer than M/2
  faulty workers the median is an honest worker's, so a worker is suspected when its kappa falls
  below half the median. When the median itself is 0 or below, the statistics carry no signal and
  no one is named.

  The same rule names faulty *voters* from ``MajorityVoteState.voter_kappa`` (``replicas`` of 3 or
  more): an honest voter's results agree with the combined vote (kappa 1 without equivocation), a
  negating voter's sit near -1, random or all-tie ones near or below 0.

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
