"""The vote composes with the rest of optax; each composition is checked against numpy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax.signum import lion_direction
from tests import harness
from tests import reference

M = 3
STEPS = 6
LR, B1, WD = 0.05, 0.9, 0.1
AXIS = "workers"


def _run(opt, seed=0, steps=STEPS):
  problem = harness.NoisyQuadratic(M, steps, seed=seed)
  params, state = harness.run_shard_map(opt, problem, steps, harness.mesh((M,), (AXIS,)), (AXIS,))
  return problem, harness.flat(params), state


def _signum_reference(problem, **kwargs):
  return reference.signum_majority(problem.x0, problem.numpy_grad, M, STEPS, LR, B1, WD, **kwargs)[0]


def test_inject_hyperparams_with_schedule():
  schedule = optax.piecewise_constant_schedule(LR, {3: 0.1})
  opt = optax.inject_hyperparams(sv.signum)(learning_rate=schedule, b1=B1, weight_decay=WD, axis_name=AXIS)
  problem, params, state = _run(opt)

  x = np.array(problem.x0, np.float64)
  v = np.zeros((M, x.size))
  for t in range(STEPS):
    v = B1 * v + (1 - B1) * np.stack([problem.numpy_grad(x, m, t) for m in range(M)])
    x = x - (LR if t < 3 else LR * 0.1) * (reference.vote(v) + WD * x)
  np.testing.assert_allclose(params, x, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(state.hyperparams["learning_rate"])[0], LR * 0.1, rtol=1e-6)


def test_multisteps_votes_every_k_steps():
  opt = sv.per_worker(optax.MultiSteps(sv.signum(LR, B1, WD, axis_name=AXIS), every_k_schedule=2), AXIS)
  problem, params, _ = _run(opt)
  np.testing.assert_allclose(params, _signum_reference(problem, every_k=2), rtol=1e-6, atol=1e-6)


def test_clipping_before_momentum():
  clip = 2.0
  opt = optax.chain(optax.clip_by_global_norm(clip), sv.signum(LR, B1, WD, axis_name=AXIS))
  problem, params, _ = _run(opt)
  np.testing.assert_allclose(params, _signum_reference(problem, clip_norm=clip), rtol=1e-5, atol=1e-5)


def test_masked_votes_selected_leaves_and_averages_the_rest():
  mask = {"a": True, "b": False, "c": True, "d": False}
  rest = jax.tree.map(lambda m: not m, mask)
  opt = optax.chain(optax.masked(sv.signum(LR, B1, WD, axis_name=AXIS), mask),
                    optax.masked(optax.chain(sv.mean_allreduce(AXIS), optax.sgd(LR)), rest))
  problem, params, _ = _run(opt)

  selected = harness.flat({k: np.full(harness.SHAPES[k], mask[k]) for k in mask}).astype(bool)
  # Coordinates do not interact under either rule, so each reference is right on its own leaves.
  np.testing.assert_allclose(params[selected], _signum_reference(problem)[selected], rtol=1e-6, atol=1e-6)
  x = np.array(problem.x0, np.float64)
  for t in range(STEPS):
    x = x - LR * np.mean([problem.numpy_grad(x, m, t) for m in range(M)], axis=0)
  np.testing.assert_allclose(params[~selected], x[~selected], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", ["sv.lion", "chain"])
def test_distributed_lion(build):
  """sv.lion, and the same chain built by hand from optax.scale_by_lion, against the numpy reference."""
  b1, b2 = 0.9, 0.99
  opt = sv.lion(LR, b1, b2, WD, axis_name=AXIS) if build == "sv.lion" else optax.chain(
      sv.per_worker(optax.scale_by_lion(b1=b1, b2=b2), AXIS),
      sv.scale_by_majority_vote(AXIS),
      optax.add_decayed_weights(WD),
      optax.scale_by_learning_rate(LR),
  )
  problem, params, _ = _run(opt)
  expected = reference.lion_majority(problem.x0, problem.numpy_grad, M, STEPS, LR, b1, b2, WD)
  np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-6)


def test_lion_keeps_its_momentum_through_a_non_finite_gradient():
  """Where the gradient is NaN or Inf the momentum is kept and the direction is NaN (an abstention)."""
  lion = lion_direction(0.9, 0.99)
  params = jnp.zeros(4)
  state = lion.update(jnp.array([1.0, -2.0, 3.0, 4.0]), lion.init(params))[1]
  direction, after = lion.update(jnp.array([np.nan, np.inf, -np.inf, -1.0]), state)
  np.testing.assert_array_equal(np.isnan(direction), [True, True, True, False])
  mu = 0.01 * np.array([1.0, -2.0, 3.0, 4.0])
  np.testing.assert_allclose(after.mu, [mu[0], mu[1], mu[2], 0.99 * mu[3] + 0.01 * -1.0], rtol=1e-6)
  assert float(direction[3]) == np.sign(0.9 * mu[3] + 0.1 * -1.0)
  alone = sv.lion(0.1)  # One worker: abstains where the direction is NaN.
  updates, _ = alone.update(jnp.array([np.nan, 1.0, 0.0, -1.0]), alone.init(params), params)
  np.testing.assert_allclose(updates, [0.0, -0.1, 0.0, 0.1])


def test_dtypes_preserved_and_no_retracing():
  mesh = harness.mesh((M,), (AXIS,))
  opt = sv.shard_optimizer(sv.signum(LR, B1, WD, vote=sv.Vote(AXIS, strategy="alltoall")), mesh)
  spec = jax.sharding.PartitionSpec(AXIS)
  params = {"w": jnp.ones((5, 7), jnp.bfloat16), "b": jnp.ones((3,), jnp.float32)}

  shared = jax.sharding.PartitionSpec()
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, shared))
  state = opt.init(params)
  specs = sv.partition_specs(state)
  traces = []

  def step(params, state, grads):
    traces.append(1)
    grads = jax.tree.map(lambda g: g[0], grads)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  sharded = jax.sharding.NamedSharding(mesh, spec)
  run = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(shared, specs, spec), out_specs=(shared, specs)))
  rng = np.random.default_rng(0)
  for _ in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(M, *p.shape)), p.dtype), params)
    params, state = run(params, state, jax.device_put(grads, sharded))
  assert len(traces) == 1, f"traced {len(traces)} times for 3 steps of equal shapes"
  assert params["w"].dtype == jnp.bfloat16 and params["b"].dtype == jnp.float32
  assert state[0].ema["w"].dtype == jnp.bfloat16


def _run_sharded(tx, steps=STEPS, **extra_args):
  """``steps`` of ``tx`` through ``sv.shard_optimizer`` (``init`` outside the map, one jitted step
  at a time, ``extra_args`` passed to ``update``): the problem, its final parameters and state."""
  problem = harness.NoisyQuadratic(M, steps, seed=0)
  mesh = harness.mesh((M,), (AXIS,))
  opt = sv.shard_optimizer(tx, mesh)
  params = jax.device_put(problem.tree(problem.x0), NamedSharding(mesh, P()))
  state = opt.init(params)
  specs = sv.partition_specs(state)
  center = problem.tree(problem.center)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P(AXIS), P()), out_specs=(P(), specs))
  def step(params, state, inputs, t):
    noise, factor = jax.tree.map(lambda n: n[0], inputs)
    grads = jax.tree.map(lambda x, c, n, f: (x - c + n[t]) * f[t], params, center, noise, factor)
    updates, state = opt.update(grads, state, params, **extra_args)
    return optax.apply_updates(params, updates), state

  inputs = jax.device_put(problem.per_worker_trees(), NamedSharding(mesh, P(AXIS)))
  for t in range(steps):
    params, state = step(params, state, inputs, jnp.int32(t))
  return problem, harness.flat(jax.tree.map(np.asarray, params)), state


def test_multisteps_through_shard_optimizer_needs_no_per_worker():
  """MultiSteps' accumulated gradients are each worker's own: shard_optimizer types them so itself."""
  problem, params, state = _run_sharded(optax.MultiSteps(sv.signum(LR, B1, WD, axis_name=AXIS), every_k_schedule=2))
  np.testing.assert_allclose(params, _signum_reference(problem, every_k=2), rtol=1e-6, atol=1e-6)
  assert sv.partition_specs(state).acc_grads["a"] == P(AXIS)  # Stacked over the workers, as the momentum.


def test_apply_if_finite_after_the_allreduce_and_not_before_the_vote():
  opt = optax.chain(sv.mean_allreduce(AXIS), optax.apply_if_finite(optax.sgd(LR), max_consecutive_errors=3))
  problem, params, _ = _run_sharded(opt)
  x = np.array(problem.x0, np.float64)
  for t in range(STEPS):
    x = x - LR * np.mean([problem.numpy_grad(x, m, t) for m in range(M)], axis=0)
  np.testing.assert_allclose(params, x, rtol=1e-5, atol=1e-6)
  before = optax.apply_if_finite(sv.signum(LR, axis_name=AXIS), max_consecutive_errors=3)
  with pytest.raises(ValueError, match=r"shard_optimizer: the update's types differ from worker to worker .* put it "
                                       r"after the exchange, as optax.chain\(sv.mean_allreduce\(axis\)"):
    _run_sharded(before)


def test_extra_update_arguments_pass_through_shard_optimizer():
  plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.5, accumulation_size=1)
  _, _, state = _run_sharded(optax.chain(sv.signum(LR, B1, WD, axis_name=AXIS), plateau), steps=2, value=jnp.float32(2.5))
  # Step 1 sets the best value, step 2 does not beat it: after patience=1 the scale halves.
  assert float(optax.tree.get(state, "best_value")) == 2.5 and float(optax.tree.get(state, "scale")) == 0.5


def test_weight_decay_mask_and_a_float32_momentum_for_bfloat16_parameters():
  """Decay on the masked leaves only; the momentum kept in float32 (with bfloat16 it would stall:
  0.999 rounds to 1 in bfloat16), against numpy in float64 rounded to bfloat16 once a step."""
  b1, lr, wd, steps = 0.999, 2.0**-4, 0.5, 5
  rng = np.random.default_rng(0)
  grads = {"w": rng.normal(size=(steps, 6)), "b": rng.normal(size=(steps, 3))}
  x = {"w": np.ones(6), "b": np.ones(3)}
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.bfloat16), x)
  opt = sv.signum(lr, b1, wd, mask={"w": True, "b": False}, accumulator_dtype=jnp.float32)
  state = opt.init(params)
  v = jax.tree.map(np.zeros_like, x)
  bf16 = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64)  # pylint: disable=unnecessary-lambda-assignment
  for t in range(steps):
    g = {k: grads[k][t] for k in grads}
    updates, state = opt.update(jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), g), state, params)
    params = optax.apply_updates(params, updates)
    v = {k: b1 * v[k] + (1 - b1) * bf16(g[k]) for k in v}
    x = {k: bf16(x[k] - lr * (np.sign(v[k]) + (wd * x[k] if k == "w" else 0))) for k in x}
  assert state[0].ema["w"].dtype == jnp.float32 and params["w"].dtype == jnp.bfloat16
  for k in x:
    np.testing.assert_array_equal(np.asarray(params[k], np.float64), x[k])
