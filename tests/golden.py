"""Recorded outputs that pin the vote's behaviour bit for bit across a rewrite of its internals.

``python -m tests.golden`` runs every scenario below and writes their outputs to
``tests/golden/outputs.npz``; ``tests/test_bit_identity.py`` runs them again and asks for the same
bits. The file was written by the implementation before the one-pass restructure (issue 23), so the
test holds the restructured step to the earlier semantics on the inputs that exercise every rule of
DESIGN.md at once: zeros of both signs, NaN, +-Inf, values near the float32 maximum, words and
whole leaves with nothing to say, a worker that is NaN everywhere, faulty senders and voters. The
numpy reference (``tests/reference.py``) stays the oracle of the semantics; this file only says
that a rewrite changed nothing.

Regenerate it only when the semantics change on purpose (and say so in DESIGN.md).
"""

import functools
import json
import math
import os
import pathlib

if __name__ == "__main__":  # Before JAX starts: the devices the test suite simulates (conftest.py).
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax import ops
from tests import harness

PATH = pathlib.Path(__file__).parent / "golden" / "outputs.npz"
SHAPES = {"a": (3, 5), "b": (), "c": (37,), "d": (2, 33), "e": (64,)}
STEPS = 3


def gradients(num_workers: int, seed: int, dtype=np.float32) -> dict:
  """Per-worker gradients ``[M, STEPS, *shape]`` full of the values that have nothing to say."""
  rng = np.random.default_rng(seed)
  size = sum(math.prod(s) for s in SHAPES.values())
  values = rng.integers(-2, 3, size=(num_workers, STEPS, size)).astype(np.float32)  # zeros and ties
  values *= rng.choice([1.0, 0.25, 3.0], size=values.shape)
  specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-40], np.float32)
  picks = rng.random(values.shape) < 0.15
  values[picks] = rng.choice(specials, size=int(picks.sum()))
  values[:, :, 20:52] = 0.0  # a word of "c" with nothing to say on any worker
  values[0, 1] = np.nan  # worker 0 is NaN everywhere at step 1
  out, start = {}, 0
  for key in sorted(SHAPES):
    n = math.prod(SHAPES[key])
    leaf = values[:, :, start : start + n].reshape(num_workers, STEPS, *SHAPES[key])
    if key == "e":
      leaf[num_workers - 1] = 0.0  # the last worker abstains on a whole leaf
    out[key] = leaf.astype(dtype)
    start += n
  return out


def initial_params(dtype=np.float32) -> dict:
  rng = np.random.default_rng(123)
  return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def _record(prefix: str, params, state, out: dict, last: bool) -> None:
  """Params and the vote's statistics of a step; the momentum (which no vote feeds back into) at the last."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    out[prefix + "params" + jax.tree_util.keystr(path)] = np.asarray(leaf)
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if last or jnp.size(leaf) <= 8:
      out[prefix + "state" + jax.tree_util.keystr(path)] = np.asarray(leaf)


def run_mapped(opt, mesh, worker_axes, grads, dtype=np.float32) -> dict:
  """``STEPS`` steps of ``opt`` (through ``sv.shard_optimizer``) on ``mesh``; every step's params and state."""
  sharded = sv.shard_optimizer(opt, mesh)
  params = jax.device_put(jax.tree.map(jnp.asarray, initial_params(dtype)), NamedSharding(mesh, P()))
  state = sharded.init(params)
  specs = sv.partition_specs(state)
  spec = P(worker_axes)

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, spec), out_specs=(P(), specs))
  def step(params, state, g):
    updates, state = sharded.update(jax.tree.map(lambda x: x[0], g), state, params)
    return optax.apply_updates(params, updates), state

  out = {}
  for t in range(STEPS):
    g = jax.device_put({k: v[:, t] for k, v in grads.items()}, NamedSharding(mesh, spec))
    params, state = step(params, state, g)
    _record(f"step{t}/", params, state, out, last=t == STEPS - 1)
  return out


def run_alone(opt, grads) -> dict:
  """One worker with ``axis_name=None``: no map."""
  params = jax.tree.map(jnp.asarray, initial_params())
  state = opt.init(params)

  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state

  out = {}
  for t in range(STEPS):
    params, state = step(params, state, {k: jnp.asarray(v[0, t]) for k, v in grads.items()})
    _record(f"step{t}/", params, state, out, last=t == STEPS - 1)
  return out


LR, B1, WD = 0.01, 0.9, 0.1


def scenarios():
  """``name -> () -> dict of arrays``: each strategy, optimizer and fault the step can take."""
  flat = lambda m: harness.mesh((m,), ("workers",))  # pylint: disable=unnecessary-lambda-assignment

  def signum(fault=None, **vote):
    return sv.signum(LR, B1, WD, vote=sv.Vote("workers", **vote), fault=fault)

  def lion(**vote):
    return sv.lion(LR, 0.9, 0.99, WD, vote=sv.Vote("workers", **vote))

  hosts = harness.mesh((2, 2), ("hosts", "local"))
  liar = sv.faults.byzantine("negate", workers=[1], axis_name="workers")
  equivocator = sv.faults.byzantine("equivocate", workers=[2], axis_name="workers")
  cases = {
      "alone": lambda: run_alone(sv.signum(LR, B1, WD), gradients(1, 1)),
      "axis_of_one": lambda: run_mapped(signum(), flat(1), "workers", gradients(1, 1)),
      "lion_alone": lambda: run_alone(sv.lion(LR, 0.9, 0.99, WD), gradients(1, 2)),
  }
  for m in (2, 3, 4, 5, 8):
    cases[f"allgather_m{m}"] = functools.partial(run_mapped, signum(), flat(m), "workers", gradients(m, m))
    cases[f"alltoall_m{m}"] = functools.partial(run_mapped, signum(strategy="alltoall"), flat(m), "workers",
                                                gradients(m, m))
  cases.update({
      "alltoall_m7_r3_liar": functools.partial(
          run_mapped, signum(strategy="alltoall", replicas=3, fault=liar,
                             voter_fault=sv.faults.voter("negate+blame", [1])), flat(7), "workers", gradients(7, 7)),
      "alltoall_m5_r3_equivocate": functools.partial(
          run_mapped, signum(strategy="alltoall", replicas=3, fault=equivocator), flat(5), "workers", gradients(5, 5)),
      "allgather_m4_random": functools.partial(
          run_mapped, signum(fault=sv.faults.byzantine("random", [3], "workers", seed=1)), flat(4), "workers",
          gradients(4, 4)),
      "allgather_m4_bf16": functools.partial(run_mapped, signum(), flat(4), "workers",
                                             gradients(4, 44, jnp.bfloat16), jnp.bfloat16),
      "lion_allgather_m4": functools.partial(run_mapped, lion(), flat(4), "workers", gradients(4, 4)),
      "lion_alltoall_m3": functools.partial(run_mapped, lion(strategy="alltoall"), flat(3), "workers", gradients(3, 3)),
  })
  for outer in ("allgather", "alltoall"):
    cases[f"hierarchical_{outer}"] = functools.partial(
        run_mapped, sv.signum(LR, B1, WD, vote=sv.Vote("hosts", inner_axis_name="local", strategy="hierarchical",
                                                       outer_strategy=outer)), hosts, ("hosts", "local"), gradients(4, 40))
  cases["kernels"] = kernels
  return cases


def kernels() -> dict:
  """The bit-level kernels on their own: ballots, vote planes, counts, base-3 words."""
  rng = np.random.default_rng(7)
  out = {}
  for size in (1, 31, 33, 100, 1000):
    values = gradients(1, size)["c"].reshape(-1)[:size] if size <= 37 else rng.normal(size=size).astype(np.float32)
    values[: min(size, 8)] = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 3e38, -1e-40, 2.0], np.float32)[: min(size, 8)]
    if size > 64:
      values[32:64] = 0.0
    for phase in (0, 1, 6):
      words, voting, nonfinite = ops.pack_ballot(jnp.asarray(values), phase)
      out[f"pack_ballot/{size}/{phase}"] = np.concatenate(
          [np.asarray(words), np.asarray(voting, np.uint32), np.asarray(nonfinite, np.uint32)[None]])
  for m in (2, 3, 4, 5, 8, 9, 33):
    words = rng.integers(0, 2**32, size=(m, 40), dtype=np.uint32)
    voting = rng.random((m, 40)) < 0.8
    for phase in (0, 1):
      sign, nonzero = ops.vote_planes(jnp.asarray(words), voting=jnp.asarray(voting), tie_phase=phase)
      counts = ops.agreement_counts(jnp.asarray(words), sign, nonzero, jnp.asarray(voting))
      out[f"vote_planes/{m}/{phase}"] = np.stack([np.asarray(sign), np.asarray(nonzero)])
      out[f"agreement_counts/{m}/{phase}"] = np.stack([np.asarray(c) for c in counts])
    rows = rng.integers(0, 2**32, size=(m | 1, 40), dtype=np.uint32)
    out[f"majority/{m | 1}"] = np.asarray(ops.majority(jnp.asarray(rows)))
  sign, nonzero = (rng.integers(0, 2**32, size=37, dtype=np.uint32) for _ in range(2))
  out["pack_ternary"] = np.asarray(ops.pack_ternary(jnp.asarray(sign), jnp.asarray(nonzero)))
  return out


def run_all() -> dict:
  out = {}
  for name, run in scenarios().items():
    for key, value in run().items():
      out[f"{name}/{key}"] = value
  return out


def save(outputs: dict, path=PATH) -> None:
  """All arrays in one compressed blob (one zip member each would cost more than the data)."""
  index = [(key, str(value.dtype), list(value.shape)) for key, value in outputs.items()]
  blob = np.concatenate([np.ravel(v).view(np.uint8) for v in outputs.values()]) if outputs else np.zeros(0, np.uint8)
  np.savez_compressed(path, index=np.array(json.dumps(index)), blob=blob)


def load(path=PATH) -> dict:
  with np.load(path) as saved:
    index, blob = json.loads(str(saved["index"])), saved["blob"]
  out, start = {}, 0
  for key, dtype, shape in index:
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    out[key] = blob[start : start + nbytes].view(dtype).reshape(shape)
    start += nbytes
  return out


if __name__ == "__main__":
  PATH.parent.mkdir(exist_ok=True)
  outputs = run_all()
  save(outputs)
  print(f"wrote {len(outputs)} arrays to {PATH}")
