"""Fault tolerance: the vote survives fewer than M/2 faulty workers; averaging does not."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import signvote_jax as sv
from signvote_jax import faults
from tests import harness

M = 7
AXIS = "workers"
DIM = 256


def _train_quadratic(opt, steps, noise=0.5, seed=0):
  """Minimises 1/2 |x|^2 from x0 ~ N(0, 9) with per-worker noisy gradients x + noise * N(0, 1).

  Returns the final parameters and, for a vote, each worker's agreement averaged over the steps.
  """
  mesh = harness.mesh((M,), (AXIS,))
  x0 = 3.0 * jax.random.normal(jax.random.key(seed), (DIM,))

  def worker(x):
    key = jax.random.fold_in(jax.random.key(seed + 1), jax.lax.axis_index(AXIS))

    def step(carry, t):
      x, state = carry
      grads = x + noise * jax.random.normal(jax.random.fold_in(key, t), x.shape)
      updates, state = opt.update(grads, state, x)
      agreement = optax.tree.get(state, "agreement", jnp.zeros(M))
      return (optax.apply_updates(x, updates), state), agreement

    (x, _), agreement = jax.lax.scan(step, (x, opt.init(x)), jnp.arange(steps))
    return x, agreement.mean(axis=0)

  run = jax.jit(jax.shard_map(worker, mesh=mesh, in_specs=jax.sharding.PartitionSpec(),
                              out_specs=jax.sharding.PartitionSpec()))
  x, agreement = run(jax.device_put(x0, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())))
  return np.asarray(x), np.asarray(x0), np.asarray(agreement)


def _distance_ratio(x, x0):
  return float(np.linalg.norm(x) / np.linalg.norm(x0))


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
def test_signum_converges_with_three_of_seven_negating(strategy):
  fault = faults.byzantine("negate", workers=[1, 4, 6], axis_name=AXIS)
  opt = sv.signum(0.02, 0.9, axis_name=AXIS, strategy=strategy, fault=fault)
  x, x0, agreement = _train_quadratic(opt, steps=300)
  assert _distance_ratio(x, x0) < 0.1
  assert sv.suspected_workers(agreement) == [1, 4, 6]


def test_negating_majority_breaks_the_vote():
  """The guarantee needs f < M/2: with 4 of 7 negating, the vote ascends instead."""
  fault = faults.byzantine("negate", workers=[0, 1, 2, 3], axis_name=AXIS)
  x, x0, _ = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS, fault=fault), steps=300)
  assert _distance_ratio(x, x0) > 1.0


@pytest.mark.parametrize("kind", ["scale", "nan"])
def test_one_bad_worker_breaks_averaging_but_not_the_vote(kind):
  fault = faults.byzantine(kind, workers=[3], axis_name=AXIS)
  sgd = optax.chain(fault, sv.mean_allreduce(AXIS), optax.sgd(0.1))
  x_sgd, x0, _ = _train_quadratic(sgd, steps=300)
  assert not np.all(np.isfinite(x_sgd)) or _distance_ratio(x_sgd, x0) > 1e3

  honest_sgd = optax.chain(sv.mean_allreduce(AXIS), optax.sgd(0.1))
  assert _distance_ratio(_train_quadratic(honest_sgd, steps=300)[0], x0) < 0.1

  x_vote, _, _ = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS, fault=fault), steps=300)
  assert np.all(np.isfinite(x_vote))
  assert _distance_ratio(x_vote, x0) < 0.1


@pytest.mark.parametrize("kind", faults.KINDS)
def test_agreement_names_the_faulty_workers(kind):
  fault = faults.byzantine(kind, workers=[0, 5], axis_name=AXIS, seed=3)
  _, _, agreement = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS, fault=fault), steps=100)
  assert sv.suspected_workers(agreement) == [0, 5], agreement


def test_honest_run_names_no_one():
  _, _, agreement = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS), steps=100)
  assert sv.suspected_workers(agreement) == []
  assert np.all(agreement > 0.5)


def test_faults_replace_only_what_the_listed_workers_send():
  mesh = harness.mesh((4,), (AXIS,))
  updates = jnp.arange(1.0, 4.0)

  def sent(kind):
    fault = faults.byzantine(kind, workers=[2], axis_name=AXIS, seed=0)
    run = jax.jit(jax.shard_map(lambda u: fault.update(u, fault.init(u))[0][None], mesh=mesh,
                                in_specs=jax.sharding.PartitionSpec(), out_specs=jax.sharding.PartitionSpec(AXIS)))
    return np.asarray(run(updates))

  honest = np.asarray(updates)
  for kind, expected in {"negate": -honest, "zero": 0 * honest, "scale": -1e3 * honest}.items():
    out = sent(kind)
    np.testing.assert_array_equal(out[[0, 1, 3]], np.stack([honest] * 3))
    np.testing.assert_array_equal(out[2], expected)
  assert np.isnan(sent("nan")[2]).all()
  np.testing.assert_array_equal(np.abs(sent("random")[2]), honest)


def test_suspected_workers_rule():
  assert sv.suspected_workers([0.9, 0.9, 0.5, 0.1, 0.88]) == [2, 3]
  assert sv.suspected_workers([0.5, 0.5, 0.5]) == []  # no signal: no one is named
