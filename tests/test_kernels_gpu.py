"""The triton_call path against the pure-JAX path inside jit, shard_map and pmap: GPU only.

Run on a GPU machine with ``JAX_PLATFORMS=cuda pytest tests/test_kernels_gpu.py`` (the default
test run pins JAX to the CPU and skips this module).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from signvote_jax import ops
import signvote_jax as sv

if jax.default_backend() != "gpu":
  pytest.skip("needs a GPU backend (JAX_PLATFORMS=cuda)", allow_module_level=True)
pytest.importorskip("jax_triton")

SIZES = [1, 31, 33, 1000003]


def _values(size, dtype, seed):
  x = np.random.default_rng(seed).normal(size=size).astype(np.float32)
  x[: min(size, 3)] = [0.0, -0.0, np.nan][: min(size, 3)]
  return jnp.asarray(x, dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("size", SIZES)
def test_pack_in_jit(size, dtype):
  x = _values(size, dtype, 0)
  pack = jax.jit(ops.pack_signs, static_argnames="impl")
  np.testing.assert_array_equal(pack(x, impl="triton"), pack(x, impl="jax"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("num_workers", [1, 2, 3, 8, 9])
def test_vote_in_jit(num_workers, size):
  words = jnp.stack([ops.pack_signs(_values(size, jnp.float32, s), impl="jax") for s in range(num_workers)])
  vote_planes = jax.jit(ops.vote_planes, static_argnames="impl")
  jax.tree.map(np.testing.assert_array_equal, vote_planes(words, impl="triton"), vote_planes(words, impl="jax"))


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
def test_signum_step_in_shard_map_and_pmap(strategy):
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("workers",), axis_types=(jax.sharding.AxisType.Auto,))
  params = {"w": jnp.ones((1000, 33)), "b": jnp.zeros((7,), jnp.bfloat16)}
  grads = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(0).normal(size=(len(devices), *p.shape)), p.dtype), params)

  def step(impl):
    opt = sv.signum(1e-3, vote=sv.Vote("workers", strategy=strategy, impl=impl))

    def worker(params, grads):
      grads = jax.tree.map(lambda g: g[0], grads)
      return opt.update(grads, opt.init(params), params)[0]

    P = jax.sharding.PartitionSpec
    in_map = jax.jit(jax.shard_map(worker, mesh=mesh, in_specs=(P(), P("workers")), out_specs=P()))(params, grads)
    in_pmap = jax.pmap(worker, axis_name="workers", in_axes=(None, 0))(params, grads)
    return in_map, jax.tree.map(lambda x: x[0], in_pmap)

  triton_results, jax_results = step("triton"), step("jax")
  jax.tree.map(np.testing.assert_array_equal, triton_results, jax_results)
