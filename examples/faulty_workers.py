"""Faulty workers outvoted and named: the vote's statistics, averaged over a run.

    python examples/faulty_workers.py

Seven workers minimise a noisy quadratic. First, workers 5 and 6 send negated signs (the paper's
adversary): the vote still descends, and each worker's agreement with the vote beyond chance
(``kappa``), averaged over the run, names them. One step's kappa is noisy once the gradients are
small, so it is the run's mean that ``sv.suspected_workers`` reads. Then worker 6 lies in every role
it plays under ``alltoall`` with 3 voters a shard: its ballot, the votes it returns and the counts
it reports; the run's mean ``voter_kappa`` names it as a voter.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv

M, DIM, STEPS = 7, 7 * 64, 60  # Every worker's shard of the words holds coordinates (none only padding).


def train(tx, mesh):
  """``STEPS`` steps of ``tx`` on the workers of ``mesh``; the final distance to the optimum and
  the vote's statistics of every step."""
  opt = sv.shard_optimizer(tx, mesh)
  center = jnp.asarray(np.random.default_rng(1).normal(size=DIM), jnp.float32)
  params = jax.device_put({"x": jnp.zeros(DIM)}, NamedSharding(mesh, P()))
  state = opt.init(params)
  specs = sv.partition_specs(state)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers")), out_specs=(P(), specs))
  def step(params, state, noise):
    grads = {"x": params["x"] - center + noise[0]}  # This worker's noisy gradient.
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(0)
  kappas, voter_kappas = [], []
  for _ in range(STEPS):
    noise = jax.device_put(rng.normal(size=(M, DIM)).astype(np.float32), NamedSharding(mesh, P("workers")))
    params, state = step(params, state, noise)
    kappas.append(np.asarray(optax.tree.get(state, "kappa")))          # After each step: f32[M].
    voter_kappas.append(np.asarray(optax.tree.get(state, "voter_kappa")))
  return float(jnp.linalg.norm(params["x"] - center)), np.stack(kappas), np.stack(voter_kappas)


def main():
  jax.config.update("jax_num_cpu_devices", 7)  # On the CPU: 7 simulated devices (a GPU host uses its GPUs).
  mesh = jax.make_mesh((M,), ("workers",), devices=jax.devices()[:M])

  fault = sv.faults.byzantine("negate", workers=[5, 6], axis_name="workers")
  opt = sv.signum(0.05, axis_name="workers", fault=fault)
  distance, kappa, _ = train(opt, mesh)
  print(f"2 of 7 workers negate: distance to the optimum {distance:.2f} (it starts at {np.sqrt(DIM):.2f})")
  print(f"  kappa over the run: {[round(float(k), 2) for k in kappa.mean(axis=0)]}")
  print(f"  suspected workers: {sv.suspected_workers(kappa.mean(axis=0))}")   # Over the run: [5, 6].

  # A worker lying in every role: its ballot, the votes it returns, the counts it reports.
  opt = sv.signum(0.05, vote=sv.Vote("workers", strategy="alltoall", replicas=3,
                                     voter_fault=sv.faults.voter("negate+blame", workers=[6])),
                  fault=sv.faults.byzantine("negate", workers=[6], axis_name="workers"))
  distance, kappa, voter_kappa = train(opt, mesh)
  print(f"worker 6 lies in every role: distance to the optimum {distance:.2f}")
  print(f"  suspected workers: {sv.suspected_workers(kappa.mean(axis=0))}, "
        f"suspected voters: {sv.suspected_workers(voter_kappa.mean(axis=0))}")


if __name__ == "__main__":
  main()
