"""One exchange per step for the whole tree, read from the compiled HLO."""

import jax
import jax.numpy as jnp
import optax
import pytest

import signvote_jax as sv
from signvote_jax import hlo
from signvote_jax import ops
from tests import harness

AXIS = "workers"
P = jax.sharding.PartitionSpec


def _collectives(opt, num_workers, num_leaves=16):
  return hlo.counts(_compiled(opt, num_workers, num_leaves))


def _compiled(opt, num_workers, num_leaves):
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
  return compiled.as_text()


@pytest.mark.parametrize("num_workers,replicas", [(2, 1), (3, 1), (8, 1), (3, 3), (8, 3), (8, 5)])
@pytest.mark.parametrize("num_leaves", [1, 16])
def test_alltoall_is_one_all_to_all_and_one_all_gather_of_words(num_workers, replicas, num_leaves):
  """Whatever the replicas (and faulty voters) and the number of leaves."""
  voter_fault = sv.faults.voter("negate+blame", [0]) if replicas > 1 else None
  opt = sv.signum(1e-3, vote=sv.Vote(AXIS, strategy="alltoall", replicas=replicas, voter_fault=voter_fault))
  found = _collectives(opt, num_workers, num_leaves)
  assert found == {("all-to-all", "u32"): 1, ("all-gather", "u32"): 1}, found


@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_replicas_send_r_shards_each_way(replicas):
  """7 workers: out, r shards of bits and abstention flags to each voter; back, each voter's r voted
  shards (sign plane and one "anyone voted" flag a word), 4 M counts a shard and its non-finite count."""
  num_workers, num_leaves = 7, 16
  words = sum(ops.num_words(7 * (i + 1)) for i in range(num_leaves))
  shard = -(-words // num_workers)
  opt = sv.signum(1e-3, vote=sv.Vote(AXIS, strategy="alltoall", replicas=replicas))
  found = {c.kind: c.result_bytes for c in hlo.collectives(_compiled(opt, num_workers, num_leaves))}
  out = num_workers * replicas * (shard + ops.num_words(shard))
  back = num_workers * (replicas * shard + ops.num_words(replicas * shard) + replicas * 4 * num_workers + 1)
  assert found == {"all-to-all": 4 * out, "all-gather": 4 * back}, found


def test_allgather_is_one_all_gather_of_words():
  found = _collectives(sv.signum(1e-3, vote=sv.Vote(AXIS, strategy="allgather")), 4)
  assert found == {("all-gather", "u32"): 1}, found


def test_baseline_moves_floats():
  found = _collectives(optax.chain(sv.mean_allreduce(AXIS), optax.sgd(0.1)), 4)
  assert set(found) == {("all-reduce", "f32")}, found


def test_bytes_per_device_of_each_collective_on_a_hosts_by_devices_mesh():
  """2 hosts x 4 devices: a float psum inside each host, a word gather across hosts, one over all."""
  mesh = harness.mesh((2, 4), ("hosts", "devices"))

  def step(x, w):
    inner = jax.lax.psum(x, "devices")
    across = jax.lax.all_gather(w, "hosts")
    everyone = jax.lax.all_to_all(w.reshape(8, 5), ("hosts", "devices"), 0, 0)
    return inner, across, everyone

  x, w = jnp.zeros((1000,), jnp.float32), jnp.zeros((40,), jnp.uint32)
  fn = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P()), out_specs=(P(), P(), P()), check_vma=False))
  text = fn.lower(x, w).compile().as_text()
  found = {c.kind: c for c in hlo.collectives(text)}
  assert set(found) == {"all-reduce", "all-gather", "all-to-all"}
  reduce, gather, shuffle = found["all-reduce"], found["all-gather"], found["all-to-all"]
  assert (reduce.dtype, reduce.result_bytes, reduce.group_size(8)) == ("f32", 4000, 4)
  assert reduce.bytes_per_device(8) == 2 * 3 / 4 * 4000  # ring all-reduce
  assert sorted(reduce.groups) == [(0, 1, 2, 3), (4, 5, 6, 7)] and reduce.within(2, 8)
  assert (gather.dtype, gather.result_bytes, gather.group_size(8)) == ("u32", 2 * 160, 2)
  assert gather.bytes_per_device(8) == 160  # receives the other host's 40 words
  assert sorted(gather.groups) == [(0, 4), (1, 5), (2, 6), (3, 7)] and not gather.within(2, 8)
  assert (shuffle.result_bytes, shuffle.group_size(8)) == (160, 8)
  assert shuffle.bytes_per_device(8) == 7 / 8 * 160
  # The host's own psum is local; the gather across hosts and the all-to-all cross the network.
  assert hlo.bytes_per_device(text, 8, hosts=2) == (160 + 7 / 8 * 160, 2 * 3 / 4 * 4000)


def test_iota_replica_groups_are_expanded():
  line = "%ag = u32[2,35]{1,0} all-gather(%x), replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}"
  (found,) = hlo.collectives(line)
  assert found.groups == ((0, 4), (1, 5), (2, 6), (3, 7))
  assert found.result_bytes == 2 * 35 * 4
