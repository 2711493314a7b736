"""A worker with nothing to say abstains (DESIGN.md): zero or non-finite momentum never moves a
parameter, never biases the vote, and never poisons a worker. Checked against tests/reference.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import signvote_jax as sv
from tests import harness
from tests import reference

LR, B1 = 0.05, 0.9
AXIS = "workers"
# A leaf frozen everywhere, one that only some workers see, and two live ones.
SHAPES = {"frozen": (3, 40), "partial": (70,), "live": (37,), "scalar": ()}
WORKERS = [1, 2, 3, 4, 7, 8]


def _problem(num_workers, steps, seed):
  problem = harness.NoisyQuadratic(num_workers, steps, seed=seed, shapes=SHAPES)
  problem.leaf(problem.factor, "frozen")[:] = 0.0
  problem.leaf(problem.factor, "partial")[: num_workers // 2] = 0.0  # The first half never see it.
  return problem


@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
@pytest.mark.parametrize("num_workers", WORKERS)
def test_zero_gradients_never_move_and_the_rest_is_algorithm_1(num_workers, strategy):
  steps = 50
  problem = _problem(num_workers, steps, seed=num_workers)
  opt = sv.signum(LR, B1, vote=sv.Vote(AXIS, strategy=strategy))
  params, _ = harness.run_shard_map(opt, problem, steps, harness.mesh((num_workers,), (AXIS,)), (AXIS,))

  np.testing.assert_array_equal(params["frozen"], problem.tree(problem.x0)["frozen"])  # Bit for bit.
  expected, _ = reference.signum_majority(problem.x0, problem.numpy_grad, num_workers, steps, LR, B1, 0.0,
                                          leaf_sizes=problem.leaf_sizes())
  np.testing.assert_allclose(harness.flat(params), expected, rtol=1e-5, atol=1e-5)
  if num_workers > 1:  # Voted by the workers that see it: it moves towards its optimum.
    partial = problem.leaf(np.arange(problem.size), "partial")
    start, end = problem.x0[partial] - problem.center[partial], params["partial"] - problem.center[partial]
    assert np.linalg.norm(end) < 0.5 * np.linalg.norm(start)


@pytest.mark.parametrize("outer_strategy", ["allgather", "alltoall"])
@pytest.mark.parametrize("hosts, local", [(1, 2), (2, 2), (3, 2)])
def test_hierarchical_hosts_abstain_where_their_sum_has_nothing_to_say(hosts, local, outer_strategy):
  steps = 20
  problem = _problem(hosts * local, steps, seed=hosts)
  problem.leaf(problem.factor, "partial")[:] = 1.0
  problem.leaf(problem.factor, "partial")[:local] = 0.0  # Host 0 sees nothing of it.
  opt = sv.signum(LR, B1, vote=sv.Vote("hosts", strategy="hierarchical", inner_axis_name="local",
                                       outer_strategy=outer_strategy))
  mesh = harness.mesh((hosts, local), ("hosts", "local"))
  params, _ = harness.run_shard_map(opt, problem, steps, mesh, ("hosts", "local"))
  np.testing.assert_array_equal(params["frozen"], problem.tree(problem.x0)["frozen"])

  x = problem.x0.astype(np.float64)
  v = np.zeros((hosts, local, x.size))
  for t in range(steps):
    g = np.stack([[problem.numpy_grad(x, h * local + d, t) for d in range(local)] for h in range(hosts)])
    v = B1 * v + (1 - B1) * g
    x = x - LR * reference.vote(v.sum(axis=1), t, problem.leaf_sizes())
  np.testing.assert_allclose(harness.flat(params), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("strategy", ["allgather", "alltoall"])
def test_a_non_finite_gradient_is_absorbed(strategy, bad):
  """Worker 2's gradient is non-finite at step 5: its momentum stays finite and keeps its value,
  it abstains that step (and is counted), and its kappa is honest again afterwards."""
  num_workers, steps, bad_step = 5, 12, 5
  problem = harness.NoisyQuadratic(num_workers, steps, seed=7, noise=0.3)
  problem.factor[2, bad_step] = bad
  opt = sv.signum(LR, B1, vote=sv.Vote(AXIS, strategy=strategy))
  mesh = harness.mesh((num_workers,), (AXIS,))
  center = problem.tree(problem.center)
  noise, factor = jax.device_put(problem.per_worker_trees(), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS)))
  sharded = sv.shard_optimizer(opt, mesh)
  params = jax.device_put(problem.tree(problem.x0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  state = sharded.init(params)
  specs = sv.partition_specs(state)
  P = jax.sharding.PartitionSpec

  @jax.jit
  @jax.shard_map(mesh=mesh, in_specs=(P(), specs, P(AXIS), P(AXIS), P()), out_specs=(P(), specs))
  def step(params, state, noise, factor, t):
    grads = jax.tree.map(lambda x, c, n, f: (x - c + n[0, t]) * f[0, t], params, center, noise, factor)
    updates, state = sharded.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  momenta, kappas, nonfinite = [], [], []
  for t in range(steps):
    params, state = step(params, state, noise, factor, jnp.int32(t))
    momenta.append(harness.flat(jax.tree.map(lambda m: np.asarray(m)[2], state[0].ema)))
    kappas.append(np.asarray(state[1].kappa))
    nonfinite.append(np.asarray(state[1].nonfinite))

  assert np.isfinite(momenta).all()
  np.testing.assert_array_equal(momenta[bad_step], momenta[bad_step - 1])  # Kept, not poisoned.
  expected_count = np.zeros(num_workers)
  expected_count[2] = problem.size
  np.testing.assert_array_equal(nonfinite[bad_step], expected_count)
  assert np.isnan(kappas[bad_step][2])  # It abstained everywhere that step.
  assert (np.asarray(nonfinite[bad_step + 1:]) == 0).all()
  later = np.mean(kappas[bad_step + 1:], axis=0)
  assert later[2] > 0.5 * np.median(later) and sv.suspected_workers(later) == []
  expected, _ = reference.signum_majority(problem.x0, problem.numpy_grad, num_workers, steps, LR, B1, 0.0,
                                          leaf_sizes=problem.leaf_sizes())
  np.testing.assert_allclose(harness.flat(params), expected, rtol=1e-5, atol=1e-5)


def test_single_worker_like_optax_signum_on_zeros_and_unmoved_by_non_finite():
  opt, theirs = sv.signum(LR, B1), optax.signum(LR, B1)
  rng = np.random.default_rng(0)
  center = rng.normal(size=64).astype(np.float32)
  x = x_theirs = jnp.asarray(rng.normal(size=64), jnp.float32)
  frozen = jnp.zeros(5)
  state, state_theirs = opt.init((x, frozen)), theirs.init((x_theirs, frozen))
  start = np.linalg.norm(x - center)
  for t in range(300):
    noise = rng.normal(size=64).astype(np.float32)
    grad = (x - center + noise) * (np.nan if t == 40 else 1.0)
    updates, state = opt.update((grad, jnp.zeros(5)), state, (x, frozen))
    if t == 40:
      assert int(state[1].nonfinite[0]) == 64
      np.testing.assert_array_equal(np.asarray(updates[0]), 0.0)  # Unmoved where not finite.
    x = optax.apply_updates(x, updates[0])
    np.testing.assert_array_equal(np.asarray(updates[1]), 0.0)  # Zero gradient: update 0, as optax.
    if t < 40:  # Before the NaN: exactly optax.signum.
      updates_theirs, state_theirs = theirs.update((grad, jnp.zeros(5)), state_theirs)
      x_theirs = optax.apply_updates(x_theirs, updates_theirs[0])
      np.testing.assert_array_equal(np.asarray(x), np.asarray(x_theirs))
  assert np.isfinite(np.asarray(state[0].ema[0])).all()
  assert np.linalg.norm(x - center) < 0.3 * start  # Still converges.


@pytest.mark.parametrize("num_workers", [2, 3])
def test_untied_embedding_rows_of_absent_words_stay_unchanged(num_workers):
  """Rows of an embedding (32 wide: a row is a word of the wire) for words that no batch holds."""
  nn = pytest.importorskip("flax.linen")  # Flax comes with the trainer's extra, not the library.

  class BagOfWords(nn.Module):

    @nn.compact
    def __call__(self, ids):
      return nn.Dense(4)(nn.Embed(50, 32)(ids).mean(axis=1))

  model = BagOfWords()
  rng = np.random.default_rng(num_workers)
  steps, batch = 6, 8
  ids = rng.integers(0, 25, size=(num_workers, steps, batch, 5))  # Words 25..49 never appear.
  labels = rng.integers(0, 4, size=(num_workers, steps, batch))
  params = model.init(jax.random.key(0), jnp.asarray(ids[0, 0]))["params"]
  mesh = harness.mesh((num_workers,), (AXIS,))
  opt = sv.shard_optimizer(sv.signum(1e-2, 0.9, axis_name=AXIS), mesh)
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  state = opt.init(params)
  specs = sv.partition_specs(state)
  P = jax.sharding.PartitionSpec

  @jax.jit
  @jax.shard_map(mesh=mesh, in_specs=(P(), specs, P(AXIS), P(AXIS)), out_specs=(P(), specs))
  def step(params, state, ids, labels):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, ids[0]), labels[0]).mean()

    grads = jax.grad(loss)(jax.lax.pcast(params, AXIS, to="varying"))
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  start = np.asarray(params["Embed_0"]["embedding"])
  per_worker = jax.sharding.NamedSharding(mesh, P(AXIS))
  for t in range(steps):
    params, state = step(params, state, *jax.device_put((ids[:, t], labels[:, t]), per_worker))
  end = np.asarray(params["Embed_0"]["embedding"])
  np.testing.assert_array_equal(end[25:], start[25:])
  assert (end[:25] != start[:25]).any()
