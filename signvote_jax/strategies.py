"""How the packed sign words travel between workers, and where they are counted.

A :class:`Strategy` is what a user names with ``strategy=`` (and ``outer_strategy=``): the
:class:`Exchange` that carries one ``u32[W]`` ballot per worker across the voting axis, and whether
the devices of a host sum their updates first (``"hierarchical"``). Each exchange maps this worker's
buffer to the vote of all workers as bit planes, equal on every worker (and typed invariant over the
axis), together with counts of how every worker's ballot relates to the vote
(``ops.AgreementCounts``), from which the vote statistics follow.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp

from signvote_jax import axes
from signvote_jax import ops
from signvote_jax.layout import Ballot, WordLayout


class Tally(NamedTuple):
  """The vote of all workers, as returned by an exchange (equal on every worker)."""

  sign: jax.Array  # u32[W]: bit 1 where the vote is +1.
  nonzero: jax.Array  # u32[W]: bit 1 where the vote is not 0 (and a coordinate lives).
  counts: ops.AgreementCounts  # Of every worker's ballot against the vote, over all coordinates.
  nonfinite: jax.Array  # u32[M]: each worker's non-finite coordinates, as it reports them.


def _unpack_flags(words, size):
  """``u32[..., ceil(size / 32)]`` word flags from the wire to ``bool[..., size]`` (of ``ops.pack_bits``)."""
  return ops.packing.unpack_bits(words)[..., :size]


def _allgather(ballot, valid, axis_name, phase, impl) -> Tally:
  """Every worker gathers all M ballots and counts them itself.

  Receives ``(M - 1) (W + W / 32 + 1)`` words per worker: the bits, one flag a word for abstention,
  and the count of non-finite coordinates. A faulty sender cannot change anyone's count beyond its
  own ballot.
  """
  size = ballot.words.shape[0]
  payload = jnp.concatenate([ballot.words, ops.pack_bits(ballot.voting), ballot.nonfinite[None]])
  gathered = jax.lax.all_gather(payload, axis_name, to="invarying")
  words, voting = gathered[:, :size], _unpack_flags(gathered[:, size:-1], size)
  sign, nonzero = ops.vote_planes(words, valid, voting=voting, tie_phase=phase, impl=impl)
  return Tally(sign, nonzero, ops.agreement_counts(words, sign, nonzero, voting), gathered[:, -1])


def _alltoall(ballot, valid, axis_name, phase, impl) -> Tally:
  """Worker j votes shard j of every ballot, then the voted shards are gathered.

  The way out carries each shard's bits and its abstention flags (one bit a word): about
  ``(M - 1) / M * 33/32 W`` words per worker. For odd M the way back is the sign plane of the voted
  shard and one flag a word for the words nobody voted on (a tie among voters is broken by the
  step's parity, see ``ops.vote_planes``): in all about 1/31 of a float32 ring all-reduce, whatever
  M. For even M a tie must come back as 0, so the way back carries three states; they travel in
  base 3, 20 votes per word (1.6 bits per coordinate), about 1/24.3 of the all-reduce. The
  agreement counts of each shard (4 M words) and the sender's non-finite count ride along in the
  same gather, so a step has one all-to-all and one all-gather, both of uint32 words.
  """
  num_workers = axes.axis_size(axis_name, "alltoall")
  shard = ballot.words.shape[0] // num_workers
  out = jnp.concatenate([ballot.words.reshape(num_workers, shard),
                         ops.pack_bits(ballot.voting.reshape(num_workers, shard))], axis=1)
  # Row i of `received` is worker i's copy of the shard that this worker votes.
  received = jax.lax.all_to_all(out, axis_name, 0, 0)
  words, voting = received[:, :shard], _unpack_flags(received[:, shard:], shard)
  start = jax.lax.axis_index(axis_name) * shard
  valid_shard = jax.lax.dynamic_slice_in_dim(valid, start, shard)
  sign, nonzero = ops.vote_planes(words, valid_shard, voting=voting, tie_phase=phase, impl=impl)
  counts, unravel_counts = ravel_pytree(ops.agreement_counts(words, sign, nonzero, voting))
  ties_possible = num_workers % 2 == 0
  vote = (ops.pack_ternary(sign, nonzero) if ties_possible
          else jnp.concatenate([sign, ops.pack_bits(jnp.any(voting, axis=0))]))
  gathered = jax.lax.all_gather(jnp.concatenate([vote, counts, ballot.nonfinite[None]]), axis_name, to="invarying")
  votes = gathered[:, : vote.shape[0]]
  if ties_possible:
    sign, nonzero = ops.unpack_ternary(votes, shard)
    sign, nonzero = sign.reshape(-1), nonzero.reshape(-1)
  else:
    sign = votes[:, :shard].reshape(-1)
    decided = _unpack_flags(votes[:, shard:], shard).reshape(-1)
    nonzero = jnp.where(decided, valid, jnp.uint32(0))
  # Counts are sums over coordinates: those of the whole buffer add up from the shards'.
  counts = unravel_counts(jnp.sum(gathered[:, vote.shape[0] : -1], axis=0, dtype=jnp.uint32))
  return Tally(sign, nonzero, counts, gathered[:, -1])


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One ballot of ``u32[W]`` per worker across an axis, to the tally of all of them.

  Attributes:
    name: what users call it.
    sharded: whether ``W`` must split into one equal shard per worker.
    run: ``(ballot, valid, axis_name, phase, impl) -> Tally``, ``phase`` the step.
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
  """

  name: str
  exchange: Exchange
  hierarchical: bool = False

  def tally(self, leaves, axis_name, inner_axis_name, step, impl: str) -> tuple[WordLayout, Tally]:
    """The vote of ``leaves`` (this worker's update) over ``axis_name`` at ``step``, with its word layout."""
    num_ballots = axes.axis_size(axis_name, "scale_by_majority_vote")
    multiple = self.exchange.word_multiple(num_ballots)
    if not self.hierarchical:
      layout = WordLayout.of(leaves, multiple=multiple)
      ballot = layout.ballot(leaves, step + jax.lax.axis_index(axis_name), impl=impl)
      return layout, self.exchange.run(ballot, layout.valid_mask(), axis_name, step, impl)
    local = axes.axis_size(inner_axis_name, "hierarchical")
    layout = WordLayout.of(leaves, multiple=local * multiple)
    return layout, _hierarchical(layout, leaves, inner_axis_name, axis_name, self.exchange, step, impl)


def _hierarchical(layout, leaves, inner_axis_name, axis_name, exchange: Exchange, step, impl: str) -> Tally:
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
  ballot = Ballot(*ops.pack_ballot(mine, step + jax.lax.axis_index(axis_name), impl=impl))
  tally = exchange.run(ballot, valid, axis_name, step, impl)
  planes = jnp.stack([tally.sign, tally.nonzero])
  sign, nonzero = jax.lax.all_gather(planes, inner_axis_name, axis=1, tiled=True, to="invarying")
  counts, nonfinite = jax.lax.psum((tally.counts, tally.nonfinite), inner_axis_name)
  return Tally(sign, nonzero, counts, nonfinite)


STRATEGIES = ("allgather", "alltoall", "hierarchical")
OUTER_STRATEGIES = tuple(EXCHANGES)


def strategy(name: str, *, outer_strategy: str = "allgather", inner_axis_name=None, axis_name=None) -> Strategy:
  """The :class:`Strategy` a user names, or a ValueError that says what is wrong and what is valid."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; valid strategies are {STRATEGIES}.")
  if name != "hierarchical":
    if inner_axis_name is not None:
      raise ValueError(f"inner_axis_name is only used by strategy='hierarchical', not {name!r}.")
    return Strategy(name, EXCHANGES[name])
  if axis_name is None or inner_axis_name is None:
    raise ValueError(
        "strategy='hierarchical' needs axis_name (the hosts' axis) and inner_axis_name (the axis "
        f"of the devices in a host); got axis_name={axis_name!r}, inner_axis_name={inner_axis_name!r}."
    )
  if outer_strategy not in OUTER_STRATEGIES:
    raise ValueError(f"Unknown outer_strategy {outer_strategy!r}; valid ones are {OUTER_STRATEGIES}.")
  return Strategy(name, EXCHANGES[outer_strategy], hierarchical=True)
