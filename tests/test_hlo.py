"""One exchange per step for the whole tree, read from the compiled HLO."""

import collections
import re

import jax
import jax.numpy as jnp
import optax
import pytest

import signvote_jax as sv
from tests import harness

AXIS = "workers"
P = jax.sharding.PartitionSpec
COLLECTIVES = ("all-to-all", "all-gather", "all-reduce", "collective-permute", "reduce-scatter")
# One HLO instruction per line: `%name = u32[8,3]{1,0} all-gather(...)`; combined ops have a tuple type.
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*\(?([a-z0-9]+)\[.*?\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


def _collectives(opt, num_workers, num_leaves=16):
  mesh = harness.mesh((num_workers,), (AXIS,))
  params = {f"layer{i}": jnp.zeros((i + 1, 7)) for i in range(num_leaves)}

  def step(params, grads):
    state = opt.init(params)
    updates, _ = opt.update(jax.tree.map(lambda g: g[0], grads), state, params)
    return optax.apply_updates(params, updates)

  sharding = jax.sharding.NamedSharding(mesh, P(AXIS))
  grads = jax.tree.map(lambda p: jax.device_put(jnp.ones((num_workers, *p.shape)), sharding), params)
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, P()))
  compiled = (
      jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P()))
      .lower(params, grads)
      .compile()
  )
  return collectives_of(compiled)


def collectives_of(compiled) -> collections.Counter:
  """How many collectives of each (kind, element type) a compiled computation holds."""
  matches = (INSTRUCTION.match(line) for line in compiled.as_text().splitlines())
  return collections.Counter((m.group(2), m.group(1)) for m in matches if m)


@pytest.mark.parametrize("num_workers", [2, 3, 8])
def test_alltoall_is_one_all_to_all_and_one_all_gather_of_words(num_workers):
  found = _collectives(sv.signum(1e-3, axis_name=AXIS, strategy="alltoall"), num_workers)
  assert found == {("all-to-all", "u32"): 1, ("all-gather", "u32"): 1}, found


def test_allgather_is_one_all_gather_of_words():
  found = _collectives(sv.signum(1e-3, axis_name=AXIS, strategy="allgather"), 4)
  assert found == {("all-gather", "u32"): 1}, found


def test_baseline_moves_floats():
  found = _collectives(optax.chain(sv.mean_allreduce(AXIS), optax.sgd(0.1)), 4)
  assert set(found) == {("all-reduce", "f32")}, found
