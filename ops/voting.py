"""Majority vote over the packed signs of M workers."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import dispatch
from . import packing

_ALL_BITS = 0xFFFFFFFF


def vote_planes(words: jax.Array, valid: jax.Array | None = None, *, voting: jax.Array | None = None,
                tie_phase=0, impl: str = "auto"):
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


def majority(rows: jax.Array, *, impl: str = "auto") -> jax.Array:
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
  """The vote from bit-sliced counts: no coordinate is ever unpacked from its word.

  Plane k of a count holds bit k of every coordinate's count, so adding a ballot is a ripple of XOR
  and AND over whole words, and comparing 2P with the number of voters V (the same for all 32
  coordinates of a word) is a comparison of planes: about 2 log2(M) word operations per ballot word
  where unpacking takes 32 per ballot.
  """
  num_workers = words.shape[0]
  masks = jnp.where(voting, jnp.uint32(_ALL_BITS), jnp.uint32(0))
  plus = _bit_sliced_count(words & masks)
  voters = jnp.sum(voting, axis=0, dtype=jnp.uint32)
  voter_planes = [_broadcast_bit(voters, k) for k in range(num_workers.bit_length())]
  greater, equal = _compare([jnp.zeros_like(plus[0])] + plus, voter_planes)  # 2P against V.
  if num_workers % 2 == 0:
    return greater, ~equal
  anyone = jnp.where(voters > 0, jnp.uint32(_ALL_BITS), jnp.uint32(0))
  return greater | (equal & anyone & packing.filler_word(tie_phase)), anyone


def _vote_planes_triton(words, voting, tie_phase):
  from . import triton_kernels  # pylint: disable=import-outside-toplevel

  return tuple(triton_kernels.vote_planes(words, voting, tie_phase))


def _broadcast_bit(value, k):
  """``u32[W]``: all 32 bits set where bit ``k`` of ``value[w]`` is 1."""
  return jnp.where((value >> k) & 1, jnp.uint32(_ALL_BITS), jnp.uint32(0))


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


def _compare(a, b):
  """Bit planes of ``a > b`` and ``a == b`` for bit-sliced ``a`` and ``b`` (least significant plane first)."""
  zero = jnp.zeros_like(a[0])
  width = max(len(a), len(b))
  a, b = a + [zero] * (width - len(a)), b + [zero] * (width - len(b))
  greater, equal = zero, jnp.full_like(zero, _ALL_BITS)
  for k in reversed(range(width)):  # From the most significant bit down.
    greater = greater | (equal & a[k] & ~b[k])
    equal = equal & ~(a[k] ^ b[k])
  return greater, equal


def decode_planes(sign: jax.Array, nonzero: jax.Array, size: int, dtype) -> jax.Array:
  """Sign and non-zero planes ``u32[W]`` to ``size`` votes in {-1, 0, +1} of ``dtype``."""
  positive = packing.unpack_bits(sign)[:size]
  nonzero_bits = packing.unpack_bits(nonzero)[:size]
  return jnp.where(nonzero_bits, jnp.where(positive, 1, -1), 0).astype(dtype)


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

  def count(bits):
    return jnp.sum(jax.lax.population_count(bits), axis=-1, dtype=jnp.uint32)

  counted = nonzero if voting is None else jnp.where(voting, nonzero, jnp.uint32(0))
  return AgreementCounts(
      agree=count(~(words ^ sign) & counted),
      positive=count(words & counted),
      vote_positive=count(sign & counted),
      total=count(jnp.broadcast_to(counted, words.shape)),
  )
