"""The vote inside optax's wrappers, through ``sv.shard_optimizer``: schedules, gradient
accumulation, clipping, a plateau schedule fed by the loss, and ``apply_if_finite`` where it belongs.

    python examples/optax_wrappers.py

Each optimizer trains the same linear model for a few steps on 4 workers. ``shard_optimizer``
finds by itself which state each worker keeps for its own (``MultiSteps``' accumulated gradients)
and carries it stacked over the workers; no ``sv.per_worker`` is needed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv

M, BATCH, FEATURES, STEPS = 4, 32, 8, 60


def loss(params, x, y):
  return jnp.mean((x @ params["w"] - y) ** 2)


def train(tx, mesh) -> float:
  """``STEPS`` steps of ``tx``; the last step's loss, averaged over the workers."""
  opt = sv.shard_optimizer(tx, mesh)
  params = jax.device_put({"w": jnp.zeros(FEATURES)}, NamedSharding(mesh, P()))
  state = opt.init(params)
  specs = sv.partition_specs(state)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers"), P("workers")),
                     out_specs=(P(), specs, P()))
  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss)(jax.lax.pcast(params, "workers", to="varying"), x[0], y[0])
    value = jax.lax.pmean(value, "workers")
    updates, state = opt.update(grads, state, params, value=value)  # value: for reduce_on_plateau.
    return optax.apply_updates(params, updates), state, value

  rng = np.random.default_rng(0)
  true_w = rng.normal(size=FEATURES)
  batches = NamedSharding(mesh, P("workers"))
  for _ in range(STEPS):
    x = rng.normal(size=(M, BATCH, FEATURES)).astype(np.float32)
    y = (x @ true_w).astype(np.float32)
    params, state, value = step(params, state, jax.device_put(x, batches), jax.device_put(y, batches))
  return float(value)


def main():
  jax.config.update("jax_num_cpu_devices", 4)  # On the CPU: 4 simulated devices (a GPU host uses its GPUs).
  mesh = jax.make_mesh((M,), ("workers",), devices=jax.devices()[:M])
  schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, warmup_steps=5, decay_steps=STEPS)
  optimizers = {
      # A learning-rate schedule, and hyper-parameters kept in the state where they can be read.
      "inject_hyperparams": optax.inject_hyperparams(sv.signum)(learning_rate=schedule, b1=0.9, axis_name="workers"),
      # Each worker accumulates 2 micro-batches of gradient, then the workers vote once.
      "MultiSteps": optax.MultiSteps(sv.signum(0.05, axis_name="workers"), every_k_schedule=2),
      # Clipping each worker's gradient before its momentum.
      "clipping": optax.chain(optax.clip_by_global_norm(1.0), sv.signum(0.05, axis_name="workers")),
      # The step scaled down when the (averaged) loss stops improving.
      "reduce_on_plateau": optax.chain(sv.signum(0.05, axis_name="workers"),
                                       optax.contrib.reduce_on_plateau(patience=5, factor=0.5)),
      # The averaging baseline skips steps with a non-finite mean gradient: after the exchange, so
      # that every worker decides the same (the vote needs no such guard: a worker abstains where its
      # gradient is not finite).
      "apply_if_finite": optax.chain(sv.mean_allreduce("workers"),
                                     optax.apply_if_finite(optax.adam(0.05), max_consecutive_errors=5)),
  }
  for name, tx in optimizers.items():
    print(f"{name:>18}: loss {train(tx, mesh):.4f} after {STEPS} steps")


if __name__ == "__main__":
  main()
