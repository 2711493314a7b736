"""The majority vote of the workers' signs as an optax transformation."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from signvote_jax import axes
from signvote_jax import faults
from signvote_jax import ops
from signvote_jax import strategies
from signvote_jax.layout import WordLayout
from signvote_jax.ops import dispatch


class MajorityVoteState(NamedTuple):
  """State of :func:`scale_by_majority_vote`: statistics of the last vote (see :func:`vote_statistics`).

  Per worker (per host for ``"hierarchical"``). The agreement statistics are over the coordinates
  where the vote was not 0 and the worker voted; NaN where there were none (a worker that abstained
  everywhere, before the first vote, and for a single worker, who has no one to agree with). The
  voter statistics compare the results each worker returned for the shards it voted with the
  combined (median) vote, where that is not 0; NaN unless shards have several voters
  (``replicas`` of 3 or more).
  """

  agreement: jax.Array  # f32[M]: the fraction where its sign equaled the vote.
  kappa: jax.Array  # f32[M]: that agreement beyond chance, Cohen's kappa.
  nonfinite: jax.Array  # i32[M]: its non-finite coordinates in the last vote (it abstained there).
  count: jax.Array  # i32[]: votes taken; the phase of the filler bits and of odd M's tie-break.
  voter_agreement: jax.Array  # f32[M]: the fraction where its returned vote equaled the combined one.
  voter_kappa: jax.Array  # f32[M]: that agreement beyond chance.


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


def _unmeasured(count: int) -> tuple[jax.Array, jax.Array]:
  """Agreement and kappa where nothing was measured: NaN."""
  return jnp.full((count,), jnp.nan, jnp.float32), jnp.full((count,), jnp.nan, jnp.float32)


def vote_alone(leaves, axis_name=None):
  """One ballot decides alone, per coordinate (no wire): sign, and 0 where it has nothing to say.

  The ballot's sign planes (:func:`ops.sign_planes`, one pass over each leaf that also marks its
  non-finite coordinates) are decoded into the votes, the way the planes of a vote of many are:
  the pass that applies the votes reads two bits a coordinate instead of re-examining each value.
  With ``axis_name`` (an axis of one worker) the planes are summed over it, which types the votes
  equal on every worker at the cost of words, not floats.

  Returns the votes and the number of non-finite coordinates.
  """
  layout = WordLayout.of(leaves)
  positive, says, bad = layout.planes(leaves)
  nonfinite = ops.popcount_sum(bad).astype(jnp.int32)
  if axis_name is not None:
    positive, says, nonfinite = jax.lax.psum((positive, says, nonfinite), axis_name)
  return layout.decode(positive, says, leaves), nonfinite


def check_floating(tree, who: str) -> None:
  """Raises a ValueError naming the first leaf of ``tree`` that is not floating."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(
          f"{who}: leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {jnp.result_type(leaf)}, "
          "but only floating leaves (float32, bfloat16, ...) can vote; leave it out with optax.masked."
      )


def scale_by_majority_vote(
    axis_name,
    *,
    strategy: str = "allgather",
    inner_axis_name=None,
    outer_strategy: str = "allgather",
    num_workers: int | None = None,
    replicas: int | None = None,
    voter_fault: faults.VoterFault | None = None,
    impl: str = "auto",
) -> optax.GradientTransformation:
  r"""Replaces each worker's update by the majority vote of all workers' signs.

  With M workers, worker m sends :math:`s_m = \mathrm{sign}(u_m)` as one bit per coordinate, and
  abstains where it has nothing to say (:math:`u_m` zero or non-finite), and every worker receives

  .. math::  V = \mathrm{sign}\Big(\sum_{m \text{ voting}} s_m\Big) \in \{-1, 0, +1\},

  0 where no worker votes. Abstention costs 1/32 bit a coordinate on the wire, so it is per word of
  32 coordinates: a worker abstains on a word where none of its coordinates has anything to say;
  inside a word it votes on, such a coordinate sends a filler bit that alternates with the
  coordinate, the worker and the step, so it never leans the vote either way. A tie among the
  voters is 0 for even M; for odd M it alternates with the coordinate and the step (the way back
  of ``"alltoall"`` has one bit a coordinate); see ``DESIGN.md``. A single ballot
  (``axis_name=None``, or an axis of size 1) decides alone, exactly per coordinate: ``sign(u)``, 0
  where ``u`` is zero or non-finite. The signs of all leaves travel as one uint32 buffer, one
  exchange per step. The vote is equal on every worker, and typed invariant over the axis inside
  ``jax.shard_map``. Placed after ``optax.ema`` it gives Signum with majority vote
  (Algorithm 1 of Bernstein et al.); after ``optax.scale_by_lion``, distributed Lion.

  Strategies:

  * ``"allgather"``: all-gather the words; every worker counts all M ballots.
  * ``"alltoall"``: all-to-all so that worker j votes shard j of every ballot, then all-gather the
    voted shards; the traffic per worker does not grow with M. With ``replicas=r`` (odd), workers
    j, j+1, ..., j+r-1 each vote shard j and every worker takes, per coordinate, the median of
    their r results (and of the counts they report): fewer than r/2 faulty voters of a shard change
    nothing, for r times the traffic (``DESIGN.md``, threat model).
  * ``"hierarchical"``: sum the float updates over ``inner_axis_name`` (the devices of one host,
    a fast link; a float32 reduce-scatter, so that each device holds a slice of the host's sum),
    then vote the hosts' signs over ``axis_name`` with ``outer_strategy``, each device its slice;
    a host sends one vote's words over the slow network, whatever its number of devices.

  Args:
    axis_name: the mapped axis of the workers (of the hosts for ``"hierarchical"``), bound by a
      surrounding ``jax.shard_map`` or ``jax.pmap``; None for one worker (the vote is the sign).
    strategy: one of ``"allgather"``, ``"alltoall"``, ``"hierarchical"``.
    inner_axis_name: for ``"hierarchical"``, the axis of the devices inside a host.
    outer_strategy: for ``"hierarchical"``, ``"allgather"`` or ``"alltoall"`` across hosts.
    num_workers: the number of ballots M, needed only to ``init`` outside the map (inside it, the
      axis size is used and must agree).
    replicas: the voters of each shard for ``"alltoall"`` (and a ``"hierarchical"`` vote with an
      ``"alltoall"`` outer one): an odd number from 1 (None: each worker votes its own shard alone)
      to M. It shapes the exchange, so under ``optax.inject_hyperparams`` name it in
      ``static_args``.
    voter_fault: faulty voters for tests and benchmarks, :func:`signvote_jax.faults.voter`.
    impl: kernel implementation, ``"auto"``, ``"jax"`` or ``"triton"`` (see ``ops``).

  Returns:
    An ``optax.GradientTransformation`` whose state is a :class:`MajorityVoteState`; read its
    fields from any optimizer state with ``optax.tree.get(opt_state, "kappa")`` (or
    ``"agreement"``, ``"nonfinite"``, ``"voter_kappa"``), and pass a kappa to
    :func:`signvote_jax.suspected_workers` to name faulty senders (or voters).
    With one ballot they are NaN: a single worker has no one to agree with.

  Example (one worker per device; identical gradients vote their own signs):

  >>> import jax, jax.numpy as jnp
  >>> import signvote_jax as sv
  >>> vote = sv.scale_by_majority_vote("workers")
  >>> def step(grads):
  ...   state = vote.init(grads)
  ...   return vote.update(grads, state)[0]
  >>> grads = jnp.tile(jnp.array([[0.3, -2.0, 0.0, 0.0]]), (jax.device_count(), 1))
  >>> jax.pmap(step, axis_name="workers")(grads)[0].tolist()  # zeros: the fillers cancel (8 workers)
  [1.0, -1.0, 0.0, 0.0]

  References:
    Bernstein et al., `signSGD with Majority Vote is Communication Efficient and Fault Tolerant
    <https://arxiv.org/abs/1810.05291>`_, ICLR 2019.
  """
  plan = strategies.strategy(strategy, outer_strategy=outer_strategy, inner_axis_name=inner_axis_name,
                             axis_name=axis_name, replicas=replicas, voter_fault=voter_fault)
  if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
    raise ValueError(f"num_workers must be a positive int, got {num_workers!r}.")
  dispatch.check_impl(impl)
  who = "scale_by_majority_vote"

  def ballot_count() -> int | None:
    """M: the size of the voting axis when bound, else ``num_workers`` (None if not given)."""
    if axis_name is None:
      return 1
    size = axes.bound_axis_size(axis_name)
    if size is not None and num_workers is not None and size != num_workers:
      raise ValueError(
          f"{who}: built for num_workers={num_workers}, but axis {axis_name!r} has {size} workers; "
          "make them agree or leave num_workers out."
      )
    return size if size is not None else num_workers

  def init_fn(params):
    check_floating(params, who)
    count = ballot_count()
    if count is None:
      raise ValueError(
          f"{who}: init needs the worker count, but no surrounding jax.shard_map or jax.pmap binds an "
          f"axis named {axis_name!r} (check the name against the mesh's axes); call init inside such a "
          "map, or pass num_workers=M when building the transform."
      )
    plan.check_workers(count, axis_name)
    return MajorityVoteState(*_unmeasured(count), nonfinite=jnp.zeros((count,), jnp.int32),
                             count=jnp.zeros([], jnp.int32), voter_agreement=_unmeasured(count)[0],
                             voter_kappa=_unmeasured(count)[1])

  def update_fn(updates, state, params=None):
    del params
    updates, equivocation = faults.split_equivocation(updates)
    check_floating(updates, who)
    leaves, treedef = jax.tree.flatten(updates)
    count = 1 if axis_name is None else axes.axis_size(axis_name, who)
    if state.agreement.shape != (count,):
      raise ValueError(
          f"{who}: the state was made for {state.agreement.shape[0]} workers but axis {axis_name!r} "
          f"has {count}; call init again for this worker count."
      )
    if not leaves:
      return updates, state
    plan.check_workers(count, axis_name, equivocation)
    voter_agreement, voter_kappa = _unmeasured(count)
    if count == 1:
      # One ballot: no wire to economise (and no one to equivocate to), so abstention is exact per coordinate.
      if plan.hierarchical:
        leaves = jax.lax.psum(leaves, inner_axis_name)
      votes, nonfinite = vote_alone(leaves, axis_name)
      agreement, kappa = _unmeasured(1)
      nonfinite = nonfinite[None]
    else:
      layout, tally = plan.tally(leaves, axis_name, inner_axis_name, state.count, impl, equivocation)
      votes = layout.decode(tally.sign, tally.nonzero, leaves)
      (agreement, kappa), nonfinite = vote_statistics(tally.counts), tally.nonfinite.astype(jnp.int32)
      if tally.voter_counts is not None:
        voter_agreement, voter_kappa = vote_statistics(tally.voter_counts)
    new_state = MajorityVoteState(agreement, kappa, nonfinite, state.count + 1, voter_agreement, voter_kappa)
    # Equal on every worker (but under an equivocating sender with "allgather", where the workers'
    # views differ); kept varying only where a per_worker wrapper typed the state so.
    return treedef.unflatten(votes), jax.tree.map(axes.match_varying, new_state, state)

  return optax.GradientTransformation(init_fn, update_fn)
