"""Signum with majority vote in a jitted ``jax.shard_map`` step: a whole program to copy.

    python examples/shard_map_step.py

Four workers (on the CPU, simulated devices; on a GPU host, its GPUs) fit a linear model, each on
its own batch; each sends one bit per coordinate and all apply the vote. The mesh is the one
``jax.make_mesh`` gives (Explicit axes in JAX >= 0.9), so the batch is placed with a
``NamedSharding`` before the step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv

M, BATCH, FEATURES, STEPS = 4, 32, 8, 100


def loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def main():
  jax.config.update("jax_num_cpu_devices", 4)  # On the CPU: 4 simulated devices (a GPU host uses its GPUs).
  mesh = jax.make_mesh((M,), ("workers",))
  # Algorithm 1: v_m <- (1 - b1) g_m + b1 v_m;  x <- x - lr * (sign(sum_m sign(v_m)) + wd * x)
  opt = sv.shard_optimizer(sv.signum(learning_rate=1e-2, b1=0.9, weight_decay=1e-4, axis_name="workers"), mesh)
  params = jax.device_put({"w": jnp.zeros(FEATURES), "b": jnp.zeros(())}, NamedSharding(mesh, P()))
  state = opt.init(params)              # params: replicated global arrays
  specs = sv.partition_specs(state)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers")), out_specs=(P(), specs, P()))
  def step(params, state, batch):
    batch = jax.tree.map(lambda a: a[0], batch)  # This worker's batch, without the workers' dimension.
    # A varying copy, so that each worker keeps its own gradient (no psum behind the optimizer's back).
    value, grads = jax.value_and_grad(loss)(jax.lax.pcast(params, "workers", to="varying"), batch)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, jax.lax.pmean(value, "workers")

  rng = np.random.default_rng(0)
  true_w = rng.normal(size=FEATURES)
  for t in range(STEPS):
    x = rng.normal(size=(M, BATCH, FEATURES)).astype(np.float32)
    y = (x @ true_w + 0.1 * rng.normal(size=(M, BATCH))).astype(np.float32)
    batch = jax.device_put((x, y), NamedSharding(mesh, P("workers")))  # Worker m's batch is row m.
    params, state, value = step(params, state, batch)
    if t % 25 == 0 or t == STEPS - 1:
      print(f"step {t:3d}  loss {float(value):.4f}")
  print(f"distance to the true weights: {float(np.linalg.norm(np.asarray(params['w']) - true_w)):.3f}")


if __name__ == "__main__":
  main()
