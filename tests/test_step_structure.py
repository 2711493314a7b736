"""What a compiled step does, read from its HLO: no copy of the momentum, few passes, few bytes.

The step's cost on a device is its passes over memory. These tests hold the structure that makes the
vote cost what its wire costs (``benchmarks/step.py`` measures the time): the momentum is read and
written once, in place (no copy of it), the ballot of a leaf is one pass, and the whole step touches
a bounded number of bytes per coordinate (XLA's cost analysis, which counts every operand of a pass
in full, so that reading a slice of the vote's bit planes counts the planes) in a bounded number of
fusions. The bounds are the measured values with a little room; a change that adds a pass over
the momentum or the parameters breaks them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax import hlo
from tests import harness

# Leaves of a few thousand coordinates, some not a multiple of 32, like a small model's layers.
SHAPES = {"a": (64, 96), "b": (4099,), "c": (32, 32, 3), "d": (5000,)}
COORDINATES = sum(int(np.prod(s)) for s in SHAPES.values())
SMALLEST = min(int(np.prod(s)) for s in SHAPES.values())


def _analysis(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  text = compiled.as_text()
  return {"bytes": cost["bytes accessed"] / COORDINATES, "fusions": hlo.fusion_count(text),
          "copies": hlo.large_float_copies(text, SMALLEST)}


def _one_device(opt):
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return _analysis(jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), params).compile())


def _mapped(opt, mesh):
  worker_axes = tuple(mesh.axis_names)
  sharded = sv.shard_optimizer(opt, mesh)
  params = jax.device_put({k: jnp.zeros(s) for k, s in SHAPES.items()}, NamedSharding(mesh, P()))
  state = sharded.init(params)
  specs = sv.partition_specs(state)
  grads = jax.device_put({k: jnp.zeros((mesh.devices.size, *s)) for k, s in SHAPES.items()},
                         NamedSharding(mesh, P(worker_axes)))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P(worker_axes)), out_specs=(P(), specs))
  def step(params, state, grads):
    updates, state = sharded.update(jax.tree.map(lambda g: g[0], grads), state, params)
    return optax.apply_updates(params, updates), state

  return _analysis(step.lower(params, state, grads).compile())


FLAT = harness.mesh((4,), ("workers",))
HOSTS = harness.mesh((2, 2), ("hosts", "devices"))
LEAVES = len(SHAPES)
LEAVES_WITH_COPY = LEAVES

# name: (the step's analysis, bytes per coordinate at most, fusions at most), measured on these 4 leaves
# (2026-12-04) with about 5 % of room. Per coordinate a Signum step reads the gradient twice (the new
# momentum's pass and the ballot's), the momentum once and the parameters once, and writes the momentum
# and the parameters once: 28 bytes; the rest is XLA's cost analysis counting whole operands where a pass
# reads a slice of them (each leaf's last, partial word; each leaf's share of the vote's planes). Lion's update reads the
# old momentum (its direction) after the new one has overwritten it in place: XLA keeps a copy of each
# leaf of it, as it does for optax.lion (no data dependency can order the two passes in an optax chain).
COPIES_ALLOWED = {"lion, one worker": LEAVES_WITH_COPY, "lion allgather, M = 4": LEAVES_WITH_COPY}
CASES = {
    "optax.signum (reference)": (lambda: _one_device(optax.chain(optax.signum(1e-3), optax.add_decayed_weights(1e-4))),
                                 24.5, 10),
    "signum, one worker": (lambda: _one_device(sv.signum(1e-3, weight_decay=1e-4)), 37, 25),
    "lion, one worker": (lambda: _one_device(sv.lion(1e-4, weight_decay=1e-4)), 45, 25),
    "sgd over mean_allreduce (reference)": (
        lambda: _mapped(optax.chain(sv.mean_allreduce("workers"), optax.sgd(0.1, momentum=0.9)), FLAT), 32.5, 9),
    "signum allgather, M = 4": (lambda: _mapped(sv.signum(1e-3, axis_name="workers"), FLAT), 41, 35),
    "signum alltoall, M = 4": (
        lambda: _mapped(sv.signum(1e-3, vote=sv.Vote("workers", strategy="alltoall")), FLAT), 45, 54),
    "signum alltoall r = 3, M = 4": (
        lambda: _mapped(sv.signum(1e-3, vote=sv.Vote("workers", strategy="alltoall", replicas=3)), FLAT), 73, 78),
    "signum hierarchical, 2 hosts of 2": (
        lambda: _mapped(sv.signum(1e-3, vote=sv.Vote("hosts", inner_axis_name="devices", strategy="hierarchical",
                                                      outer_strategy="alltoall")), HOSTS), 49, 50),
    "lion allgather, M = 4": (lambda: _mapped(sv.lion(1e-4, axis_name="workers"), FLAT), 49, 35),
}


@pytest.mark.parametrize("name", list(CASES))
def test_step_touches_each_coordinate_a_bounded_number_of_times(name):
  analyse, max_bytes, max_fusions = CASES[name]
  found = analyse()
  assert len(found["copies"]) <= COPIES_ALLOWED.get(name, 0), f"{name}: copies as large as a leaf: {found['copies']}"
  assert found["bytes"] <= max_bytes, f"{name}: {found['bytes']:.1f} bytes per coordinate, bound {max_bytes}"
  assert found["fusions"] <= max_fusions, f"{name}: {found['fusions']} fusions, bound {max_fusions}"


MODULE = """HloModule m

%fused_computation (param_0: f32[8192]) -> f32[8192] {
  %param_0 = f32[8192]{0} parameter(0)
  %copy.9 = f32[8192]{0} copy(%param_0)
  ROOT %add = f32[8192]{0} add(%copy.9, %copy.9)
}

ENTRY %main (p: f32[8192], w: u32[8192]) -> (f32[8192], f32[8192], u32[8192], f32[16]) {
  %p = f32[8192]{0} parameter(0)
  %w = u32[8192]{0} parameter(1)
  %copy.1 = f32[8192]{0} copy(%p)
  %copy.2 = u32[8192]{0} copy(%w)
  %copy.3 = f32[16]{0} copy(%p)
  %add_fusion = f32[8192]{0} fusion(%copy.1), kind=kLoop, calls=%fused_computation
  ROOT %t = (f32[8192]{0}, f32[8192]{0}, u32[8192]{0}, f32[16]{0}) tuple(%add_fusion, %copy.1, %copy.2, %copy.3)
}
"""


def test_the_hlo_reader_counts_fusions_and_the_large_float_copies_outside_them():
  assert hlo.fusion_count(MODULE) == 1
  # Not the word copy, not the small one, not the one inside the fused computation.
  assert hlo.large_float_copies(MODULE, 4096) == [("f32", 8192)]
  assert hlo.large_float_copies(MODULE, 16) == [("f32", 8192), ("f32", 16)]
  assert hlo.instruction_count(MODULE) == 10
