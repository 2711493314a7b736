"""A Flax NNX model trained with Signum and majority vote inside shard_map (the README's example)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from tests import harness
from tests import reference

nnx = pytest.importorskip("flax.nnx")  # Flax comes with the trainer's extra, not the library.

M, STEPS, BATCH, FEATURES = 4, 8, 6, 5
LR, B1 = 0.05, 0.9


class Regression(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.linear = nnx.Linear(FEATURES, 1, rngs=rngs)

  def __call__(self, x):
    return self.linear(x)[..., 0]


def test_nnx_module_trains_with_the_vote_as_algorithm_1():
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(STEPS, M, BATCH, FEATURES)).astype(np.float32)
  targets = rng.normal(size=(STEPS, M, BATCH)).astype(np.float32)
  mesh = harness.mesh((M,), ("workers",))

  model = Regression(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x0 = harness.flat(params)  # Leaves in tree order: the bias, then the kernel.
  opt = sv.shard_optimizer(sv.signum(LR, B1, axis_name="workers"), mesh)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  opt_state = opt.init(params)
  specs = sv.partition_specs(opt_state)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers"), P("workers")),
                     out_specs=(P(), specs))
  def step(params, opt_state, x, y):
    def loss(p):
      return jnp.mean((nnx.merge(graphdef, p)(x[0]) - y[0]) ** 2)

    # Each worker's own gradient: differentiate a per-worker (varying) copy of the parameters.
    grads = jax.grad(loss)(jax.lax.pcast(params, "workers", to="varying"))
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  batches = NamedSharding(mesh, P("workers"))
  for t in range(STEPS):
    params, opt_state = step(params, opt_state, jax.device_put(inputs[t], batches), jax.device_put(targets[t], batches))
  nnx.update(model, params)

  def numpy_grad(v, m, t):
    bias, kernel = v[0], v[1:]
    residual = inputs[t, m].astype(np.float64) @ kernel + bias - targets[t, m]
    return np.concatenate([[2 * residual.mean()], 2 * inputs[t, m].T @ residual / BATCH])

  expected = reference.signum_majority(x0, numpy_grad, M, STEPS, LR, B1, 0.0)[0]
  trained = np.concatenate([np.ravel(model.linear.bias.value), np.ravel(model.linear.kernel.value)])
  np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(trained, x0)
