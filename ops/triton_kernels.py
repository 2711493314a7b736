"""Triton twins of the pure-JAX kernels, with the same bit layout, called through jax_triton.

This module imports ``triton`` (the kernels are defined at import); ``jax_triton`` is imported only
when a kernel is called from JAX, since it needs a GPU build of jaxlib. ``ops`` reaches this module
only for ``impl="triton"`` (or ``"auto"`` on a GPU), so CPU-only installs never import it. On a
machine without a GPU the kernels run under ``TRITON_INTERPRET=1`` on torch CPU tensors; the tests
do that and compare them with the pure-JAX twins.

Every kernel works on blocks of ``BLOCK_WORDS`` words, i.e. a ``[BLOCK_WORDS, 32]`` tile of
coordinates, contiguous in memory.
"""

import jax
import jax.numpy as jnp
import triton
import triton.language as tl

from ops import packing

BLOCK_WORDS = 128


@triton.jit
def _pack_bits_tile(positive, shifts):
  """A ``[B, 32]`` tile of booleans to ``[B]`` uint32 words, bit j from column j."""
  return tl.sum(positive.to(tl.uint32) << shifts[None, :], axis=1)


@triton.jit
def _store_signs(values, in_range, words_ptr, word, size):
  """Packs the signs of a ``[B, 32]`` tile (bit 1 for ``v >= 0``; NaN and padding 0) and stores them.

  Compared in float32: exact for every input dtype, and the interpreter holds bfloat16 as raw bits.
  """
  shifts = tl.arange(0, 32).to(tl.uint32)
  words = _pack_bits_tile((values.to(tl.float32) >= 0) & in_range, shifts)
  tl.store(words_ptr + word, words, mask=word * 32 < size)


@triton.jit
def pack_kernel(x_ptr, words_ptr, size, BLOCK_WORDS: tl.constexpr):
  """words[w] = sum_j (x[32 w + j] >= 0) << j; NaN and padding give bit 0."""
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  bit = tl.arange(0, 32)
  index = word[:, None] * 32 + bit[None, :]
  in_range = index < size
  x = tl.load(x_ptr + index, mask=in_range, other=0.0)
  _store_signs(x, in_range, words_ptr, word, size)


@triton.jit
def _count_tile(words_ptr, word, num_words, num_workers, BLOCK_WORDS: tl.constexpr):
  """``[B, 32]`` counts of workers whose bit is 1, over rows of ``u32[M, num_words]``."""
  shifts = tl.arange(0, 32).to(tl.uint32)
  count = tl.zeros((BLOCK_WORDS, 32), dtype=tl.int32)
  for m in range(num_workers):
    row = tl.load(words_ptr + m * num_words + word, mask=word < num_words, other=0)
    count += ((row[:, None] >> shifts[None, :]) & 1).to(tl.int32)
  return count


@triton.jit
def vote_planes_kernel(words_ptr, sign_ptr, nonzero_ptr, num_words, num_workers, BLOCK_WORDS: tl.constexpr):
  """Sign plane (2c > M) and non-zero plane (2c != M) of ``u32[M, num_words]``."""
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  margin = 2 * _count_tile(words_ptr, word, num_words, num_workers, BLOCK_WORDS) - num_workers
  shifts = tl.arange(0, 32).to(tl.uint32)
  tl.store(sign_ptr + word, _pack_bits_tile(margin > 0, shifts), mask=word < num_words)
  tl.store(nonzero_ptr + word, _pack_bits_tile(margin != 0, shifts), mask=word < num_words)


@triton.jit
def vote_kernel(words_ptr, out_ptr, num_words, size, num_workers, BLOCK_WORDS: tl.constexpr):
  """out[i] = sign(2 c_i - M) in out's dtype, for the first ``size`` coordinates."""
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  margin = 2 * _count_tile(words_ptr, word, num_words, num_workers, BLOCK_WORDS) - num_workers
  votes = tl.where(margin > 0, 1.0, tl.where(margin < 0, -1.0, 0.0))
  index = word[:, None] * 32 + tl.arange(0, 32)[None, :]
  tl.store(out_ptr + index, votes.to(out_ptr.dtype.element_ty), mask=index < size)


@triton.jit
def ema_pack_kernel(g_ptr, m_ptr, b1_ptr, m_out_ptr, words_ptr, size, BLOCK_WORDS: tl.constexpr):
  """m_out = b1 m + (1 - b1) g (in float32, stored in m's dtype); words = pack(m_out).

  Reads g and m once; the signs come from the stored momentum, so words == pack(m_out) exactly.
  """
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  bit = tl.arange(0, 32)
  index = word[:, None] * 32 + bit[None, :]
  in_range = index < size
  b1 = tl.load(b1_ptr)
  g = tl.load(g_ptr + index, mask=in_range, other=0.0).to(tl.float32)
  m = tl.load(m_ptr + index, mask=in_range, other=0.0).to(tl.float32)
  m_new = b1 * m + (1.0 - b1) * g
  if m_out_ptr.dtype.element_ty != tl.float32:
    # Round to nearest even, as XLA does (the interpreter would otherwise truncate).
    m_new = m_new.to(m_out_ptr.dtype.element_ty, fp_downcast_rounding="rtne")
  tl.store(m_out_ptr + index, m_new, mask=in_range)
  _store_signs(m_new, in_range, words_ptr, word, size)


def _grid(num_words: int):
  return (triton.cdiv(num_words, BLOCK_WORDS),)


def _call(*args, **kwargs):
  import jax_triton  # pylint: disable=import-outside-toplevel

  return jax_triton.triton_call(*args, BLOCK_WORDS=BLOCK_WORDS, **kwargs)


def pack_signs(x: jax.Array) -> jax.Array:
  """Triton twin of :func:`ops.pack_signs`."""
  size, num_words = x.size, packing.num_words(x.size)
  if size == 0:
    return jnp.zeros((0,), jnp.uint32)
  out = jax.ShapeDtypeStruct((num_words,), jnp.uint32)
  return _call(jnp.ravel(x), size, kernel=pack_kernel, out_shape=out, grid=_grid(num_words))


def vote_planes(words: jax.Array):
  """Triton twin of the plane vote in :func:`ops.vote_planes`."""
  num_workers, num_words = words.shape
  plane = jax.ShapeDtypeStruct((num_words,), jnp.uint32)
  if num_words == 0:
    return jnp.zeros((0,), jnp.uint32), jnp.zeros((0,), jnp.uint32)
  return tuple(_call(words, num_words, num_workers, kernel=vote_planes_kernel,
                     out_shape=(plane, plane), grid=_grid(num_words)))


def vote(words: jax.Array, size: int, dtype) -> jax.Array:
  """Triton twin of :func:`ops.vote`."""
  num_workers, num_words = words.shape
  if size == 0:
    return jnp.zeros((0,), dtype)
  out = jax.ShapeDtypeStruct((size,), dtype)
  return _call(words, num_words, size, num_workers, kernel=vote_kernel, out_shape=out, grid=_grid(num_words))


def ema_pack(g: jax.Array, m: jax.Array, b1) -> tuple[jax.Array, jax.Array]:
  """Triton twin of :func:`ops.ema_pack`."""
  size, num_words = m.size, packing.num_words(m.size)
  if size == 0:
    return m, jnp.zeros((0,), jnp.uint32)
  outs = (jax.ShapeDtypeStruct(m.shape, m.dtype), jax.ShapeDtypeStruct((num_words,), jnp.uint32))
  b1 = jnp.asarray(b1, jnp.float32).reshape(1)
  m_new, words = _call(g, m, b1, size, kernel=ema_pack_kernel, out_shape=outs, grid=_grid(num_words))
  return m_new, words
