"""Majority vote over the packed signs of M workers."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import dispatch
from . import packing
from .dispatch import Impl

_ALL_BITS = 0xFFFFFFFF


def vote_planes(words: jax.Array, valid: jax.Array | None = None, *, voting: jax.Array | None = None,
                tie_phase=0, impl: Impl = "auto"):
  """Votes ``u32[M, W]`` (row m: worker m's ballot) into two bit planes.

  With P and N the numbers of workers voting on a coordinate's word whose bit is 1 and 0, the vote
  is ``sign(P - N)``: 0 where no worker votes. A tie among the voters is 0 for even M; for odd M it is
  broken by :func:`ops.packing.filler_word` of ``tie_phase`` (+1 where its bit is 1), as the way
  back of ``alltoall`` has one bit per coordinate for odd M. Without abstentions this is
  ``sign(2c - M)`` with c the count of 1 bits, and a tie is possible only for even M.

  The vote is returned as a *sign* plane (bit 1 where it is +1) and a *non-zero* plane (bit 1 where
  it is not 0).

  Args:
    words: ``u32[M, W]``, the packed ballots of M workers.
    valid: optional ``u32[W]`` mask of the bits that hold coordinates; the non-zero plane is
      and-ed with it so that padding bits never count as votes.
    voting: optional ``bool[M, W]``: whether worker m votes on word w (all of them if None).
    tie_phase: an integer (the step), for odd M only.
    impl: ``"auto"``, ``"jax"`` or ``"triton"``.

  Returns:
    ``(sign, nonzero)``, each ``u32[W]``.

  >>> import jax.numpy as jnp
  >>> from signvote_jax.ops import decode_planes, pack_signs
  >>> ballots = jnp.stack([pack_signs(jnp.array(v)) for v in ([1., 1., -1.], [1., -1., -1.])])
  >>> decode_planes(*vote_planes(ballots), 3, jnp.float32).tolist()  # two workers: a split gives 0
  [1.0, 0.0, -1.0]
  >>> voting = jnp.array([[True], [False]])  # worker 1 abstains: worker 0 decides alone
  >>> decode_planes(*vote_planes(ballots, voting=voting), 3, jnp.float32).tolist()
  [1.0, 1.0, -1.0]
  """
  if voting is None:
    voting = jnp.ones(words.shape, jnp.bool_)
  if voting.shape != words.shape:
    raise ValueError(f"voting must be one flag per ballot word, shape {words.shape}; got {voting.shape}.")
  tie_phase = jnp.asarray(tie_phase, jnp.int32)
  sign, nonzero = dispatch.call(impl, _vote_planes_jax, _vote_planes_triton, words, voting, tie_phase)
  if valid is not None:
    nonzero = nonzero & valid
  return sign, nonzero


def majority(rows: jax.Array, *, impl: Impl = "auto") -> jax.Array:
  """``u32[W]``: bit 1 where more than half of the rows of ``u32[R, W]`` (R odd) have a 1.

  The vote of R ballots that all vote (no tie is possible for odd R). Per coordinate, the median of
  R values in {-1, 0, +1} is +1 where the majority of the "is +1" planes says so, -1 where the
  majority of the "is -1" planes does, and 0 otherwise.

  >>> import jax.numpy as jnp
  >>> int(majority(jnp.array([0b011, 0b110, 0b101], jnp.uint32))[()])  # each bit is 1 in two rows of three
  7
  """
  if rows.shape[0] % 2 == 0:
    raise ValueError(f"majority needs an odd number of rows, got {rows.shape[0]}.")
  return vote_planes(rows.reshape(rows.shape[0], -1), impl=impl)[0].reshape(rows.shape[1:])


def _vote_planes_jax(words, voting, tie_phase):
  """The vote as a reduction over the ballots of bit-sliced counts: no coordinate is unpacked.

  Ballot m adds +1 (a 1 bit where it votes), -1 (a 0 bit where it votes) or 0 (where it abstains) to
  each coordinate's margin P - N. The margins live in K = bit_length(M) + 1 planes of two's
  complement: plane k holds bit k of all 32 margins of a word, so adding two ballots' margins is a
  ripple of XOR, AND and OR over whole words, about 5 K word operations. The sign of the margin is
  its top plane and "not 0" the OR of the planes. For odd M a last plane ORs the voting masks
  ("anyone voted"), which tells a tie from a word nobody voted on.

  Written as one ``lax.reduce`` over the ballots, its code does not grow with M, and XLA computes it
  once: a reduction is never recomputed in the passes that read its result (decoding reads each
  plane word 32 times).
  """
  num_workers = words.shape[0]
  width = num_workers.bit_length() + 1
  masks = jnp.where(voting, jnp.uint32(_ALL_BITS), jnp.uint32(0))
  against = masks & ~words  # -1 in two's complement: every plane 1.
  odd = num_workers % 2 == 1
  planes = (masks,) + (against,) * (width - 1) + ((masks,) if odd else ())

  margin = jax.lax.reduce(planes, (jnp.uint32(0),) * len(planes), _margin_adder(width, odd), (0,))
  nonzero = functools.reduce(jnp.bitwise_or, margin[:width])
  positive = ~margin[width - 1] & nonzero
  if not odd:
    return positive, nonzero
  anyone = margin[width]
  return positive | (~nonzero & anyone & packing.filler_word(tie_phase)), anyone


@functools.cache
def _margin_adder(width: int, odd: bool):
  """The combiner that adds two bit-sliced margins of ``width`` planes (and ORs the "anyone voted"
  plane for odd M); one function object per shape, which JAX traces once."""

  def add(a, b):
    out, carry = [a[0] ^ b[0]], a[0] & b[0]
    for k in range(1, width):
      half = a[k] ^ b[k]
      out.append(half ^ carry)
      carry = (a[k] & b[k]) | (carry & half)
    return tuple(out) + ((a[width] | b[width],) if odd else ())

  return add


def _vote_planes_triton(words, voting, tie_phase):
  from . import triton_kernels  # pylint: disable=import-outside-toplevel

  return tuple(triton_kernels.vote_planes(words, voting, tie_phase))


def decode_planes(sign: jax.Array, nonzero: jax.Array, size: int, dtype) -> jax.Array:
  """Sign and non-zero planes ``u32[W]`` to ``size`` votes in {-1, 0, +1} of ``dtype``.

  Each vote is its "is +1" bit less its "is -1" bit (``lax`` operations: decoding runs once per
  leaf, and what jnp would add around them is lowering time multiplied by the leaves).
  """
  def bits(plane):
    return jax.lax.ne(packing.unpack_words(plane), jnp.uint32(0)).astype(dtype)

  votes = bits(sign & nonzero) - bits(~sign & nonzero)
  return votes.reshape(-1)[:size]


class AgreementCounts(NamedTuple):
  """Per worker, counts over the coordinates where the vote is not 0 and the worker voted.

  Every field is a sum over coordinates, so the counts of disjoint shards add up to those of the
  whole buffer.
  """

  agree: jax.Array  # u32[M]: coordinates where its sign equals the vote.
  positive: jax.Array  # u32[M]: coordinates where it sent +1.
  vote_positive: jax.Array  # u32[M]: coordinates where the vote is +1.
  total: jax.Array  # u32[M]: coordinates counted (0: it abstained wherever the vote was not 0).


def agreement_counts(words: jax.Array, sign: jax.Array, nonzero: jax.Array,
                     voting: jax.Array | None = None) -> AgreementCounts:
  """Counts, for each of M workers, how its ballot relates to the vote where it voted.

  Args:
    words: ``u32[M, W]`` ballots.
    sign, nonzero: ``u32[W]`` planes of the vote (``nonzero`` already masked to valid bits).
    voting: optional ``bool[M, W]``, whether worker m voted on word w (all of them if None).

  Returns:
    An :class:`AgreementCounts`.
  """
  counted = nonzero if voting is None else jnp.where(voting, nonzero, jnp.uint32(0))
  counted = jnp.broadcast_to(counted, words.shape)
  fields = (~(words ^ sign) & counted, words & counted, jnp.broadcast_to(sign, words.shape) & counted, counted)
  # One pass over the ballots for the four counts (a variadic reduction): XLA:CPU is 40x slower
  # with a separate sum of population counts for each.
  sums = jax.lax.reduce(tuple(jax.lax.population_count(f) for f in fields), (jnp.uint32(0),) * 4,
                        packing.add_each, (words.ndim - 1,))
  return AgreementCounts(*sums)
