"""Bad input gets one clear ValueError that says what is wrong and how to fix it."""

import jax
import jax.numpy as jnp
import optax
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
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, strategy="ring")), r"Unknown strategy 'ring'; valid strategies are \('allgather', 'alltoall', 'hierarchical'\)"),
        (lambda: sv.signum(1e-4, vote=sv.Vote(AXIS, strategy="psum")), "Unknown strategy 'psum'"),
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, strategy="hierarchical")), "needs axis_name .* and inner_axis_name"),
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote("h", strategy="hierarchical", inner_axis_name="l", outer_strategy="x")), "Unknown outer_strategy 'x'"),
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, inner_axis_name="l")), "only used by strategy='hierarchical'"),
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, num_workers=0)), "num_workers must be a positive int"),
        (lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, impl="cuda")), r"impl='cuda' is not one of \('auto', 'jax', 'triton'\)"),
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
        (lambda: sv.Vote(AXIS, strategy="alltoall", num_workers=3, replicas=5), "replicas=5 needs as many voters, but axis 'workers' has 3"),
        (lambda: sv.Vote(AXIS, strategy="alltoall", num_workers=3, voter_fault=faults.voter("zero", [3])), "faulty worker 3 does not exist"),
        (lambda: sv.Vote(AXIS, outer_strategy="alltoall"), "outer_strategy is the vote across hosts of strategy='hierarchical'"),
        (lambda: sv.Vote(AXIS, strategy="alltoall", replicas=jnp.asarray(3)), "replicas shapes the exchange, so it must be a Python int"),
        (lambda: sv.signum(1e-4, axis_name=AXIS, vote=sv.Vote(AXIS)), "give the axis either as axis_name= .* or in vote="),
        (lambda: sv.scale_by_majority_vote(AXIS, vote=sv.Vote(AXIS)), "give the axis either as axis_name="),
    ],
)
def test_build_errors(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_vote_must_be_a_vote():
  with pytest.raises(TypeError, match="lion: vote= must be a signvote_jax.Vote, got 'alltoall'"):
    sv.lion(1e-4, vote="alltoall")


def test_the_same_vote_object_configures_every_transform():
  """One Vote, checked once, taken whole by signum, lion and scale_by_majority_vote (and hashable, so
  that optax.inject_hyperparams passes it through as a static argument)."""
  vote = sv.Vote(AXIS, strategy="alltoall", replicas=3, num_workers=4)
  assert vote == sv.Vote(AXIS, strategy="alltoall", replicas=3, num_workers=4) and hash(vote) is not None
  assert vote.plan.exchange.sharded and not vote.plan.hierarchical
  assert vote.replace(strategy="hierarchical", inner_axis_name="d", replicas=None).plan.hierarchical
  for build in (sv.scale_by_majority_vote, sv.signum, sv.lion):
    args = () if build is sv.scale_by_majority_vote else (1e-4,)
    assert optax.tree.get(build(*args, vote=vote).init({"w": jnp.ones(12)}), "agreement").shape == (4,)


def test_unbound_axis():
  vote = sv.scale_by_majority_vote(vote=sv.Vote(AXIS, num_workers=2))
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
  state = sv.scale_by_majority_vote(vote=sv.Vote(AXIS, num_workers=8)).init({"w": jnp.ones(3)})
  with pytest.raises(ValueError, match="built for num_workers=8, but axis 'workers' has 4 workers"):
    _in_map(lambda: sv.scale_by_majority_vote(vote=sv.Vote(AXIS, num_workers=8)).init({"w": jnp.ones(3)}).agreement)
  with pytest.raises(ValueError, match="the state was made for 8 workers but axis 'workers' has 4"):
    _in_map(lambda: sv.scale_by_majority_vote(AXIS).update({"w": jnp.ones(3)}, state)[0]["w"])


def test_faulty_worker_outside_the_axis():
  fault = faults.byzantine("negate", [4], AXIS)
  with pytest.raises(ValueError, match=r"faulty worker 4 does not exist; axis 'workers' has 4 workers \(indices 0..3\)"):
    _in_map(lambda: fault.update(jnp.ones(3), fault.init(None))[0])


def test_triton_without_gpu():
  from signvote_jax import ops  # pylint: disable=import-outside-toplevel

  if ops.triton_importable():
    pytest.skip("jax-triton is installed")
  with pytest.raises(ValueError, match="impl='triton' needs a GPU build of jax and the jax-triton package"):
    ops.pack_signs(jnp.ones(3), impl="triton")
