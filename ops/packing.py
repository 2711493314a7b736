"""Packing the signs of a float array into uint32 words, and back."""

import jax
import jax.numpy as jnp
import numpy as np

from . import dispatch
from .dispatch import Impl

BITS = 32
_ALL_BITS = 0xFFFFFFFF


def num_words(size: int) -> int:
  """Number of uint32 words that hold ``size`` sign bits."""
  return -(-size // BITS)


def pack_signs(x: jax.Array, *, impl: Impl = "auto") -> jax.Array:
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
  return ballot_of_planes(*sign_planes(x), word_masks(x.size), phase)


def ballot_of_planes(positive, says, nonfinite, valid, phase):
  """:func:`pack_ballot`'s ``(words, voting, nonfinite)`` from :func:`sign_planes`' three planes and
  the mask of the bits that hold a coordinate (``valid``, :func:`word_masks`): the sign where a
  coordinate has something to say, else the filler bit."""
  filler = filler_word(phase) & valid
  return (positive & says) | (filler & ~says), says != 0, popcount_sum(nonfinite)


def sign_planes(*xs: jax.Array):
  """What each coordinate of the arrays ``xs`` (any shapes, floating) has to say, as three bit planes.

  Returns ``u32[W]`` words ``(positive, says, nonfinite)``: the arrays' words one after the other,
  each array starting on a word boundary (``W`` is the sum of their ``ceil(n / 32)``), with the bit
  of flat coordinate ``i`` of an array (its word ``i // 32``, bit ``i % 32``) set where it is
  ``> 0``, where it is finite and not zero (of either sign), and where it is NaN or +-Inf. Padding
  bits are 0.

  One pass over each array: a variadic reduction over each row of 32 coordinates, into which XLA
  fuses whatever computes the array.

  >>> import jax.numpy as jnp
  >>> [hex(int(w[0])) for w in sign_planes(jnp.array([2.0, 0.0, -1.0, jnp.nan, -0.0]))]
  ['0x1', '0x5', '0x8']
  """
  flats = [jnp.ravel(x) for x in xs]
  sizes = [f.shape[0] for f in flats]
  # Each array's whole words, read in place, and a zero word where its partial last word goes.
  parts, tails = [], []
  for f, n in zip(flats, sizes):
    whole = n // BITS * BITS
    if whole:
      parts.append(_classified(f[:whole]))
    if whole < n:
      parts.append((jnp.zeros((1,), jnp.uint32),) * 3)
      tails.append(jnp.pad(f[whole:], (0, BITS - (n - whole))))
  if not parts:
    return (jnp.zeros((0,), jnp.uint32),) * 3
  planes = tuple(jnp.concatenate(p) if len(p) > 1 else p[0] for p in zip(*parts))
  if not tails:
    return planes
  # The partial words of all arrays in one small reduction.
  tail_words = _classified(jnp.concatenate([t.astype(jnp.result_type(*tails)) for t in tails]))
  last = np.cumsum([num_words(n) for n in sizes]) - 1
  where = np.asarray([w for w, n in zip(last, sizes) if n % BITS])
  return tuple(plane.at[where].set(words) for plane, words in zip(planes, tail_words))


def _classified(values):
  """``(positive, says, nonfinite)`` words of ``values [..., 32 * W]``, in one pass (:func:`pack_bit_rows`)."""
  finite = jnp.isfinite(values)
  return pack_bit_rows(values > 0, finite & (values != 0), ~finite)


def or_each(a: tuple, b: tuple) -> tuple:
  """The combiner of a variadic OR-reduction. One function object, so that JAX traces it once
  (a lambda a call would be traced again at every reduction, for every leaf)."""
  return tuple(x | y for x, y in zip(a, b))


def add_each(a: tuple, b: tuple) -> tuple:
  """The combiner of a variadic sum (see :func:`or_each`)."""
  return tuple(x + y for x, y in zip(a, b))


def popcount_sum(words: jax.Array) -> jax.Array:
  """``u32[]``: the number of 1 bits in ``words``."""
  return jnp.sum(jax.lax.population_count(words), dtype=jnp.uint32)


def word_masks(*sizes: int) -> jax.Array:
  """``u32[W]``: the bits that hold a coordinate, in the words of arrays of ``sizes`` coordinates,
  each starting on a word boundary (the layout of :func:`sign_planes`)."""
  offsets = np.cumsum([0] + [num_words(n) for n in sizes])
  partial = [(offset + num_words(n) - 1, (1 << (n % BITS)) - 1) for offset, n in zip(offsets, sizes) if n % BITS]
  mask = jnp.full((int(offsets[-1]),), _ALL_BITS, jnp.uint32)
  if partial:
    index, value = (np.asarray(v) for v in zip(*partial))
    mask = mask.at[index].set(value.astype(np.uint32))
  return mask


def pack_bits(bits: jax.Array) -> jax.Array:
  """Packs booleans ``[..., S]`` into ``u32[..., ceil(S / 32)]`` words, least significant bit first."""
  size = bits.shape[-1]
  return pack_bit_rows(jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, num_words(size) * BITS - size)]))


def unpack_bits(words: jax.Array) -> jax.Array:
  """``u32[..., W]`` to ``bool[..., 32 * W]``, least significant bit first."""
  return jax.lax.ne(unpack_words(words), jnp.uint32(0)).reshape(*words.shape[:-1], words.shape[-1] * BITS)


def unpack_words(words: jax.Array) -> jax.Array:
  """``u32[..., W]`` to ``u32[..., W, 32]``: element j of word w holds its bit j, in place (``1 << j``)."""
  shape = (*words.shape, BITS)
  return jax.lax.broadcast_in_dim(words, shape, tuple(range(words.ndim))) & _bit_values(shape)


def _bit_values(shape) -> jax.Array:
  """``u32[shape]`` holding ``1 << j`` along the last axis (one iota, no constant array)."""
  return jax.lax.shift_left(jnp.uint32(1), jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1))


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
    rows = bits.reshape(*bits.shape[:-1], -1, BITS)
    return jax.lax.select(rows, _bit_values(rows.shape), jnp.zeros(rows.shape, jnp.uint32))

  zeros = (jnp.uint32(0),) * len(planes)
  words = jax.lax.reduce(tuple(shifted(b) for b in planes), zeros, or_each, (planes[0].ndim,))
  return words if len(planes) > 1 else words[0]
