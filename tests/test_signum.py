"""Signum with majority vote against the independent numpy reference of Algorithm 1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import signvote_jax as sv
from tests import harness
from tests import reference

STEPS = 6
LR, B1, WD = 0.05, 0.9, 0.1


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
@pytest.mark.parametrize("num_workers", [1, 2, 3, 7, 8])
def test_matches_numpy_reference(num_workers, strategy):
  problem = harness.NoisyQuadratic(num_workers, STEPS, seed=num_workers)
  opt = sv.signum(LR, B1, WD, vote=sv.Vote("workers", strategy=strategy))
  params, state = harness.run_shard_map(opt, problem, STEPS, harness.mesh((num_workers,), ("workers",)), ("workers",))

  expected, ties = reference.signum_majority(
      problem.x0, problem.numpy_grad, num_workers, STEPS, LR, B1, WD
  )
  np.testing.assert_allclose(harness.flat(params), expected, rtol=1e-6, atol=1e-6)
  if num_workers % 2 == 0:
    assert ties > 0, "the data should produce tied votes for even M, which must apply 0"


@pytest.mark.parametrize("num_workers", [3, 7, 8])
def test_replicated_voters_match_numpy_reference_under_scan(num_workers):
  """alltoall with 3 voters a shard, a whole run in one lax.scan inside shard_map (check_vma on):
  honest voters agree, so the median is the vote of Algorithm 1."""
  problem = harness.NoisyQuadratic(num_workers, STEPS, seed=num_workers)
  opt = sv.signum(LR, B1, WD, vote=sv.Vote("workers", strategy="alltoall", replicas=3))
  params, state = harness.run_shard_map(opt, problem, STEPS, harness.mesh((num_workers,), ("workers",)), ("workers",))
  expected, _ = reference.signum_majority(problem.x0, problem.numpy_grad, num_workers, STEPS, LR, B1, WD)
  np.testing.assert_allclose(harness.flat(params), expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(optax.tree.get(state, "voter_kappa"))[0], np.ones(num_workers))


@pytest.mark.parametrize("hosts, local, outer_strategy, replicas", [
    (hosts, local, outer, 1) for hosts, local in [(2, 4), (4, 2), (3, 2)] for outer in ("allgather", "alltoall")
] + [(4, 2, "alltoall", 3), (3, 2, "alltoall", 3)])
def test_hierarchical_matches_numpy_reference(hosts, local, outer_strategy, replicas):
  problem = harness.NoisyQuadratic(hosts * local, STEPS, seed=10 * hosts + local)
  opt = sv.signum(LR, B1, WD, vote=sv.Vote("hosts", strategy="hierarchical", inner_axis_name="local",
                                      outer_strategy=outer_strategy, replicas=replicas))
  mesh = harness.mesh((hosts, local), ("hosts", "local"))
  params, _ = harness.run_shard_map(opt, problem, STEPS, mesh, ("hosts", "local"))

  expected = reference.hierarchical_signum(problem.x0, problem.numpy_grad, hosts, local, STEPS, LR, B1, WD)
  np.testing.assert_allclose(harness.flat(params), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("num_workers", [1, 2, 3, 4, 5, 7, 8])
def test_strategies_bit_identical_and_exact(num_workers, dtype):
  rng = np.random.default_rng(num_workers)
  # Small integers make ties frequent; zeros, -0.0, NaN and Inf have nothing to say (DESIGN.md).
  values = rng.integers(-2, 3, size=(num_workers, 301)).astype(np.float32)
  values[:, :5] = [0.0, -0.0, np.nan, np.inf, -np.inf]
  values[: num_workers // 2, 64:96] = 0.0  # Some workers abstain on a whole word.
  ballots = {"w": jnp.asarray(values[:, :300].reshape(num_workers, 20, 15), dtype),
             "s": jnp.asarray(values[:, 300], dtype)}
  results = {
      s: harness.update_once(sv.scale_by_majority_vote(vote=sv.Vote("workers", strategy=s)), ballots,
                             harness.mesh((num_workers,), ("workers",)), "workers")
      for s in ("allgather", "alltoall")
  }
  (votes_ag, state_ag), (votes_a2a, state_a2a) = results["allgather"], results["alltoall"]
  for key in ballots:
    assert votes_ag[key].dtype == dtype
    np.testing.assert_array_equal(np.asarray(votes_ag[key]), np.asarray(votes_a2a[key]))
  for statistic_ag, statistic_a2a in zip(state_ag, state_a2a):
    np.testing.assert_array_equal(np.asarray(statistic_ag), np.asarray(statistic_a2a))

  flat = np.concatenate([np.asarray(ballots["s"], np.float32)[:, None],
                         np.asarray(ballots["w"], np.float32).reshape(num_workers, -1)], axis=1)
  sizes = [1, 300]  # Leaves in key order: "s", "w".
  np.testing.assert_array_equal(harness.flat(votes_ag), reference.vote(flat, leaf_sizes=sizes))
  np.testing.assert_allclose(np.asarray(state_ag.agreement), reference.agreement(flat, leaf_sizes=sizes), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state_ag.kappa), reference.kappa(flat, leaf_sizes=sizes), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(state_ag.nonfinite), reference.nonfinite(flat))


@pytest.mark.parametrize("outer_strategy", ["allgather", "alltoall"])
@pytest.mark.parametrize("hosts, local", [(2, 4), (3, 2), (4, 2)])
def test_hierarchical_vote_and_statistics_are_those_of_the_host_sums(hosts, local, outer_strategy):
  """Each host's devices vote one slice each; the gathered vote and statistics are of whole host sums."""
  rng = np.random.default_rng(hosts * local)
  values = rng.integers(-2, 3, size=(hosts * local, 7 * 45 + 3)).astype(np.float32)
  ballots = {"w": jnp.asarray(values[:, :315].reshape(-1, 7, 45)), "s": jnp.asarray(values[:, 315:])}
  vote = sv.scale_by_majority_vote(vote=sv.Vote("hosts", strategy="hierarchical", inner_axis_name="local",
                                                 outer_strategy=outer_strategy))
  mesh = harness.mesh((hosts, local), ("hosts", "local"))
  votes, state = harness.update_once(vote, ballots, mesh, ("hosts", "local"))

  flat = np.concatenate([values[:, 315:], values[:, :315]], axis=1)  # Leaves in key order: "s", "w".
  host_sums = flat.reshape(hosts, local, -1).sum(axis=1)
  sizes = [3, 315]
  np.testing.assert_array_equal(harness.flat(votes), reference.vote(host_sums, leaf_sizes=sizes))
  np.testing.assert_allclose(np.asarray(state.agreement), reference.agreement(host_sums, leaf_sizes=sizes), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.kappa), reference.kappa(host_sums, leaf_sizes=sizes), rtol=1e-5, atol=1e-6)


def test_single_worker_matches_optax_signum_with_decoupled_decay():
  rng = np.random.default_rng(0)
  params = {"a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=7), jnp.float32)}
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(5)]
  ours = sv.signum(LR, B1, WD)
  theirs = optax.chain(optax.signum(LR, B1), optax.add_decayed_weights(-LR * WD))

  p_ours, p_theirs = params, params
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  for g in grads:
    u, s_ours = ours.update(g, s_ours, p_ours)
    p_ours = optax.apply_updates(p_ours, u)
    # optax.signum's update is -lr * sign(v); add decoupled decay -lr * wd * x on the same params.
    u, s_theirs = theirs.update(g, s_theirs, p_theirs)
    p_theirs = optax.apply_updates(p_theirs, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p_ours, p_theirs)
  # One worker has no one to agree with: its statistics say "not measured", not "perfect".
  vote_state = s_ours[1]
  assert np.isnan(np.asarray(vote_state.agreement)).all() and np.isnan(np.asarray(vote_state.kappa)).all()
  assert sv.suspected_workers(vote_state.kappa) == []


def test_pmap_matches_numpy_reference():
  num_workers, steps = 3, 4
  problem = harness.NoisyQuadratic(num_workers, steps, seed=3)
  opt = sv.signum(LR, B1, WD, vote=sv.Vote("workers", strategy="alltoall"))
  center = problem.tree(problem.center)
  noise, _ = problem.per_worker_trees()

  def step(params, state, noise_t):
    grads = jax.tree.map(lambda x, c, n: x - c + n, params, center, noise_t)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  devices = jax.devices()[:num_workers]
  pstep = jax.pmap(step, axis_name="workers", devices=devices)
  params = jax.tree.map(lambda x: np.stack([x] * num_workers), problem.tree(problem.x0))
  state = jax.pmap(opt.init, axis_name="workers", devices=devices)(params)
  for t in range(steps):
    params, state = pstep(params, state, jax.tree.map(lambda n: n[:, t], noise))

  expected, _ = reference.signum_majority(problem.x0, problem.numpy_grad, num_workers, steps, LR, B1, WD)
  for worker in range(num_workers):
    np.testing.assert_allclose(harness.flat(jax.tree.map(lambda p: p[worker], params)), expected, rtol=1e-6, atol=1e-6)
