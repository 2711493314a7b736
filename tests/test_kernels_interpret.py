"""Triton kernels under TRITON_INTERPRET=1 on torch CPU tensors, against their pure-JAX twins."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import ops

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
  pytest.skip("the Triton interpreter is off (a GPU run): see test_kernels_gpu.py", allow_module_level=True)

from ops import triton_kernels  # noqa: E402  pylint: disable=wrong-import-position

SIZES = [1, 31, 33, 1000003]


def _torch(x):
  """A jax/numpy array as a torch CPU tensor (bfloat16 through its bits)."""
  x = np.asarray(x)
  if x.dtype == jnp.bfloat16:
    return torch.from_numpy(x.view(np.uint16).copy()).view(torch.bfloat16)
  return torch.from_numpy(x.copy())


def _numpy(t, dtype):
  if t.dtype == torch.bfloat16:
    return t.view(torch.uint16).numpy().view(dtype)
  return t.numpy()


def _values(size, dtype, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=size).astype(np.float32)
  x[rng.choice(size, size=min(size, 4), replace=False)] = [0.0, -0.0, np.nan, -np.nan][: min(size, 4)]
  return jnp.asarray(x, dtype)


def _launch(kernel, num_words, *args):
  kernel[triton_kernels._grid(num_words)](*args, BLOCK_WORDS=triton_kernels.BLOCK_WORDS)  # pylint: disable=protected-access


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_pack(size, dtype):
  x = _values(size, dtype, seed=size)
  words = torch.zeros(ops.num_words(size), dtype=torch.uint32)
  _launch(triton_kernels.pack_kernel, words.numel(), _torch(x), words, size)
  np.testing.assert_array_equal(words.numpy(), np.asarray(ops.pack_signs(x, impl="jax")))


def _ballots(num_workers, size, seed):
  rng = np.random.default_rng(seed)
  values = rng.integers(-1, 2, size=(num_workers, size)).astype(np.float32)
  values[:, 0] = -0.0  # -0.0 votes +1 for everyone
  if num_workers % 2 == 0 and size > 2:
    values[:, 1] = np.repeat([1.0, -1.0], num_workers // 2)  # a tie on every even-M run
  if size > 2:
    values[-1, 2] = np.nan
  return jnp.stack([ops.pack_signs(jnp.asarray(row), impl="jax") for row in values])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("num_workers", range(1, 10))
def test_vote_planes_and_vote(num_workers, size):
  words = _ballots(num_workers, size, seed=num_workers * 7 + size)
  num_words = words.shape[1]
  sign = torch.zeros(num_words, dtype=torch.uint32)
  nonzero = torch.zeros(num_words, dtype=torch.uint32)
  _launch(triton_kernels.vote_planes_kernel, num_words, _torch(words), sign, nonzero, num_words, num_workers)
  want_sign, want_nonzero = ops.vote_planes(words, impl="jax")
  np.testing.assert_array_equal(sign.numpy(), np.asarray(want_sign))
  np.testing.assert_array_equal(nonzero.numpy(), np.asarray(want_nonzero))

  votes = torch.zeros(size, dtype=torch.float32)
  _launch(triton_kernels.vote_kernel, num_words, _torch(words), votes, num_words, size, num_workers)
  np.testing.assert_array_equal(votes.numpy(), np.asarray(ops.vote(words, size, impl="jax")))


@pytest.mark.parametrize("num_workers", [2, 4, 8])
def test_all_tie_rows_vote_zero(num_workers):
  size = 100
  rows = np.where(np.arange(num_workers)[:, None] % 2 == 0, 1.0, -1.0) * np.ones((1, size), np.float32)
  words = jnp.stack([ops.pack_signs(jnp.asarray(r), impl="jax") for r in rows])
  votes = torch.ones(size, dtype=torch.bfloat16)
  _launch(triton_kernels.vote_kernel, words.shape[1], _torch(words), votes, words.shape[1], size, num_workers)
  assert (votes == 0).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_ema_pack(size, dtype):
  g, m, b1 = _values(size, dtype, seed=1), _values(size, dtype, seed=2), 0.9
  m_out = torch.zeros(size, dtype=_torch(m).dtype)
  words = torch.zeros(ops.num_words(size), dtype=torch.uint32)
  _launch(triton_kernels.ema_pack_kernel, words.numel(), _torch(g), _torch(m),
          torch.tensor([b1], dtype=torch.float32), m_out, words, size)
  want_m, want_words = ops.ema_pack(g, m, b1, impl="jax")
  got_m = _numpy(m_out, dtype).astype(np.float32)
  if dtype == jnp.float32:
    np.testing.assert_array_equal(got_m, np.asarray(want_m))
  else:
    # The interpreter's float32 -> bfloat16 conversion can be one ulp off round-to-nearest-even
    # (the GPU's is exact); a rounding slip never flips a sign, so the words below stay exact.
    np.testing.assert_allclose(got_m, np.asarray(want_m, np.float32), rtol=2.0**-7, atol=0)
  np.testing.assert_array_equal(words.numpy(), np.asarray(want_words))
  np.testing.assert_array_equal(words.numpy(), np.asarray(ops.pack_signs(jnp.asarray(got_m), impl="jax")))
