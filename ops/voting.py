"""Majority vote over the packed signs of M workers."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import dispatch
from . import packing

_ALL_BITS = 0xFFFFFFFF


def vote_planes(words: jax.Array, valid: jax.Array | None = None, *, impl: str = "auto"):
  """Votes ``u32[M, W]`` (row m: worker m's packed signs) into two bit planes.

  With ``c`` the number of workers whose bit is 1, the vote is ``sign(2c - M)``. It is returned as
  a *sign* plane (bit 1 where ``2c > M``) and a *non-zero* plane (bit 1 where ``2c != M``; a tie,
  possible only for even M, has non-zero bit 0 and means a vote of 0).

  Args:
    words: ``u32[M, W]``, the packed signs of M workers.
    valid: optional ``u32[W]`` mask of the bits that hold coordinates; the non-zero plane is
      and-ed with it so that padding bits never count as votes.
    impl: ``"auto"``, ``"jax"`` or ``"triton"``.

  Returns:
    ``(sign, nonzero)``, each ``u32[W]``.

  >>> import jax.numpy as jnp
  >>> from signvote_jax.ops import decode_planes, pack_signs
  >>> ballots = jnp.stack([pack_signs(jnp.array(v)) for v in ([1., 1., -1.], [1., -1., -1.])])
  >>> decode_planes(*vote_planes(ballots), 3, jnp.float32).tolist()  # two workers: a split gives 0
  [1.0, 0.0, -1.0]
  """
  sign, nonzero = dispatch.call(impl, _vote_planes_jax, _vote_planes_triton, words)
  if valid is not None:
    nonzero = nonzero & valid
  return sign, nonzero


def _vote_planes_jax(words):
  """The vote from bit-sliced counts: no coordinate is ever unpacked from its word.

  Plane k of the count holds bit k of every coordinate's ``c``, so adding a ballot is a ripple of
  XOR and AND over whole words, and ``2c > M`` is a comparison of those planes with a constant:
  about 2 log2(M) word operations per ballot word where unpacking takes 32 per ballot.
  """
  num_workers = words.shape[0]
  count = _bit_sliced_count(words)
  sign = _at_least(count, num_workers // 2 + 1)
  if num_workers % 2:
    return sign, jnp.full_like(sign, _ALL_BITS)
  return sign, ~_equals(count, num_workers // 2)


def _vote_planes_triton(words):
  from . import triton_kernels  # pylint: disable=import-outside-toplevel

  return tuple(triton_kernels.vote_planes(words))


def _bit_sliced_count(words):
  """``u32[M, W]`` to the bits of each position's count of 1 bits: planes ``u32[W]``, least significant first.

  A loop over the ballots, deliberately not unrolled: XLA fuses an unrolled count into every
  consumer of the planes and recomputes it there (once per ballot row in the agreement counts,
  once per bit when the vote is decoded); a loop's result is computed once.
  """
  width = words.shape[0].bit_length()

  def add_ballot(count, ballot):
    carry, out = ballot, []
    for plane in count:
      out.append(plane ^ carry)
      carry = plane & carry
    return tuple(out), None

  zero = jnp.zeros_like(words[0])  # Typed like the ballots (varying or not inside shard_map).
  return list(jax.lax.scan(add_ballot, (zero,) * width, words)[0])


def _at_least(count, threshold: int):
  """Bit 1 where the bit-sliced ``count`` is at least the constant ``threshold`` (< 2 ** len(count))."""
  greater, equal = jnp.zeros_like(count[0]), jnp.full_like(count[0], _ALL_BITS)
  for k in reversed(range(len(count))):  # From the most significant bit down.
    if (threshold >> k) & 1:
      equal = equal & count[k]
    else:
      greater, equal = greater | (equal & count[k]), equal & ~count[k]
  return greater | equal


def _equals(count, value: int):
  """Bit 1 where the bit-sliced ``count`` equals the constant ``value``."""
  equal = jnp.full_like(count[0], _ALL_BITS)
  for k, plane in enumerate(count):
    equal = equal & (plane if (value >> k) & 1 else ~plane)
  return equal


def decode_planes(sign: jax.Array, nonzero: jax.Array, size: int, dtype) -> jax.Array:
  """Sign and non-zero planes ``u32[W]`` to ``size`` votes in {-1, 0, +1} of ``dtype``."""
  positive = packing.unpack_bits(sign)[:size]
  nonzero_bits = packing.unpack_bits(nonzero)[:size]
  return jnp.where(nonzero_bits, jnp.where(positive, 1, -1), 0).astype(dtype)


class AgreementCounts(NamedTuple):
  """Counts over the non-tied coordinates of a vote, from which the vote statistics follow.

  Every field is a sum over coordinates, so the counts of disjoint shards add up to those of the
  whole buffer.
  """

  agree: jax.Array  # u32[M]: per worker, coordinates where its sign equals the vote.
  positive: jax.Array  # u32[M]: per worker, coordinates where it voted +1.
  vote_positive: jax.Array  # u32[]: coordinates where the vote is +1.
  total: jax.Array  # u32[]: non-tied coordinates.


def agreement_counts(words: jax.Array, sign: jax.Array, nonzero: jax.Array) -> AgreementCounts:
  """Counts, for each of M workers, how its ballot relates to the vote on the non-tied coordinates.

  Args:
    words: ``u32[M, W]`` ballots.
    sign, nonzero: ``u32[W]`` planes of the vote (``nonzero`` already masked to valid bits).

  Returns:
    An :class:`AgreementCounts`.
  """

  def count(bits):
    return jnp.sum(jax.lax.population_count(bits), axis=-1, dtype=jnp.uint32)

  return AgreementCounts(
      agree=count(~(words ^ sign) & nonzero),
      positive=count(words & nonzero),
      vote_positive=count(sign & nonzero),
      total=count(nonzero),
  )
