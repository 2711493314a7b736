"""What one optimizer step costs in compute: the vote's update against optax's and the all-reduce's.

    python -m benchmarks.step             # 16M coordinates in one leaf, 25.6M in 20 leaves; M = 4
    python -m benchmarks.step --quick     # small trees, few repeats (the smoke test)

Two tables, each measured in one process with the variants interleaved round by round, so that
the ratios are fair on a machine whose speed drifts:

* **one device**: the update of one worker with no collective, ``sv.signum(axis_name=None)`` and
  ``sv.lion(axis_name=None)`` against ``optax.signum``, ``optax.lion`` and ``optax.sgd`` with
  momentum, for each tree;
* **M workers** (simulated devices of this process, no network): the voting step of each strategy
  (``allgather``, ``alltoall``, ``alltoall`` with 3 voters a shard, ``hierarchical`` over hosts of 2
  devices) against SGD with momentum and Adam over ``sv.mean_allreduce``, on the 20-leaf tree.

For every variant: the median step time and its ratio to the table's reference (``optax.signum``;
SGD over the all-reduce), the compile time of the step (``lower`` and ``compile``, the best of the
rounds, interleaved) and its ratio to Adam's (to ``optax.sgd``'s on one device), and, read from the compiled module, the bytes it touches per
coordinate (XLA's ``cost_analysis``), its fusions and instructions, and the float copies as large
as a leaf (there should be none). Writes ``benchmarks/results/step-<device>-<date>.{json,md}``.
"""

import os
import sys

if __name__ == "__main__":  # Before JAX starts: the workers of the second table.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import simulate_cpu_devices

  simulate_cpu_devices(4)

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax import hlo
from benchmarks import cluster_steps, results

ONE_DEVICE = ("sv_signum", "optax_signum", "optax_sgd_momentum", "sv_lion", "optax_lion")
VOTING = ("sgd_allreduce", "adam_allreduce", "signum_allgather", "signum_alltoall", "signum_alltoall_r3",
          "signum_hierarchical")


def one_device_optimizer(method: str) -> optax.GradientTransformation:
  lr, wd = 1e-4, 1e-4
  return {
      "sv_signum": lambda: sv.signum(lr, 0.9, wd),
      "sv_lion": lambda: sv.lion(lr, 0.9, 0.99, wd),
      "optax_signum": lambda: optax.chain(optax.signum(lr, 0.9), optax.add_decayed_weights(wd)),
      "optax_lion": lambda: optax.lion(lr, 0.9, 0.99, weight_decay=wd),
      "optax_sgd_momentum": lambda: optax.sgd(lr, momentum=0.9),
  }[method]()


def voting_optimizer(method: str, axes) -> optax.GradientTransformation:
  workers = axes if len(axes) > 1 else axes[0]
  if method == "sgd_allreduce":
    return optax.chain(sv.mean_allreduce(workers), optax.sgd(0.1, momentum=0.9))
  if method == "adam_allreduce":
    return optax.chain(sv.mean_allreduce(workers), optax.adamw(1e-3, weight_decay=1e-4))
  if method == "signum_hierarchical":
    return sv.signum(1e-4, 0.9, 1e-4, vote=sv.Vote(axes[0], inner_axis_name=axes[1], strategy="hierarchical",
                                                      outer_strategy="alltoall"))
  replicas = 3 if method.endswith("_r3") else None
  return sv.signum(1e-4, 0.9, 1e-4, vote=sv.Vote(workers, strategy=method.removeprefix("signum_").removesuffix("_r3"),
                                                    replicas=replicas))


class Step:
  """A jitted step with its donated carry: ``run()`` steps once; ``compile()`` builds it afresh."""

  def __init__(self, build, params, state, data):
    self._build, self.carry, self.data = build, [params, state], data
    self.fn = build()

  def compile(self):
    return self._build().lower(*self.carry, *self.data).compile()

  def run(self):
    self.carry[:] = self.fn(*self.carry, *self.data)
    return self.carry


def _random_tree(shapes, seed):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()}


def one_device_step(method: str, shapes) -> Step:
  opt = one_device_optimizer(method)
  params = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}

  def build():  # A new function each time, so that each compilation starts from scratch.
    def step(params, state, grads):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))

  return Step(build, params, opt.init(params), (_random_tree(shapes, 0),))


def voting_step(method: str, shapes, num_workers: int) -> Step:
  devices = jax.devices()[:num_workers]
  if method == "signum_hierarchical":
    mesh = jax.make_mesh((num_workers // 2, 2), ("hosts", "devices"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=devices)
  else:
    mesh = jax.make_mesh((num_workers,), ("workers",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
  axes = tuple(mesh.axis_names)
  opt = sv.shard_optimizer(voting_optimizer(method, axes), mesh)
  params = jax.device_put({k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}, NamedSharding(mesh, P()))
  grads = {k: jax.random.normal(jax.random.key(i), (num_workers, *s)) for i, (k, s) in enumerate(shapes.items())}
  grads = jax.device_put(grads, NamedSharding(mesh, P(axes)))
  state = opt.init(params)
  specs = sv.partition_specs(state)

  def body(params, state, grads):
    updates, state = opt.update(jax.tree.map(lambda g: g[0], grads), state, params)
    return optax.apply_updates(params, updates), state

  def build():
    mapped = jax.shard_map(body, mesh=mesh, in_specs=(P(), specs, P(axes)), out_specs=(P(), specs))
    return jax.jit(mapped, donate_argnums=(0, 1))

  return Step(build, params, state, (grads,))


def structure(compiled, coordinates: int, smallest_leaf: int) -> dict:
  """What the compiled module does per coordinate: bytes touched, fusions, instructions, and the float
  copies as large as a leaf (of momentum or parameters: a whole extra pass over it)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  text = compiled.as_text()
  return {"bytes_per_coordinate": float(cost.get("bytes accessed", float("nan"))) / coordinates,
          "fusions": hlo.fusion_count(text), "instructions": hlo.instruction_count(text),
          "float_copies": [list(c) for c in hlo.large_float_copies(text, smallest_leaf)]}


def measure(table: str, steps: dict, coordinates: int, smallest_leaf: int, reference: str, compile_reference: str,
            rounds: int, per_round: int, **labels) -> list[dict]:
  """Rows for the interleaved ``steps``: timings, ratios and what the compiled module holds.

  Compile times are the best of ``rounds`` compilations from scratch (tracing, lowering and XLA),
  the variants taking turns, as the timed steps do.
  """
  rows = {method: {"table": table, "method": method, **labels, "coordinates": coordinates, "times": [],
                   "compile_seconds": float("inf")} for method in steps}
  for i in range(rounds):
    for method, step in steps.items():
      start = time.perf_counter()
      compiled = step.compile()
      rows[method]["compile_seconds"] = min(rows[method]["compile_seconds"], time.perf_counter() - start)
      if i == 0:
        rows[method].update(structure(compiled, coordinates, smallest_leaf))
  for step in steps.values():
    for _ in range(2):  # warm-up (and the first call's own compilation)
      jax.block_until_ready(step.run())
  for _ in range(rounds):
    for method, step in steps.items():
      for _ in range(per_round):
        start = time.perf_counter()
        jax.block_until_ready(step.run())
        rows[method]["times"].append(time.perf_counter() - start)
  for row in rows.values():
    row["seconds"] = statistics.median(row.pop("times"))
  for row in rows.values():
    row["ratio"] = row["seconds"] / rows[reference]["seconds"]
    row["compile_ratio"] = row["compile_seconds"] / rows[compile_reference]["compile_seconds"]
  return list(rows.values())


def trees(quick: bool) -> dict:
  """``name -> {leaf: shape}``: one big leaf, and ResNet-50's size in 20 leaves of decreasing size."""
  if quick:
    return {"64K x 1": {"w": (65536,)}, "128K x 8": cluster_steps.tree_shapes(128_000, 8)}
  return {"16M x 1": {"w": (16_777_216,)}, "25.6M x 20": cluster_steps.tree_shapes(25_600_000, 20)}


def table(rows) -> str:
  lines = ["| tree | workers | method | median ms | ratio | compile s | compile / Adam's | B/coordinate | fusions "
           "| instructions | float copies |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['tree']} | {r['workers']} | {r['method']} | {1e3 * r['seconds']:.2f} | {r['ratio']:.2f}x | "
                 f"{r['compile_seconds']:.2f} | {r['compile_ratio']:.2f}x | {r['bytes_per_coordinate']:.1f} | "
                 f"{r['fusions']} | {r['instructions']} | {len(r['float_copies'])} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workers", type=int, default=4, help="M for the voting steps (even, for hosts of 2)")
  parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
  parser.add_argument("--per-round", type=int, default=3, help="steps of each variant a round")
  parser.add_argument("--quick", action="store_true", help="small trees, 2 rounds")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)
  if args.workers < 2 or args.workers % 2 or args.workers > jax.device_count():
    parser.error(f"--workers must be even, from 2 to the {jax.device_count()} devices of this process.")
  rounds = 2 if args.quick else args.rounds

  rows = []
  for name, shapes in trees(args.quick).items():
    coordinates = sum(int(np.prod(s)) for s in shapes.values())
    smallest = min(int(np.prod(s)) for s in shapes.values())
    steps = {m: one_device_step(m, shapes) for m in ONE_DEVICE}
    rows += measure("one device", steps, coordinates, smallest, "optax_signum", "optax_sgd_momentum", rounds,
                    args.per_round, tree=name, workers=1)
    del steps
    print(f"one device, {name}: done", flush=True)
  name, shapes = list(trees(args.quick).items())[-1]
  coordinates = sum(int(np.prod(s)) for s in shapes.values())
  steps = {m: voting_step(m, shapes, args.workers) for m in VOTING}
  rows += measure("voting", steps, coordinates, min(int(np.prod(s)) for s in shapes.values()), "sgd_allreduce",
                  "adam_allreduce", rounds, args.per_round, tree=name, workers=args.workers)
  meta = {"workers": args.workers, "rounds": rounds, "per_round": args.per_round}
  markdown = ("One device: ratios to `optax.signum` (with decoupled weight decay); compile to `optax.sgd`'s. "
              f"{args.workers} workers: ratios to SGD over `mean_allreduce`; compile to Adam's over it. "
              "B/coordinate: bytes the compiled step reads and writes per coordinate of the tree "
              "(XLA's cost analysis, per device).\n\n" + table(rows))
  return results.write("step", meta, rows, markdown, out=args.out)


if __name__ == "__main__":
  main()
