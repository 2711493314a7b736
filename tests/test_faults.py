"""Fault tolerance: the vote survives fewer than M/2 faulty workers; averaging does not."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import signvote_jax as sv
from signvote_jax import faults
from tests import harness, reference

M = 7
AXIS = "workers"
DIM = 256


def _train_quadratic(opt, steps, noise=0.5, seed=0):
  """Minimises 1/2 |x|^2 from x0 ~ N(0, 9) with per-worker noisy gradients x + noise * N(0, 1).

  Returns the final parameters and, for a vote, each worker's kappa averaged over the steps.
  """
  mesh = harness.mesh((M,), (AXIS,))
  x0 = 3.0 * jax.random.normal(jax.random.key(seed), (DIM,))

  def worker(x):
    key = jax.random.fold_in(jax.random.key(seed + 1), jax.lax.axis_index(AXIS))

    def step(carry, t):
      x, state = carry
      grads = x + noise * jax.random.normal(jax.random.fold_in(key, t), x.shape)
      updates, state = opt.update(grads, state, x)
      kappa = optax.tree.get(state, "kappa", jnp.zeros(M))
      return (optax.apply_updates(x, updates), state), kappa

    (x, _), kappa = jax.lax.scan(step, (x, opt.init(x)), jnp.arange(steps))
    return x, kappa.mean(axis=0)

  run = jax.jit(jax.shard_map(worker, mesh=mesh, in_specs=jax.sharding.PartitionSpec(),
                              out_specs=jax.sharding.PartitionSpec()))
  x, kappa = run(jax.device_put(x0, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())))
  return np.asarray(x), np.asarray(x0), np.asarray(kappa)


def _distance_ratio(x, x0):
  return float(np.linalg.norm(x) / np.linalg.norm(x0))


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
def test_signum_converges_with_three_of_seven_negating(strategy):
  fault = faults.byzantine("negate", workers=[1, 4, 6], axis_name=AXIS)
  opt = sv.signum(0.02, 0.9, vote=sv.Vote(AXIS, strategy=strategy), fault=fault)
  x, x0, kappa = _train_quadratic(opt, steps=300)
  assert _distance_ratio(x, x0) < 0.1
  assert sv.suspected_workers(kappa) == [1, 4, 6]


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


@pytest.mark.parametrize("workers", [[0, 5], [0, 3, 5]])
@pytest.mark.parametrize("kind", ["negate", "random", "scale"])
def test_kappa_names_the_faulty_workers(kind, workers):
  """Up to the most the vote tolerates (3 of 7)."""
  fault = faults.byzantine(kind, workers=workers, axis_name=AXIS, seed=3)
  _, _, kappa = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS, fault=fault), steps=100)
  assert sv.suspected_workers(kappa) == workers, kappa


@pytest.mark.parametrize("workers", [[0, 5], [0, 3, 5]])
@pytest.mark.parametrize("kind", ["zero", "nan"])
def test_workers_with_nothing_to_say_abstain(kind, workers):
  """Dead (zero) and NaN workers abstain: the others decide, and they are reported as abstaining
  (kappa NaN), neither suspected nor honest; NaN ones are counted."""
  fault = faults.byzantine(kind, workers=workers, axis_name=AXIS, seed=3)
  x, x0, kappa = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS, fault=fault), steps=100)
  assert np.isnan(kappa[workers]).all() and (kappa[[m for m in range(M) if m not in workers]] > 0).all(), kappa
  assert sv.suspected_workers(kappa) == []
  x_honest, _, _ = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS), steps=100)
  assert _distance_ratio(x, x0) < 1.1 * _distance_ratio(x_honest, x0)  # As fast as without them.

  rng = np.random.default_rng(1)
  values = rng.normal(size=(M, 300)).astype(np.float32)
  opt = optax.chain(fault, sv.scale_by_majority_vote(AXIS))
  votes, state = harness.update_once(opt, jnp.asarray(values), harness.mesh((M,), (AXIS,)), AXIS)
  sent = values.copy()
  sent[workers] = 0.0 if kind == "zero" else np.nan
  np.testing.assert_array_equal(np.asarray(votes), reference.vote(sent))  # The others' vote.
  others = np.sign(np.sum(np.sign(np.delete(values, workers, axis=0)), axis=0))
  np.testing.assert_array_equal(np.asarray(votes)[others != 0], others[others != 0])
  expected_nonfinite = np.zeros(M)
  expected_nonfinite[workers] = 300 if kind == "nan" else 0
  np.testing.assert_array_equal(np.asarray(optax.tree.get(state, "nonfinite")), expected_nonfinite)


@pytest.mark.parametrize("sent_value, workers", [(1.0, [5, 6]), (1.0, [4, 5, 6]), (-1.0, [4, 5, 6])])
def test_kappa_names_constant_ballots_that_raw_agreement_ranks_first(sent_value, workers):
  """Where the true signs lean +1, workers sending a constant ballot agree with the vote on most
  coordinates, and raw agreement can rank them above the honest; their kappa is exactly 0."""
  rng = np.random.default_rng(0)
  truth = np.where(rng.random(4096) < 0.8, 1.0, -1.0)
  # Honest workers see the true sign on 3 coordinates in 4, with magnitudes that vary.
  sent = np.where(rng.random((M, truth.size)) < 0.75, truth, -truth) * rng.uniform(0.1, 1.0, (M, truth.size))
  sent[workers] = sent_value
  _, state = harness.update_once(sv.scale_by_majority_vote(AXIS), jnp.asarray(sent, jnp.float32),
                                 harness.mesh((M,), (AXIS,)), AXIS)
  agreement, kappa = np.asarray(state.agreement), np.asarray(state.kappa)
  np.testing.assert_allclose(kappa, reference.kappa(sent), rtol=1e-5, atol=1e-6)
  honest_workers = [m for m in range(M) if m not in workers]
  if sent_value > 0:
    assert agreement[workers].min() > np.median(agreement[honest_workers]), agreement
  np.testing.assert_array_equal(kappa[workers], 0.0)
  assert sv.suspected_workers(kappa) == workers, kappa


def test_honest_run_names_no_one():
  _, _, kappa = _train_quadratic(sv.signum(0.02, 0.9, axis_name=AXIS), steps=100)
  assert sv.suspected_workers(kappa) == []
  assert np.all(kappa > 0)


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
  assert sv.suspected_workers([0.8, 0.8, 0.37, -0.5, 0.76]) == [2, 3]  # below half the median, 0.38
  assert sv.suspected_workers([0.8, 0.8, 0.39, -0.5, 0.76]) == [3]
  assert sv.suspected_workers([0.0, 0.0, 0.0]) == []  # no signal: no one is named
  assert sv.suspected_workers([-0.2, 0.3, -0.1]) == []
