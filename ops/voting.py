"""Majority vote over the packed signs of M workers."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ops import dispatch
from ops import packing


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
  """
  if dispatch.resolve_impl(impl) == "triton":
    from ops import triton_kernels  # pylint: disable=import-outside-toplevel

    sign, nonzero = triton_kernels.vote_planes(words)
  else:
    sign, nonzero = _vote_planes_jax(words)
  if valid is not None:
    nonzero = nonzero & valid
  return sign, nonzero


def _vote_planes_jax(words):
  num_workers = words.shape[0]
  counts = jnp.sum(packing.unpack_bits(words), axis=0, dtype=jnp.int32)
  margin = 2 * counts - num_workers
  return packing.pack_bits(margin > 0), packing.pack_bits(margin != 0)


def decode_planes(sign: jax.Array, nonzero: jax.Array, size: int, dtype) -> jax.Array:
  """Sign and non-zero planes ``u32[W]`` to ``size`` votes in {-1, 0, +1} of ``dtype``."""
  positive = packing.unpack_bits(sign)[:size]
  nonzero_bits = packing.unpack_bits(nonzero)[:size]
  return jnp.where(nonzero_bits, jnp.where(positive, 1, -1), 0).astype(dtype)


def vote(words: jax.Array, size: int, dtype=jnp.float32, *, impl: str = "auto") -> jax.Array:
  """Majority vote of ``u32[M, W]`` as ``size`` values ``sign(2c - M)`` in {-1, 0, +1}.

  >>> import jax.numpy as jnp
  >>> from ops.packing import pack_signs
  >>> ballots = jnp.stack([pack_signs(jnp.array(v)) for v in ([1., 1., -1.], [1., -1., -1.])])
  >>> vote(ballots, 3).tolist()  # two workers: agreement gives +-1, a split gives 0
  [1.0, 0.0, -1.0]
  """
  if dispatch.resolve_impl(impl) == "triton":
    from ops import triton_kernels  # pylint: disable=import-outside-toplevel

    return triton_kernels.vote(words, size, dtype)
  return decode_planes(*_vote_planes_jax(words), size, dtype)


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
