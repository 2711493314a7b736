"""A Flax NNX model trained with Signum and majority vote inside ``jax.shard_map``.

    python examples/nnx_step.py        (needs flax: pip install flax)

The parameters leave the module with ``nnx.split``, train as a replicated tree (every worker
applies the same vote), and go back into the module with ``nnx.update``. The batch is shaped
``[M, B, ...]``: row m is worker m's, and ``P("workers")`` hands it to that worker.
"""

import functools
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv

M, BATCH, FEATURES, STEPS = 4, 16, 5, 60


class Regression(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.linear = nnx.Linear(FEATURES, 1, rngs=rngs)

  def __call__(self, x):
    return self.linear(x)[..., 0]


def main():
  jax.config.update("jax_num_cpu_devices", 4)  # On the CPU: 4 simulated devices (a GPU host uses its GPUs).
  mesh = jax.make_mesh((M,), ("workers",))
  model = Regression(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  learning_rate = optax.cosine_decay_schedule(0.05, STEPS)  # Sign steps are of size lr: let it shrink.
  opt = sv.shard_optimizer(sv.signum(learning_rate, axis_name="workers"), mesh)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  state = opt.init(params)
  specs = sv.partition_specs(state)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers"), P("workers")),
                     out_specs=(P(), specs, P()))
  def step(params, state, x, y):
    def loss(p):
      return jnp.mean((nnx.merge(graphdef, p)(x[0]) - y[0]) ** 2)
    value, grads = jax.value_and_grad(loss)(jax.lax.pcast(params, "workers", to="varying"))
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, jax.lax.pmean(value, "workers")

  rng = np.random.default_rng(0)
  true_w = rng.normal(size=FEATURES)
  batches = NamedSharding(mesh, P("workers"))
  for t in range(STEPS):
    x = rng.normal(size=(M, BATCH, FEATURES)).astype(np.float32)  # [M, B, features]: row m is worker m's.
    y = (x @ true_w + 1.0).astype(np.float32)
    params, state, value = step(params, state, jax.device_put(x, batches), jax.device_put(y, batches))
    if t % 20 == 0 or t == STEPS - 1:
      print(f"step {t:3d}  loss {float(value):.4f}")

  # ... after training:
  nnx.update(model, params)
  print(f"bias {float(model.linear.bias[...][0]):.2f} (the true bias is 1.00)")


if __name__ == "__main__":
  main()
