"""Packing the signs of a float array into uint32 words, and back."""

import jax
import jax.numpy as jnp
import numpy as np

from . import dispatch

BITS = 32
_ALL_BITS = 0xFFFFFFFF
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


def pack_ballot(x: jax.Array, phase):
  """A worker's ballot of ``x`` (any shape, floating): ``(words, voting, nonfinite)``.

  A coordinate has something to say where it is finite and not zero. The worker votes on a word of
  32 coordinates where at least one of them has something to say, and abstains on the whole word
  otherwise (``voting``, one flag a word). Inside a word it votes on, the bit of a coordinate is
  its sign (1 for +1), and the filler bit of :func:`filler_word` where it has nothing to say, so that
  zeros and non-finite values never lean the vote either way. Padding bits of the last word are 0.

  One pass over ``x``: a reduction over each row of 32 coordinates builds the sign bits, the
  "has something to say" bits and the non-finite bits of the word together (a variadic reduce), and
  everything else works on words. Inside a jit, XLA fuses whatever computes ``x`` into that pass,
  which is why there is no Triton twin: a custom kernel would need ``x`` written out first.

  Args:
    x: the values.
    phase: the filler's phase, step + worker index (a traced integer is fine).

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
  finite = jnp.isfinite(flat)
  positive, says, nonfinite = _word_rows(flat > 0, finite & (flat != 0), ~finite)
  filler = filler_word(phase) & _word_masks(size)
  words = (positive & says) | (filler & ~says)
  return words, says != 0, _popcount_sum(nonfinite)


def _word_rows(*planes):
  """``pack_bits`` of flat planes, with the whole words read in place and only the last, partial
  word padded: XLA does not fuse a pad into the reduction, and would write the padded input out."""
  size = planes[0].shape[0]
  whole = size // BITS * BITS
  parts = []
  if whole:
    parts.append(_as_tuple(pack_bit_rows(*(p[:whole] for p in planes))))
  if whole < size:
    parts.append(_as_tuple(pack_bit_rows(*(jnp.pad(p[whole:], (0, BITS - (size - whole))) for p in planes))))
  if not parts:  # An empty leaf has no words.
    parts.append(tuple(jnp.zeros((0,), jnp.uint32) for _ in planes))
  words = parts[0] if len(parts) == 1 else tuple(jnp.concatenate(w) for w in zip(*parts))
  return words if len(planes) > 1 else words[0]


def _as_tuple(words):
  return words if isinstance(words, tuple) else (words,)


def count_nonfinite(x: jax.Array) -> jax.Array:
  """``u32[]``: how many coordinates of ``x`` are NaN or +-Inf.

  Counted a word at a time (the bits of 32 coordinates, then their population count): XLA:CPU
  turns one wide integer sum into a tree of passes over an integer per coordinate, 4x slower.

  >>> import jax.numpy as jnp
  >>> int(count_nonfinite(jnp.array([1.0, jnp.nan, -jnp.inf, 0.0])))
  2
  """
  return _popcount_sum(_word_rows(~jnp.isfinite(jnp.ravel(x))))


def _popcount_sum(words: jax.Array) -> jax.Array:
  return jnp.sum(jax.lax.population_count(words), dtype=jnp.uint32)


def _word_masks(size: int) -> jax.Array:
  """``u32[ceil(size / 32)]``: the bits of each word that hold one of ``size`` coordinates."""
  words, tail = num_words(size), size % BITS
  if not tail:
    return jnp.full((words,), _ALL_BITS, jnp.uint32)
  return jnp.where(jnp.arange(words) == words - 1, jnp.uint32((1 << tail) - 1), jnp.uint32(_ALL_BITS))


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
# The codec works on groups of 5 digits (3**5 = 243 values), 4 groups a word, each group mapped to
# or from its 5 coordinates' bits by a table, and on blocks of 160 coordinates: 5 plane words,
# 8 base-3 words. No coordinate is handled on its own.
_GROUP, _GROUPS_PER_WORD, _BLOCK_PLANES, _BLOCK_TRITS = 5, 4, 5, 8
_GROUP_BASE = 3**_GROUP


def _group_tables():
  """``value[pos | nonzero << 5]``: the base-3 number of 5 votes given as bits (0 tie, 1 for -1, 2 for
  +1 per digit); ``bits[value]``: the inverse, as ``pos | nonzero << 5``."""
  codes = np.arange(1 << (2 * _GROUP))
  positive, nonzero = codes & 31, codes >> _GROUP
  value = np.zeros(codes.size, np.uint32)
  bits = np.zeros(_GROUP_BASE, np.uint32)
  for k in range(_GROUP):
    digit = ((nonzero >> k) & 1) * (1 + ((positive >> k) & 1))
    value += (digit * 3**k).astype(np.uint32)
  for v in range(_GROUP_BASE):
    digits = [(v // 3**k) % 3 for k in range(_GROUP)]
    bits[v] = sum((d == 2) << k for k, d in enumerate(digits)) | sum((d != 0) << (k + _GROUP) for k, d in enumerate(digits))
  return value, bits


_GROUP_VALUE, _GROUP_BITS = _group_tables()


def num_trit_words(plane_words: int) -> int:
  """Number of uint32 words that hold the ternary votes of ``plane_words`` words of coordinates."""
  return -(-plane_words * BITS // TRITS)


def _planes_to_chunks(plane):
  """``u32[..., 5 B]`` plane words to ``u32[..., 8 B]`` chunks of 20 coordinates (bits 0..19)."""
  block = plane.reshape(*plane.shape[:-1], -1, _BLOCK_PLANES)
  chunks = []
  for k in range(_BLOCK_TRITS):
    word, offset = divmod(k * TRITS, BITS)
    chunk = block[..., word] >> offset
    if offset + TRITS > BITS:  # The chunk runs into the next plane word.
      chunk = chunk | (block[..., word + 1] << (BITS - offset))
    chunks.append(chunk & jnp.uint32((1 << TRITS) - 1))
  return jnp.stack(chunks, axis=-1).reshape(*plane.shape[:-1], -1)


def _chunks_to_planes(chunks):
  """Inverse of :func:`_planes_to_chunks`."""
  block = chunks.reshape(*chunks.shape[:-1], -1, _BLOCK_TRITS)
  words = []
  for j in range(_BLOCK_PLANES):
    word = None
    for k in range(_BLOCK_TRITS):
      shift = k * TRITS - j * BITS
      if -TRITS < shift < BITS:
        part = block[..., k] << shift if shift >= 0 else block[..., k] >> -shift
        word = part if word is None else word | part
    words.append(word)
  return jnp.stack(words, axis=-1).reshape(*chunks.shape[:-1], -1)


def _pad_last(x, multiple):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, -x.shape[-1] % multiple)])


def pack_ternary(sign: jax.Array, nonzero: jax.Array) -> jax.Array:
  """Packs a vote given as bit planes, ``u32[W]`` each, into base-3 words, 20 votes per word.

  Coordinate ``i`` (word ``i // 32``, bit ``i % 32`` of the planes) becomes digit ``i % 20`` of word
  ``i // 20``: 0 for a tie (or padding), 1 for -1, 2 for +1. Three states need log2(3) = 1.58 bits,
  so this is 1.6 bits per coordinate where two bit planes take 2. Computed from the planes 5
  coordinates at a time (a table from their 10 bits to their 5 digits' value).

  >>> import jax.numpy as jnp
  >>> # Coordinates 0, 1, 2: +1, -1, tie.
  >>> int(pack_ternary(jnp.array([1], jnp.uint32), jnp.array([3], jnp.uint32))[0]) == 2 + 1 * 3
  True
  """
  if sign.shape != nonzero.shape or sign.ndim != 1:
    raise ValueError(f"pack_ternary needs two flat planes of one shape, got {sign.shape} and {nonzero.shape}.")
  positive = _planes_to_chunks(_pad_last(sign & nonzero, _BLOCK_PLANES))
  decided = _planes_to_chunks(_pad_last(nonzero, _BLOCK_PLANES))
  table = jnp.asarray(_GROUP_VALUE)
  words = jnp.zeros_like(positive)
  for j in range(_GROUPS_PER_WORD):
    code = ((positive >> (_GROUP * j)) & 31) | (((decided >> (_GROUP * j)) & 31) << _GROUP)
    words = words + table[code] * jnp.uint32(_GROUP_BASE**j)  # No carry: the largest word is 3**20 - 1.
  return words[: num_trit_words(sign.shape[0])]


def unpack_ternary(words: jax.Array, plane_words: int):
  """Inverse of :func:`pack_ternary`: ``u32[..., T]`` to ``(sign, nonzero)`` planes ``u32[..., plane_words]``.

  Each word splits into 4 groups of 5 digits by division by constants, and a table turns each
  group into its 5 coordinates' bits.
  """
  if words.shape[-1] != num_trit_words(plane_words):
    raise ValueError(f"{plane_words} words of votes travel as {num_trit_words(plane_words)} base-3 words, "
                     f"got {words.shape[-1]}.")
  words = _pad_last(words, _BLOCK_TRITS)
  table = jnp.asarray(_GROUP_BITS)
  positive = decided = jnp.zeros_like(words)
  for j in range(_GROUPS_PER_WORD):
    code = table[(words // jnp.uint32(_GROUP_BASE**j)) % jnp.uint32(_GROUP_BASE)]
    positive = positive | ((code & 31) << (_GROUP * j))
    decided = decided | ((code >> _GROUP) << (_GROUP * j))
  return tuple(_chunks_to_planes(p)[..., :plane_words] for p in (positive, decided))


def pack_bit_rows(*planes: jax.Array):
  """``bool[..., 32 * W]`` to ``u32[..., W]``, least significant bit first (inverse of :func:`unpack_bits`).

  Several planes of one shape are packed in the same pass (one variadic reduction), and returned
  as a tuple; one plane is returned as an array.
  """
  def shifted(bits):
    return bits.reshape(*bits.shape[:-1], -1, BITS).astype(jnp.uint32) << _SHIFTS

  zeros = (jnp.uint32(0),) * len(planes)
  words = jax.lax.reduce(tuple(shifted(b) for b in planes), zeros,
                         lambda a, b: tuple(x | y for x, y in zip(a, b)), (planes[0].ndim,))
  return words if len(planes) > 1 else words[0]
