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

SIZES = [1, 31, 33, 3 * 32 * triton_kernels.BLOCK_WORDS + 35]  # The last: three full blocks, then a partial block and word.


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


def _triton_call_on_torch(*args, kernel, out_shape, grid, **constexprs):
  """``jax_triton.triton_call``'s calling convention on torch CPU tensors, for the interpreter: the
  kernel gets the call's arguments in their order (arrays as tensors, scalars as they are), then one
  buffer per output, then the constexprs; the outputs come back as jax arrays."""
  shapes = out_shape if isinstance(out_shape, (tuple, list)) else (out_shape,)
  outputs = [torch.zeros(o.shape, dtype=getattr(torch, np.dtype(o.dtype).name)) for o in shapes]
  kernel[grid](*(_torch(a) if hasattr(a, "shape") else a for a in args), *outputs, **constexprs)
  results = tuple(jnp.asarray(_numpy(t, o.dtype)) for t, o in zip(outputs, shapes))
  return results if isinstance(out_shape, (tuple, list)) else results[0]


@pytest.fixture(autouse=True)
def interpreted(monkeypatch):
  """The wrappers of ops/triton_kernels.py, which the GPU path calls, launching their kernels here."""
  monkeypatch.setattr(triton_kernels, "launcher", lambda: _triton_call_on_torch)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_pack(size, dtype):
  x = _values(size, dtype, seed=size)
  np.testing.assert_array_equal(np.asarray(triton_kernels.pack_signs(x)), np.asarray(ops.pack_signs(x, impl="jax")))


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
  for phase in (0, 1):
    found = triton_kernels.vote_planes(words, voting, jnp.int32(phase))
    want = ops.vote_planes(words, voting=voting, tie_phase=phase, impl="jax")
    for a, b in zip(found, want, strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
