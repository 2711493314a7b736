"""Triton twins of the pure-JAX kernels, with the same bit layout, called through jax_triton.

This module imports ``triton`` (the kernels are defined at import); ``jax_triton`` is imported only
when a kernel is called from JAX, since it needs a GPU build of jaxlib. ``ops`` reaches this module
only for ``impl="triton"`` (or ``"auto"`` on a GPU), so CPU-only installs never import it. On a
machine without a GPU the kernels run under ``TRITON_INTERPRET=1`` on torch CPU tensors; the tests
do that and compare them with the pure-JAX twins.

Every kernel works on blocks of ``BLOCK_WORDS`` words, i.e. a ``[BLOCK_WORDS, 32]`` tile of
coordinates, contiguous in memory. Its parameters come in ``jax_triton.triton_call``'s order: the
call's positional arguments (arrays and scalars), then the output buffers, then the constexprs.
"""

import jax
import jax.numpy as jnp
import triton
import triton.language as tl

from . import packing

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
def pack_kernel(x_ptr, size, words_ptr, BLOCK_WORDS: tl.constexpr):
  """words[w] = sum_j (x[32 w + j] >= 0) << j; NaN and padding give bit 0."""
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  bit = tl.arange(0, 32)
  index = word[:, None] * 32 + bit[None, :]
  in_range = index < size
  x = tl.load(x_ptr + index, mask=in_range, other=0.0)
  _store_signs(x, in_range, words_ptr, word, size)


@triton.jit
def vote_planes_kernel(words_ptr, voting_ptr, phase_ptr, num_words, num_workers, sign_ptr, nonzero_ptr,
                       ODD: tl.constexpr, BLOCK_WORDS: tl.constexpr):
  """Sign and non-zero planes of ``u32[M, num_words]`` ballots with abstention (``ops.vote_planes``).

  ``voting`` is ``u32[M, num_words]``, 1 where worker m votes on the word. With P and N the voters'
  1 and 0 bits: sign = P > N, non-zero = P != N; for odd M a tie among voters is broken by the
  parity of ``phase + bit`` (+1 where odd), and only a word without voters is 0.
  """
  word = tl.program_id(0) * BLOCK_WORDS + tl.arange(0, BLOCK_WORDS)
  shifts = tl.arange(0, 32).to(tl.uint32)
  margin = tl.zeros((BLOCK_WORDS, 32), dtype=tl.int32)
  voters = tl.zeros((BLOCK_WORDS,), dtype=tl.int32)
  for m in range(num_workers):
    row = tl.load(words_ptr + m * num_words + word, mask=word < num_words, other=0)
    votes = tl.load(voting_ptr + m * num_words + word, mask=word < num_words, other=0).to(tl.int32)
    bits = ((row[:, None] >> shifts[None, :]) & 1).to(tl.int32)
    margin += (2 * bits - 1) * votes[:, None]
    voters += votes
  if ODD:
    phase = tl.load(phase_ptr)
    tie_positive = ((tl.arange(0, 32) + phase) % 2) == 1
    anyone = tl.broadcast_to((voters > 0)[:, None], (BLOCK_WORDS, 32))
    positive = (margin > 0) | ((margin == 0) & anyone & tie_positive[None, :])
    nonzero = anyone
  else:
    positive = margin > 0
    nonzero = margin != 0
  tl.store(sign_ptr + word, _pack_bits_tile(positive, shifts), mask=word < num_words)
  tl.store(nonzero_ptr + word, _pack_bits_tile(nonzero, shifts), mask=word < num_words)


def _grid(num_words: int):
  return (triton.cdiv(num_words, BLOCK_WORDS),)


def launcher():
  """``jax_triton.triton_call``, imported here: it needs a GPU build of jaxlib. The interpreter tests
  put a stand-in with its calling convention in its place, to run the wrappers below on the CPU."""
  import jax_triton  # pylint: disable=import-outside-toplevel

  return jax_triton.triton_call


def _call(*args, **kwargs):
  return launcher()(*args, BLOCK_WORDS=BLOCK_WORDS, **kwargs)


def pack_signs(x: jax.Array) -> jax.Array:
  """Triton twin of :func:`ops.pack_signs`."""
  size, num_words = x.size, packing.num_words(x.size)
  if size == 0:
    return jnp.zeros((0,), jnp.uint32)
  out = jax.ShapeDtypeStruct((num_words,), jnp.uint32)
  return _call(jnp.ravel(x), size, kernel=pack_kernel, out_shape=out, grid=_grid(num_words))


def vote_planes(words: jax.Array, voting: jax.Array, tie_phase: jax.Array):
  """Triton twin of the plane vote in :func:`ops.vote_planes`."""
  num_workers, num_words = words.shape
  plane = jax.ShapeDtypeStruct((num_words,), jnp.uint32)
  if num_words == 0:
    return jnp.zeros((0,), jnp.uint32), jnp.zeros((0,), jnp.uint32)
  return tuple(_call(words, voting.astype(jnp.uint32), jnp.asarray(tie_phase, jnp.int32).reshape(1), num_words,
                     num_workers, kernel=vote_planes_kernel, out_shape=(plane, plane), grid=_grid(num_words),
                     ODD=num_workers % 2 == 1))
