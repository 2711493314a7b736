"""Bad input gets one clear ValueError that says what is wrong and how to fix it."""

import jax
import jax.numpy as jnp
import pytest

import signvote_jax as sv
from signvote_jax import faults
from tests import harness

AXIS = "workers"
P = jax.sharding.PartitionSpec


def _in_map(fn, num_workers=4):
  mesh = harness.mesh((num_workers,), (AXIS,))
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(), out_specs=P()))()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sv.scale_by_majority_vote(AXIS, strategy="ring"), r"Unknown strategy 'ring'; valid strategies are \('allgather', 'alltoall', 'hierarchical'\)"),
        (lambda: sv.signum(1e-4, axis_name=AXIS, strategy="psum"), "Unknown strategy 'psum'"),
        (lambda: sv.scale_by_majority_vote(AXIS, strategy="hierarchical"), "needs axis_name .* and inner_axis_name"),
        (lambda: sv.scale_by_majority_vote("h", strategy="hierarchical", inner_axis_name="l", outer_strategy="x"), "Unknown outer_strategy 'x'"),
        (lambda: sv.scale_by_majority_vote(AXIS, inner_axis_name="l"), "only used by strategy='hierarchical'"),
        (lambda: sv.scale_by_majority_vote(AXIS, num_workers=0), "num_workers must be a positive int"),
        (lambda: sv.scale_by_majority_vote(AXIS, impl="cuda"), r"impl='cuda' is not one of \('auto', 'jax', 'triton'\)"),
        (lambda: sv.signum(1e-4, b1=1.0), r"b1 must be in \[0, 1\)"),
        (lambda: sv.signum(1e-4, weight_decay=-1.0), "weight_decay must be >= 0"),
        (lambda: sv.signum(1e-4, b1=jnp.float32(1.5)), r"b1 must be in \[0, 1\), got Array\(1.5"),
        (lambda: sv.signum(1e-4, b1=float("nan")), r"b1 must be in \[0, 1\), got nan"),
        (lambda: sv.signum(0.0), "learning_rate must be > 0, got 0.0"),
        (lambda: sv.signum(jnp.asarray(-1e-3)), "learning_rate must be > 0"),
        (lambda: sv.signum("fast"), "learning_rate must be a number or a schedule, got 'fast'"),
        (lambda: faults.byzantine("liar", [0], AXIS), r"Unknown fault kind 'liar'; valid kinds are \('negate'"),
        (lambda: faults.byzantine("negate", [1, 1], AXIS), "distinct non-negative worker indices"),
        (lambda: faults.byzantine("negate", [0], None), "needs the workers' axis_name"),
        (lambda: sv.mean_allreduce(None), "mean_allreduce needs the workers' axis_name"),
    ],
)
def test_build_errors(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_unbound_axis():
  vote = sv.scale_by_majority_vote(AXIS, num_workers=2)
  grads = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match=r"axis_name 'workers' is not bound; call it inside jax.shard_map or jax.pmap"):
    vote.update(grads, vote.init(grads))
  mean = sv.mean_allreduce(AXIS)
  with pytest.raises(ValueError, match="mean_allreduce: axis_name 'workers' is not bound"):
    mean.update(grads, mean.init(grads))


def test_init_outside_the_map_needs_the_worker_count():
  with pytest.raises(ValueError, match="init needs the worker count, but no surrounding .* binds an axis named .* pass num_workers=M"):
    sv.signum(1e-4, axis_name=AXIS).init({"w": jnp.ones(3)})


@pytest.mark.parametrize("leaf", [jnp.ones(3, jnp.int32), jnp.ones(3, jnp.bool_), jnp.ones(3, jnp.uint32)])
def test_non_float_leaves(leaf):
  vote = sv.scale_by_majority_vote(None)
  with pytest.raises(ValueError, match=r"leaf \['bad'\] has dtype .* only floating leaves .* optax.masked"):
    vote.init({"ok": jnp.ones(2), "bad": leaf})
  with pytest.raises(ValueError, match=r"leaf \['bad'\] has dtype"):
    vote.update({"ok": jnp.ones(2), "bad": leaf}, vote.init({"ok": jnp.ones(2)}))


def test_state_for_another_worker_count():
  state = sv.scale_by_majority_vote(AXIS, num_workers=8).init({"w": jnp.ones(3)})
  with pytest.raises(ValueError, match="built for num_workers=8, but axis 'workers' has 4 workers"):
    _in_map(lambda: sv.scale_by_majority_vote(AXIS, num_workers=8).init({"w": jnp.ones(3)}).agreement)
  with pytest.raises(ValueError, match="the state was made for 8 workers but axis 'workers' has 4"):
    _in_map(lambda: sv.scale_by_majority_vote(AXIS).update({"w": jnp.ones(3)}, state)[0]["w"])


def test_faulty_worker_outside_the_axis():
  fault = faults.byzantine("negate", [4], AXIS)
  with pytest.raises(ValueError, match=r"faulty worker 4 does not exist; axis 'workers' has 4 workers \(indices 0..3\)"):
    _in_map(lambda: fault.update(jnp.ones(3), fault.init(None))[0])


def test_triton_without_gpu():
  from signvote_jax import ops  # pylint: disable=import-outside-toplevel

  if ops.dispatch.triton_importable():
    pytest.skip("jax-triton is installed")
  with pytest.raises(ValueError, match="impl='triton' needs a GPU build of jax and the jax-triton package"):
    ops.pack_signs(jnp.ones(3), impl="triton")
