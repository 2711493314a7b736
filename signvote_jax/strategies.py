"""How the packed sign words travel between workers, and where they are counted.

A :class:`Strategy` is what a user names with ``strategy=`` (and ``outer_strategy=``): the
:class:`Exchange` that carries one ``u32[W]`` ballot per worker across the voting axis, and whether
the devices of a host sum their updates first (``"hierarchical"``). Each exchange maps this worker's
buffer to the vote of all workers as bit planes, equal on every worker (and typed invariant over the
axis), together with counts of how every worker's ballot relates to the vote
(``ops.AgreementCounts``), from which the vote statistics follow.

Where workers vote for each other (``"alltoall"``), ``replicas=r`` has each shard voted by r
workers and every worker takes the median of their r results, so that fewer than r/2 faulty voters
of a shard can neither change its vote nor the counts (``DESIGN.md``, threat model).
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from signvote_jax import axes
from signvote_jax import faults
from signvote_jax import ops
from signvote_jax.layout import Ballot, WordLayout


class Tally(NamedTuple):
  """The vote of all workers, as returned by an exchange (equal on every worker, but under
  ``"allgather"`` with an equivocating sender)."""

  sign: jax.Array  # u32[W]: bit 1 where the vote is +1.
  nonzero: jax.Array  # u32[W]: bit 1 where the vote is not 0 (and a coordinate lives).
  counts: ops.AgreementCounts  # Of every worker's ballot against the vote, over all coordinates.
  nonfinite: jax.Array  # u32[M]: each worker's non-finite coordinates, as it reports them.
  # Of every voter's returned results against the combined vote; None where no result is replicated.
  voter_counts: ops.AgreementCounts | None = None


class Voters(NamedTuple):
  """Who votes a shard: ``replicas`` workers (odd), of which ``fault.workers`` lie (``faults.voter``)."""

  replicas: int = 1
  fault: faults.VoterFault | None = None


def _unpack_flags(words, size):
  """``u32[..., ceil(size / 32)]`` word flags from the wire to ``bool[..., size]`` (of ``ops.pack_bits``)."""
  return ops.unpack_bits(words)[..., :size]


def _allgather(ballot, valid, axis_name, phase, impl, voters: Voters, equivocation) -> Tally:
  """Every worker gathers all M ballots and counts them itself.

  Receives ``(M - 1) (W + W / 32 + 1)`` words per worker: the bits, one flag a word for abstention,
  and the count of non-finite coordinates. A faulty sender cannot change anyone's count beyond its
  own ballot; an equivocating one gives each worker its own view, so the votes may differ where
  its ballot decides (they are typed varying then).
  """
  del voters  # Nobody votes for anyone else.
  size = ballot.words.shape[0]
  payload = jnp.concatenate([ballot.words, ops.pack_bits(ballot.voting), ballot.nonfinite[None]])
  gathered = jax.lax.all_gather(payload, axis_name, to="invarying")
  words, voting = gathered[:, :size], _unpack_flags(gathered[:, size:-1], size)
  if equivocation is not None:
    words = equivocation.received(words, jax.lax.axis_index(axis_name), phase)
  sign, nonzero = ops.vote_planes(words, valid, voting=voting, tie_phase=phase, impl=impl)
  return Tally(sign, nonzero, ops.agreement_counts(words, sign, nonzero, voting), gathered[:, -1])


def _alltoall(ballot, valid, axis_name, phase, impl, voters: Voters, equivocation) -> Tally:
  """Worker j votes shard j of every ballot (and shards j-1 .. j-r+1 with r replicas), then the
  voted shards are gathered and each worker takes the median of each shard's r results.

  The way out carries each shard's bits and its abstention flags (one bit a word): about
  ``r (M - 1) / M * 33/32 W`` words per worker. For odd M the way back is the sign plane of each
  voted shard and one flag a word for the words nobody voted on (a tie among voters is broken by
  the step's parity, see ``ops.vote_planes``): in all about r/31 of a float32 ring all-reduce,
  whatever M. For even M a tie must come back as 0, so the way back carries three states; they
  travel in base 3, 20 votes per word (1.6 bits per coordinate), about r/24.3 of the all-reduce.
  The agreement counts of each voted shard (4 M words) and the sender's non-finite count ride along
  in the same gather, so a step has one all-to-all and one all-gather, both of uint32 words.
  """
  num_workers, replicas = axes.axis_size(axis_name, "alltoall"), voters.replicas
  shard = ballot.words.shape[0] // num_workers
  me = jax.lax.axis_index(axis_name)
  # voted[k, q]: the q-th shard that worker k votes; voter_of[j, q]: the worker whose q-th is shard j.
  voted = (np.arange(num_workers)[:, None] - np.arange(replicas)) % num_workers
  voter_of = (np.arange(num_workers)[:, None] + np.arange(replicas)) % num_workers
  slot = np.arange(replicas)
  shards = jnp.concatenate([ballot.words.reshape(num_workers, shard),
                            ops.pack_bits(ballot.voting.reshape(num_workers, shard))], axis=1)
  # Row i of `received`: worker i's copies of the r shards that this worker votes.
  received = jax.lax.all_to_all(shards[voted].reshape(num_workers, -1), axis_name, 0, 0)
  received = received.reshape(num_workers, replicas, -1)
  words, voting = received[..., :shard], _unpack_flags(received[..., shard:], shard)
  if equivocation is not None:
    words = equivocation.received(words, me, phase)
  valid_mine = valid.reshape(num_workers, shard)[(me - slot) % num_workers]
  sign, nonzero, counts = _vote_shards(words, voting, valid_mine, phase, impl)
  if voters.fault is not None:
    sign, nonzero = voters.fault.returned(sign, nonzero, me, phase)
    counts = voters.fault.reported(counts, me)
  vote = _results_to_wire(sign.reshape(-1), nonzero.reshape(-1), num_workers)
  payload = jnp.concatenate([vote, counts.reshape(-1), ballot.nonfinite[None]])
  gathered = jax.lax.all_gather(payload, axis_name, to="invarying")
  votes, reported = gathered[:, : vote.shape[0]], gathered[:, vote.shape[0] : -1]
  sign, nonzero = _results_from_wire(votes, num_workers, replicas * shard)
  # By shard: [j, q] is the q-th result for shard j, from worker voter_of[j, q].
  sign = sign.reshape(num_workers, replicas, shard)[voter_of, slot]
  nonzero = nonzero.reshape(num_workers, replicas, shard)[voter_of, slot] & valid.reshape(num_workers, 1, shard)
  reported = reported.reshape(num_workers, replicas, 4, num_workers)[voter_of, slot]
  # Counts are sums over coordinates: those of the whole buffer add up from the shards' (medians).
  counts = ops.AgreementCounts(*jnp.sum(jnp.sort(reported, axis=1)[:, replicas // 2], axis=0, dtype=jnp.uint32))
  if replicas == 1:
    return Tally(sign.reshape(-1), nonzero.reshape(-1), counts, gathered[:, -1])
  combined_sign, combined_nonzero = _median(sign, nonzero, impl)
  voter_counts = _voter_counts(sign, nonzero, combined_sign, combined_nonzero, voted)
  return Tally(combined_sign.reshape(-1), combined_nonzero.reshape(-1), counts, gathered[:, -1], voter_counts)


def _vote_shards(words, voting, valid, phase, impl):
  """A voter's work: the votes of its r shards (``u32[M, r, S]`` ballots, ``bool`` voting flags,
  ``u32[r, S]`` valid masks) as planes ``u32[r, S]``, and ``u32[r, 4, M]`` counts: the fields of
  ``ops.AgreementCounts`` of the M ballots of each shard."""
  num_workers, replicas, shard = words.shape
  sign, nonzero = ops.vote_planes(words.reshape(num_workers, -1), valid.reshape(-1),
                                  voting=voting.reshape(num_workers, -1), tie_phase=phase, impl=impl)
  sign, nonzero = sign.reshape(replicas, shard), nonzero.reshape(replicas, shard)
  counts = jax.vmap(ops.agreement_counts, in_axes=(1, 0, 0, 1))(words, sign, nonzero, voting)
  return sign, nonzero, jnp.stack(counts, axis=1)


def _results_to_wire(sign, nonzero, num_workers):
  """Vote planes ``u32[V]`` as they travel back: for odd M the sign plane and one "anyone voted"
  flag a word (a voted word of odd M has no tie left, so that is "the vote is not 0 there"); for
  even M base-3 words of 20 votes."""
  if num_workers % 2 == 0:
    return ops.pack_ternary(sign, nonzero)
  return jnp.concatenate([sign, ops.pack_bits(nonzero != 0)])


def _results_from_wire(votes, num_workers, plane_words):
  """Inverse of :func:`_results_to_wire` for each row of ``votes``: planes ``u32[rows, plane_words]``."""
  if num_workers % 2 == 0:
    return ops.unpack_ternary(votes, plane_words)
  decided = _unpack_flags(votes[:, plane_words:], plane_words)
  return votes[:, :plane_words], jnp.where(decided, jnp.uint32(0xFFFFFFFF), jnp.uint32(0))


def _median(sign, nonzero, impl):
  """Per coordinate, the median of the r votes (axis 1 of ``u32[M, r, S]`` planes) in {-1, 0, +1}."""
  def majority(plane):
    return ops.majority(jnp.moveaxis(plane, 1, 0), impl=impl)

  positive, negative = majority(sign & nonzero), majority(~sign & nonzero)
  return positive, positive | negative


def _voter_counts(sign, nonzero, combined_sign, combined_nonzero, voted) -> ops.AgreementCounts:
  """How each voter's returned results (``u32[M, r, S]`` by shard) relate to the combined vote
  (``u32[M, S]``), where that vote is not 0: ``ops.AgreementCounts`` of the M voters."""
  def count(bits):
    return jnp.sum(jax.lax.population_count(jnp.broadcast_to(bits, sign.shape)), axis=-1, dtype=jnp.uint32)

  decided, combined_positive = combined_nonzero[:, None], (combined_sign & combined_nonzero)[:, None]
  combined_negative = decided & ~combined_positive
  positive, negative = sign & nonzero, ~sign & nonzero
  fields = (count((positive & combined_positive) | (negative & combined_negative)),
            count(positive & decided), count(combined_positive), count(decided))
  # Entry [j, q] belongs to the voter whose q-th shard is j: back to voters through `voted`.
  slot = np.arange(voted.shape[1])
  return ops.AgreementCounts(*(jnp.sum(f[voted, slot], axis=1, dtype=jnp.uint32) for f in fields))


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One ballot of ``u32[W]`` per worker across an axis, to the tally of all of them.

  Attributes:
    name: what users call it.
    sharded: whether ``W`` must split into one equal shard per worker.
    run: ``(ballot, valid, axis_name, phase, impl, voters, equivocation) -> Tally``, ``phase`` the
      step, ``voters`` a :class:`Voters`, ``equivocation`` a ``faults.Equivocation`` or None.
  """

  name: str
  sharded: bool
  run: Callable[..., Tally]

  def word_multiple(self, num_workers: int) -> int:
    """What the buffer's length must be a multiple of, for ``num_workers`` ballots."""
    return num_workers if self.sharded else 1


EXCHANGES = {e.name: e for e in (Exchange("allgather", False, _allgather), Exchange("alltoall", True, _alltoall))}


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How a vote is taken: an :class:`Exchange` across the ballots' axis, per worker or per host.

  Attributes:
    name: what users call it (``"allgather"``, ``"alltoall"`` or ``"hierarchical"``).
    exchange: how the ballots travel across ``axis_name``.
    hierarchical: whether each ballot is the sum of a host's devices (over ``inner_axis_name``).
    voters: how many workers vote each shard, and which of them lie.
  """

  name: str
  exchange: Exchange
  hierarchical: bool = False
  voters: Voters = Voters()

  def tally(self, leaves, axis_name, inner_axis_name, step, impl: ops.Impl,
            equivocation: faults.Equivocation | None = None) -> tuple[WordLayout, Tally]:
    """The vote of ``leaves`` (this worker's update) over ``axis_name`` at ``step``, with its word layout."""
    num_ballots = axes.axis_size(axis_name, "scale_by_majority_vote")
    multiple = self.exchange.word_multiple(num_ballots)
    if not self.hierarchical:
      layout = WordLayout.of(leaves, multiple=multiple)
      ballot = layout.ballot(leaves, step + jax.lax.axis_index(axis_name))
      return layout, self.exchange.run(ballot, layout.valid_mask(), axis_name, step, impl, self.voters, equivocation)
    local = axes.axis_size(inner_axis_name, "hierarchical")
    layout = WordLayout.of(leaves, multiple=local * multiple)
    return layout, _hierarchical(layout, leaves, inner_axis_name, axis_name, self.exchange, step, impl,
                                 self.voters, equivocation)

  def check_workers(self, num_ballots: int, axis_name, equivocation=None, who: str = "scale_by_majority_vote") -> None:
    """A ValueError (its text led by ``who``, if any) if ``replicas`` or a faulty worker's index does
    not fit ``num_ballots`` ballots."""
    if self.voters.replicas > num_ballots:
      raise ValueError(f"{who + ': ' if who else ''}replicas={self.voters.replicas} needs as many voters, but axis {axis_name!r} "
                       f"has {num_ballots}; use an odd number from 1 to {num_ballots}.")
    for fault in (self.voters.fault, equivocation):
      if fault is not None:
        faults.check_workers(fault.workers, num_ballots, axis_name, who)


def _hierarchical(layout, leaves, inner_axis_name, axis_name, exchange: Exchange, step, impl: ops.Impl,
                  voters: Voters, equivocation) -> Tally:
  """Sums the updates inside each host, then votes the hosts' signs across hosts with ``exchange``.

  The G devices of a host split the work: a reduce-scatter over ``inner_axis_name`` (the fast local
  link) leaves device g with the host's float32 sum of slice g of the word layout; device g packs that
  slice and votes it with device g of every other host; an all-gather of the voted bit planes inside
  the host brings back the whole vote. Each host thus sends one vote's worth of words over the slow
  network, not G, and the local link carries half of a float all-reduce.
  """
  slice_words = layout.padded_words // axes.axis_size(inner_axis_name, "hierarchical")
  mine = jax.lax.psum_scatter(layout.floats(leaves), inner_axis_name, scatter_dimension=0, tiled=True)
  start = jax.lax.axis_index(inner_axis_name) * slice_words
  valid = jax.lax.dynamic_slice_in_dim(layout.valid_mask(), start, slice_words)
  # A host abstains where its sum has nothing to say: zero, or non-finite (NaN from any device).
  ballot = Ballot(*ops.pack_ballot(mine, step + jax.lax.axis_index(axis_name)))
  tally = exchange.run(ballot, valid, axis_name, step, impl, voters, equivocation)
  planes = jnp.stack([tally.sign, tally.nonzero])
  sign, nonzero = jax.lax.all_gather(planes, inner_axis_name, axis=1, tiled=True, to="invarying")
  counts, nonfinite, voter_counts = jax.lax.psum((tally.counts, tally.nonfinite, tally.voter_counts), inner_axis_name)
  return Tally(sign, nonzero, counts, nonfinite, voter_counts)


# What users name with ``strategy=``; a hierarchical vote's exchange is its ``outer_strategy``.
STRATEGIES = {
    "allgather": Strategy("allgather", EXCHANGES["allgather"]),
    "alltoall": Strategy("alltoall", EXCHANGES["alltoall"]),
    "hierarchical": Strategy("hierarchical", EXCHANGES["allgather"], hierarchical=True),
}


def strategy(name: str, *, outer_strategy: str = "allgather", replicas: int | None = None,
             voter_fault: faults.VoterFault | None = None) -> Strategy:
  """The :class:`Strategy` a user names, or a ValueError that says what is wrong and what is valid."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; valid strategies are {tuple(STRATEGIES)}.")
  if outer_strategy not in EXCHANGES:
    raise ValueError(f"Unknown outer_strategy {outer_strategy!r}; valid ones are {tuple(EXCHANGES)}.")
  plan = STRATEGIES[name]
  if plan.hierarchical:
    plan = dataclasses.replace(plan, exchange=EXCHANGES[outer_strategy])
  elif outer_strategy != "allgather":
    raise ValueError(f"outer_strategy is the vote across hosts of strategy='hierarchical'; {name!r} has none.")
  if isinstance(replicas, jax.Array):
    raise ValueError("replicas shapes the exchange, so it must be a Python int, not an array.")
  replicas = 1 if replicas is None else replicas
  if not isinstance(replicas, (int, np.integer)) or isinstance(replicas, bool) or replicas < 1 or replicas % 2 == 0:
    raise ValueError(f"replicas must be an odd number from 1 to the number of workers (the voters of each "
                     f"shard, whose median is taken), got {replicas!r}.")
  if voter_fault is not None and not isinstance(voter_fault, faults.VoterFault):
    raise ValueError(f"voter_fault must come from signvote_jax.faults.voter(kind, workers), got {voter_fault!r}.")
  voters = Voters(int(replicas), voter_fault)
  if not plan.exchange.sharded and voters != Voters():
    raise ValueError(
        "replicas and voter_fault apply where workers vote for each other: strategy='alltoall', or "
        f"'hierarchical' with outer_strategy='alltoall'; under {plan.exchange.name!r} every worker counts "
        "every ballot itself."
    )
  return dataclasses.replace(plan, voters=voters)
