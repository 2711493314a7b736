"""Triton kernels under TRITON_INTERPRET=1 on torch CPU tensors, against their pure-JAX twins."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from signvote_jax import ops

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
  pytest.skip("the Triton interpreter is off (a GPU run): see test_kernels_gpu.py", allow_module_level=True)

from signvote_jax.ops import triton_kernels  # noqa: E402  pylint: disable=wrong-import-position

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


def _launch(kernel, num_words, args, outputs, **constexprs):
  """As ``jax_triton.triton_call(*args, ...)`` launches ``kernel``: its arguments, then the output buffers."""
  grid = triton_kernels._grid(num_words)  # pylint: disable=protected-access
  kernel[grid](*args, *outputs, **constexprs, BLOCK_WORDS=triton_kernels.BLOCK_WORDS)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_pack(size, dtype):
  x = _values(size, dtype, seed=size)
  words = torch.zeros(ops.num_words(size), dtype=torch.uint32)
  _launch(triton_kernels.pack_kernel, words.numel(), (_torch(x), size), (words,))
  np.testing.assert_array_equal(words.numpy(), np.asarray(ops.pack_signs(x, impl="jax")))


def _ballots(num_workers, size, seed):
  """Ballots with zeros, -0.0, NaN, a tie for even M and, for some workers, abstained words."""
  rng = np.random.default_rng(seed)
  values = rng.integers(-1, 2, size=(num_workers, size)).astype(np.float32)
  values[:, 0] = -0.0  # nothing to say for anyone
  if num_workers % 2 == 0 and size > 2:
    values[:, 1] = np.repeat([1.0, -1.0], num_workers // 2)  # a tie on every even-M run
  if size > 2:
    values[-1, 2] = np.nan
  if size > 64:
    values[: num_workers // 2 + 1, 32:64] = 0.0  # a word most workers abstain on
  ballots = [ops.pack_ballot(jnp.asarray(row), phase=m) for m, row in enumerate(values)]
  return jnp.stack([b[0] for b in ballots]), jnp.stack([b[1] for b in ballots])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("num_workers", range(1, 10))
def test_vote_planes(num_workers, size):
  words, voting = _ballots(num_workers, size, seed=num_workers * 7 + size)
  num_words = words.shape[1]
  for phase in (0, 1):
    sign = torch.zeros(num_words, dtype=torch.uint32)
    nonzero = torch.zeros(num_words, dtype=torch.uint32)
    args = (_torch(words), _torch(np.asarray(voting, np.uint32)), torch.tensor([phase], dtype=torch.int32), num_words,
            num_workers)
    _launch(triton_kernels.vote_planes_kernel, num_words, args, (sign, nonzero), ODD=num_workers % 2 == 1)
    want_sign, want_nonzero = ops.vote_planes(words, voting=voting, tie_phase=phase, impl="jax")
    np.testing.assert_array_equal(sign.numpy(), np.asarray(want_sign))
    np.testing.assert_array_equal(nonzero.numpy(), np.asarray(want_nonzero))
