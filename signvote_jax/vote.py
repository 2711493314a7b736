"""The majority vote of the workers' signs as an optax transformation, and its options (:class:`Vote`)."""

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from signvote_jax import axes
from signvote_jax import faults
from signvote_jax import ops
from signvote_jax import statistics
from signvote_jax import strategies
from signvote_jax.axes import AxisName
from signvote_jax.layout import WordLayout


class MajorityVoteState(NamedTuple):
  """State of :func:`scale_by_majority_vote`: statistics of the last vote (see :func:`signvote_jax.statistics.vote_statistics`).

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


@dataclasses.dataclass(frozen=True)
class Vote:
  r"""How the workers vote: every option of the majority vote, checked once, here.

  :func:`scale_by_majority_vote`, :func:`signvote_jax.signum` and :func:`signvote_jax.lion` take
  one as ``vote=`` (their ``axis_name=`` alone is short for ``vote=Vote(axis_name)``), so that
  ``signum(lr, vote=Vote("workers", strategy="alltoall", replicas=3))`` votes as
  ``scale_by_majority_vote(vote=...)`` does with the same object. Every option is checked when the
  ``Vote`` is made: a ValueError names the bad value and the valid ones. With
  ``num_workers`` given, so are the options that depend on the number of ballots (``replicas``,
  the faulty voters' indices); otherwise they are checked against the axis when the vote is traced.

  Strategies (how the words travel, :mod:`signvote_jax.strategies`):

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

  Attributes:
    axis_name: the mapped axis of the workers (of the hosts for ``"hierarchical"``), bound by a
      surrounding ``jax.shard_map`` or ``jax.pmap``; None for one worker (the vote is the sign).
    strategy: ``"allgather"``, ``"alltoall"`` or ``"hierarchical"``.
    inner_axis_name: for ``"hierarchical"``, the axis of the devices inside a host.
    outer_strategy: for ``"hierarchical"``, ``"allgather"`` or ``"alltoall"`` across hosts.
    num_workers: the number of ballots M, needed only to ``init`` outside the map (inside it, the
      axis size is used and must agree).
    replicas: the voters of each shard where workers vote for each other (``"alltoall"``, or a
      ``"hierarchical"`` vote with an ``"alltoall"`` outer one): an odd number from 1 (None: each
      worker votes its own shard alone) to M.
    voter_fault: faulty voters for tests and benchmarks, :func:`signvote_jax.faults.voter`.
    impl: kernel implementation, ``"auto"``, ``"jax"`` or ``"triton"`` (see ``signvote_jax.ops``).
    plan: the :class:`signvote_jax.strategies.Strategy` these options name (derived, not an
      argument): ``plan.hierarchical``, ``plan.exchange.sharded`` (workers vote for each other).

  >>> import signvote_jax as sv
  >>> vote = sv.Vote("workers", strategy="alltoall", replicas=3)
  >>> vote.plan.exchange.sharded, vote.plan.hierarchical
  (True, False)
  >>> sv.Vote("workers", strategy="allgather", replicas=3)
  Traceback (most recent call last):
  ...
  ValueError: replicas and voter_fault apply where workers vote for each other: strategy='alltoall', or 'hierarchical' with outer_strategy='alltoall'; under 'allgather' every worker counts every ballot itself.
  """

  axis_name: AxisName = None
  strategy: Literal["allgather", "alltoall", "hierarchical"] = "allgather"
  inner_axis_name: AxisName = None
  outer_strategy: Literal["allgather", "alltoall"] = "allgather"
  num_workers: int | None = None
  replicas: int | None = None
  voter_fault: faults.VoterFault | None = None
  impl: ops.Impl = "auto"
  plan: strategies.Strategy = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    plan = strategies.strategy(self.strategy, outer_strategy=self.outer_strategy, replicas=self.replicas,
                               voter_fault=self.voter_fault)
    if not plan.hierarchical and self.inner_axis_name is not None:
      raise ValueError(f"inner_axis_name is only used by strategy='hierarchical', not {self.strategy!r}.")
    if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
      raise ValueError(f"num_workers must be a positive int, got {self.num_workers!r}.")
    ops.check_impl(self.impl)
    if self.num_workers is not None:
      plan.check_workers(self.num_workers, self.axis_name, who="")
    object.__setattr__(self, "plan", plan)

  def replace(self, **changes) -> "Vote":
    """This vote with ``changes`` (checked again), e.g. the axes of a mesh made after the options."""
    return dataclasses.replace(self, **changes)

  def check_axes(self) -> None:
    """A ValueError if a hierarchical vote lacks either of its axes (checked where the vote is built)."""
    if self.plan.hierarchical and (self.axis_name is None or self.inner_axis_name is None):
      raise ValueError(
          "strategy='hierarchical' needs axis_name (the hosts' axis) and inner_axis_name (the axis "
          f"of the devices in a host); got axis_name={self.axis_name!r}, inner_axis_name={self.inner_axis_name!r}."
      )


def as_vote(axis_name: AxisName, vote: "Vote | None", who: str) -> Vote:
  """The :class:`Vote` a transform is given: ``vote``, or the default vote over ``axis_name``."""
  if isinstance(axis_name, Vote):
    raise TypeError(f"{who}: a Vote goes in as vote=..., not as axis_name.")
  if vote is None:
    return Vote(axis_name)
  if not isinstance(vote, Vote):
    raise TypeError(f"{who}: vote= must be a signvote_jax.Vote, got {vote!r}.")
  if axis_name is not None:
    raise ValueError(f"{who}: give the axis either as axis_name= (the default vote over it) or in "
                     f"vote=signvote_jax.Vote(axis_name, ...), not both (got axis_name={axis_name!r} and {vote}).")
  return vote


def scale_by_majority_vote(axis_name: AxisName = None, *, vote: "Vote | None" = None) -> optax.GradientTransformation:
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

  How the ballots travel (``"allgather"``, ``"alltoall"``, ``"hierarchical"``) and every other
  option are those of :class:`Vote`.

  Args:
    axis_name: the workers' mapped axis, for the default vote over it (``Vote(axis_name)``); None
      for one worker (the vote is the sign).
    vote: a :class:`Vote` for any other vote (``axis_name`` then left out).

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
  who = "scale_by_majority_vote"
  vote = as_vote(axis_name, vote, who)
  vote.check_axes()
  plan, axis_name, inner_axis_name = vote.plan, vote.axis_name, vote.inner_axis_name
  num_workers, impl = vote.num_workers, vote.impl

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
      (agreement, kappa), nonfinite = statistics.vote_statistics(tally.counts), tally.nonfinite.astype(jnp.int32)
      if tally.voter_counts is not None:
        voter_agreement, voter_kappa = statistics.vote_statistics(tally.voter_counts)
    new_state = MajorityVoteState(agreement, kappa, nonfinite, state.count + 1, voter_agreement, voter_kappa)
    # Equal on every worker (but under an equivocating sender with "allgather", where the workers'
    # views differ); kept varying only where a per_worker wrapper typed the state so.
    return treedef.unflatten(votes), jax.tree.map(axes.match_varying, new_state, state)

  return optax.GradientTransformation(init_fn, update_fn)
