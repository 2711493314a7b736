"""How the packed sign words travel between workers, and where they are counted.

Each strategy maps this worker's ``u32[W]`` buffer to the vote of all workers as bit planes, equal on
every worker (and typed invariant over the axis), together with counts of how every worker's ballot
relates to the vote (``ops.AgreementCounts``), from which the vote statistics follow. ``W`` is a
multiple of the worker count where a strategy needs it.
"""

from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp

from signvote_jax import ops
from signvote_jax import axes


class Tally(NamedTuple):
  """The vote of all workers, as returned by a strategy (equal on every worker)."""

  sign: jax.Array  # u32[W]: bit 1 where the vote is +1.
  nonzero: jax.Array  # u32[W]: bit 1 where the vote is not a tie (and a coordinate lives).
  counts: ops.AgreementCounts  # Of every worker's ballot against the vote, over all coordinates.


def allgather(words, valid, axis_name, num_workers: int, impl: str) -> Tally:
  """Every worker gathers all M ballots and counts them itself.

  Receives ``(M - 1) * W`` words per worker. A faulty sender cannot change anyone's count beyond its
  own ballot.
  """
  del num_workers  # The gather brings every ballot.
  ballots = jax.lax.all_gather(words, axis_name, to="invarying")
  sign, nonzero = ops.vote_planes(ballots, valid, impl=impl)
  return Tally(sign, nonzero, ops.agreement_counts(ballots, sign, nonzero))


def alltoall(words, valid, axis_name, num_workers: int, impl: str) -> Tally:
  """Worker j votes shard j of every ballot, then the voted shards are gathered.

  About ``2 (M - 1) / M * W`` words per worker for odd M, whatever M: 1/32 of a float32 ring
  all-reduce. For even M a tie must come back as 0, so the way back carries three states; they
  travel in base 3, 20 votes per word (1.6 bits per coordinate where a sign plane and a non-zero
  plane would take 2), about 1/25 of the all-reduce. The agreement counts of each shard (2 M + 2
  words) ride along in the same gather, so a step has one all-to-all and one all-gather, both of
  uint32 words.
  """
  shard = words.shape[0] // num_workers
  # Row i of `received` is worker i's copy of the shard that this worker votes.
  received = jax.lax.all_to_all(words.reshape(num_workers, shard), axis_name, 0, 0)
  start = jax.lax.axis_index(axis_name) * shard
  sign, nonzero = ops.vote_planes(received, jax.lax.dynamic_slice_in_dim(valid, start, shard), impl=impl)
  counts, unravel_counts = ravel_pytree(ops.agreement_counts(received, sign, nonzero))
  ties_possible = num_workers % 2 == 0
  vote = ops.pack_ternary(sign, nonzero) if ties_possible else sign
  payload = jnp.concatenate([vote, counts])
  gathered = jax.lax.all_gather(payload, axis_name, to="invarying")
  votes = gathered[:, : vote.shape[0]]
  if ties_possible:
    sign, nonzero = ops.unpack_ternary(votes, shard)
    sign, nonzero = sign.reshape(-1), nonzero.reshape(-1)
  else:
    sign, nonzero = votes.reshape(-1), valid
  # Counts are sums over coordinates: those of the whole buffer add up from the shards'.
  counts = unravel_counts(jnp.sum(gathered[:, vote.shape[0] :], axis=0, dtype=jnp.uint32))
  return Tally(sign, nonzero, counts)


def hierarchical(layout, leaves, inner_axis_name, axis_name, num_hosts: int, exchange, impl: str) -> Tally:
  """Sums the updates inside each host, then votes the hosts' signs across hosts with ``exchange``.

  The G devices of a host split the work: a reduce-scatter over ``inner_axis_name`` (the fast local
  link) leaves device g with the host's float32 sum of slice g of the word layout; device g packs that
  slice and votes it with device g of every other host; an all-gather of the voted bit planes inside
  the host brings back the whole vote. Each host thus sends one vote's worth of words over the slow
  network, not G, and the local link carries half of a float all-reduce.
  """
  local = axes.axis_size(inner_axis_name, "hierarchical")
  slice_words = layout.padded_words // local
  mine = jax.lax.psum_scatter(layout.floats(leaves), inner_axis_name, scatter_dimension=0, tiled=True)
  start = jax.lax.axis_index(inner_axis_name) * slice_words
  valid = jax.lax.dynamic_slice_in_dim(layout.valid_mask(), start, slice_words)
  tally = exchange(ops.pack_signs(mine, impl=impl), valid, axis_name, num_hosts, impl)
  planes = jnp.stack([tally.sign, tally.nonzero])
  sign, nonzero = jax.lax.all_gather(planes, inner_axis_name, axis=1, tiled=True, to="invarying")
  return Tally(sign, nonzero, jax.lax.psum(tally.counts, inner_axis_name))


EXCHANGES = {"allgather": allgather, "alltoall": alltoall}
# Strategies that need the buffer to split evenly into one shard per worker.
SHARDED = frozenset({"alltoall"})
