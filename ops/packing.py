"""Packing the signs of a float array into uint32 words, and back."""

import jax
import jax.numpy as jnp
import numpy as np

from . import dispatch

BITS = 32
_SHIFTS = np.arange(BITS, dtype=np.uint32)


def num_words(size: int) -> int:
  """Number of uint32 words that hold ``size`` sign bits."""
  return -(-size // BITS)


def pack_signs(x: jax.Array, *, impl: str = "auto") -> jax.Array:
  """Packs the signs of ``x`` (any shape, floating) into ``u32[ceil(x.size / 32)]``.

  Flat coordinate ``i`` goes to word ``i // 32``, bit ``i % 32``; the bit is 1 where ``x >= 0``
  (including -0.0) and 0 where ``x < 0`` or NaN. Padding bits of the last word are 0.

  >>> import jax.numpy as jnp
  >>> hex(int(pack_signs(jnp.array([1.0, -2.0, -0.0, jnp.nan]))[0]))
  '0x5'
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"pack_signs needs a floating array, got dtype {x.dtype}.")
  return dispatch.call(impl, _pack_signs_jax, _pack_signs_triton, x)


def _pack_signs_jax(x):
  return pack_bits(jnp.ravel(x) >= 0)


def _pack_signs_triton(x):
  from . import triton_kernels  # pylint: disable=import-outside-toplevel

  return triton_kernels.pack_signs(x)


def filler_word(phase) -> jax.Array:
  """``u32[]`` with bit ``b`` set where ``(phase + b) % 2 == 1``: as many ones as zeros.

  What a worker sends where it has nothing to say inside a word it votes on (``phase`` = step +
  worker), and how an odd number of workers break a tie among the voters (``phase`` = step).
  """
  return jnp.where(jnp.asarray(phase) % 2 == 0, jnp.uint32(0xAAAAAAAA), jnp.uint32(0x55555555))


def pack_ballot(x: jax.Array, phase, *, impl: str = "auto"):
  """A worker's ballot of ``x`` (any shape, floating): ``(words, voting, nonfinite)``.

  A coordinate has something to say where it is finite and not zero. The worker votes on a word of
  32 coordinates where at least one of them has something to say, and abstains on the whole word
  otherwise (``voting``, one flag a word). Inside a word it votes on, the bit of a coordinate is
  its sign (1 for +1), and the filler bit of :func:`filler_word` where it has nothing to say, so that
  zeros and non-finite values never lean the vote either way.

  Args:
    x: the values.
    phase: the filler's phase, step + worker index (a traced integer is fine).
    impl: of the sign packing.

  Returns:
    ``words`` ``u32[ceil(n / 32)]``, ``voting`` ``bool[ceil(n / 32)]`` and ``nonfinite``, ``u32[]``,
    the number of non-finite coordinates.

  >>> import jax.numpy as jnp
  >>> words, voting, nonfinite = pack_ballot(jnp.array([2.0, 0.0, -1.0, jnp.nan]), phase=0)
  >>> hex(int(words[0])), voting.tolist(), int(nonfinite)  # bits: +1, filler 1, -1, filler 1
  ('0xb', [True], 1)
  >>> pack_ballot(jnp.zeros(40), phase=0)[1].tolist()  # nothing to say: abstains on both words
  [False, False]
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"pack_ballot needs a floating array, got dtype {x.dtype}.")
  flat = jnp.ravel(x)
  size = flat.shape[0]
  say = jnp.isfinite(flat) & (flat != 0)
  filler = unpack_bits(jnp.broadcast_to(filler_word(phase), (num_words(size),)))[:size]
  one = jnp.ones((), flat.dtype)
  # Values with no zero and no NaN left, so that pack_signs (v >= 0) stores exactly the ballot's bits.
  signed = jnp.where(say, flat, jnp.where(filler, one, -one))
  voting = jnp.any(jnp.pad(say, (0, num_words(size) * BITS - size)).reshape(-1, BITS), axis=1)
  nonfinite = jnp.sum(~jnp.isfinite(flat), dtype=jnp.uint32)
  return pack_signs(signed, impl=impl), voting, nonfinite


def pack_bits(bits: jax.Array) -> jax.Array:
  """Packs booleans ``[..., S]`` into ``u32[..., ceil(S / 32)]`` words, least significant bit first."""
  size = bits.shape[-1]
  return pack_bit_rows(jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, num_words(size) * BITS - size)]))


def unpack_bits(words: jax.Array) -> jax.Array:
  """``u32[..., W]`` to ``bool[..., 32 * W]``, least significant bit first."""
  bits = (words[..., None] >> _SHIFTS) & jnp.uint32(1)
  return bits.reshape(*words.shape[:-1], words.shape[-1] * BITS).astype(jnp.bool_)


def unpack_signs(words: jax.Array, size: int, dtype=jnp.float32) -> jax.Array:
  """Inverse of :func:`pack_signs`: ``u32[W]`` to ``size`` signs (+1 or -1) in ``dtype``.

  >>> import jax.numpy as jnp
  >>> unpack_signs(jnp.array([5], jnp.uint32), 4).tolist()
  [1.0, -1.0, 1.0, -1.0]
  """
  if size > words.shape[-1] * BITS:
    raise ValueError(f"{words.shape[-1]} words hold at most {words.shape[-1] * BITS} signs, not {size}.")
  bits = unpack_bits(words)[..., :size]
  return jnp.where(bits, 1, -1).astype(dtype)


TRITS = 20  # Base-3 digits per uint32 word: 3**20 - 1 < 2**32.
_POWERS_OF_3 = 3 ** np.arange(TRITS, dtype=np.uint32)


def num_trit_words(plane_words: int) -> int:
  """Number of uint32 words that hold the ternary votes of ``plane_words`` words of coordinates."""
  return -(-plane_words * BITS // TRITS)


def pack_ternary(sign: jax.Array, nonzero: jax.Array) -> jax.Array:
  """Packs a vote given as bit planes, ``u32[W]`` each, into base-3 words, 20 votes per word.

  Coordinate ``i`` (word ``i // 32``, bit ``i % 32`` of the planes) becomes digit ``i % 20`` of word
  ``i // 20``: 0 for a tie (or padding), 1 for -1, 2 for +1. Three states need log2(3) = 1.58 bits,
  so this is 1.6 bits per coordinate where two bit planes take 2.

  >>> import jax.numpy as jnp
  >>> # Coordinates 0, 1, 2: +1, -1, tie.
  >>> int(pack_ternary(jnp.array([1], jnp.uint32), jnp.array([3], jnp.uint32))[0]) == 2 + 1 * 3
  True
  """
  if sign.shape != nonzero.shape or sign.ndim != 1:
    raise ValueError(f"pack_ternary needs two flat planes of one shape, got {sign.shape} and {nonzero.shape}.")
  nonzero_bits = unpack_bits(nonzero).astype(jnp.uint32)
  digits = nonzero_bits * (1 + unpack_bits(sign).astype(jnp.uint32))
  size = digits.shape[0]
  digits = jnp.pad(digits, (0, num_trit_words(sign.shape[0]) * TRITS - size))
  # No carry between digits: the largest word is 3**20 - 1.
  return jnp.sum(digits.reshape(-1, TRITS) * _POWERS_OF_3, axis=-1, dtype=jnp.uint32)


def unpack_ternary(words: jax.Array, plane_words: int):
  """Inverse of :func:`pack_ternary`: ``u32[..., T]`` to ``(sign, nonzero)`` planes ``u32[..., plane_words]``."""
  if words.shape[-1] != num_trit_words(plane_words):
    raise ValueError(f"{plane_words} words of votes travel as {num_trit_words(plane_words)} base-3 words, "
                     f"got {words.shape[-1]}.")
  digits = []
  rest = words
  for _ in range(TRITS):
    digits.append((rest % 3).astype(jnp.uint8))
    rest = rest // 3
  digits = jnp.stack(digits, axis=-1).reshape(*words.shape[:-1], -1)[..., : plane_words * BITS]
  return pack_bit_rows(digits == 2), pack_bit_rows(digits != 0)


def pack_bit_rows(bits: jax.Array) -> jax.Array:
  """``bool[..., 32 * W]`` to ``u32[..., W]``, least significant bit first (inverse of :func:`unpack_bits`)."""
  words = bits.reshape(*bits.shape[:-1], -1, BITS).astype(jnp.uint32) << _SHIFTS
  # The shifted bits never overlap, so their sum is their bitwise or.
  return jnp.sum(words, axis=-1, dtype=jnp.uint32)
