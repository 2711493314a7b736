"""One ``sv.Vote`` holds every option of the vote; every voting transform takes it whole.

    python examples/vote_options.py

The vote's options are checked once, when the ``Vote`` is made; ``signum``, ``lion`` and a chain
built by hand around ``scale_by_majority_vote`` then vote the same way. One step of each on the
same per-worker gradients, under ``jax.pmap``.
"""

import jax
import numpy as np
import optax

import signvote_jax as sv


def one_step(opt, grads):
  """The update each worker applies after one step from zero parameters (the same on every worker)."""
  def step(g):
    params = {"w": g["w"] * 0}
    return opt.update(g, opt.init(params), params)[0]

  return np.asarray(jax.pmap(step, axis_name="workers")(grads)["w"][0])


def main():
  jax.config.update("jax_num_cpu_devices", 4)  # On the CPU: 4 simulated devices (a GPU host uses its GPUs).
  vote = sv.Vote("workers", strategy="alltoall", replicas=3)   # a ValueError here if an option is bad
  opt = sv.signum(1e-4, b1=0.9, vote=vote)
  lion = sv.lion(1e-5, vote=vote)
  by_hand = optax.chain(sv.per_worker(optax.ema(0.9, debias=False), "workers"), sv.scale_by_majority_vote(vote=vote))
  print(f"{vote.strategy} with {vote.replicas} voters a shard: workers vote for each other: {vote.plan.exchange.sharded}")

  workers = jax.local_device_count()
  grads = {"w": np.random.default_rng(0).normal(size=(workers, 64)).astype(np.float32)}
  signs = one_step(by_hand, grads)
  print(f"signum's step is -lr times the vote: {np.array_equal(one_step(opt, grads), -1e-4 * signs.astype(np.float32))}")
  print(f"lion's step: -lr times the vote of its directions: {np.array_equal(one_step(lion, grads), -1e-5 * signs)}")

  # Built by hand from optax's Lion: its state is each worker's own, so say so (sv.per_worker).
  lion_by_hand = optax.chain(sv.per_worker(optax.scale_by_lion(b1=0.9, b2=0.99), "workers"),
                             sv.scale_by_majority_vote("workers"),
                             optax.add_decayed_weights(1e-4), optax.scale_by_learning_rate(1e-4))
  print(f"lion by hand, one step: {one_step(lion_by_hand, grads)[:4]}")

  try:
    sv.Vote("workers", strategy="allgather", replicas=3)
  except ValueError as e:
    print(f"refused when made: {e}")


if __name__ == "__main__":
  main()
