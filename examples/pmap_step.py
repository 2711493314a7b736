"""Signum with majority vote under ``jax.pmap``: one worker per device, the state stacked by pmap.

    python examples/pmap_step.py

``pmap`` binds the axis the vote names; the optimizer state is created inside it (``init`` sees the
axis and its size) and carried as pmap carries anything: one row per device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import signvote_jax as sv

BATCH, FEATURES, STEPS = 32, 8, 100


def loss(params, x, y):
  return jnp.mean((x @ params["w"] - y) ** 2)


def main():
  jax.config.update("jax_num_cpu_devices", 4)  # On the CPU: 4 simulated devices (a GPU host uses its GPUs).
  workers = jax.local_device_count()
  opt = sv.signum(1e-2, b1=0.9, axis_name="workers")
  params = {"w": np.zeros((workers, FEATURES), np.float32)}  # One copy a worker, as pmap takes it.
  state = jax.pmap(opt.init, axis_name="workers")(params)

  def step(params, state, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)  # This worker's own gradient.
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, jax.lax.pmean(value, "workers")

  step = jax.pmap(step, axis_name="workers")
  rng = np.random.default_rng(0)
  true_w = rng.normal(size=FEATURES)
  for t in range(STEPS):
    x = rng.normal(size=(workers, BATCH, FEATURES)).astype(np.float32)  # Row m: worker m's batch.
    y = (x @ true_w).astype(np.float32)
    params, state, value = step(params, state, x, y)
    if t % 25 == 0 or t == STEPS - 1:
      print(f"step {t:3d}  loss {float(value[0]):.4f}")
  print(f"{workers} workers agree on the parameters: {bool(np.all(np.asarray(params['w']) == np.asarray(params['w'])[0]))}")


if __name__ == "__main__":
  main()
