"""Bytes each worker sends per optimizer step, read from the collectives of the compiled HLO.

    python -m benchmarks.wire_bytes            # ResNet-50 (25.6M) and QRNN (153.6M) trees, M = 2..64 (odd and even)
    python -m benchmarks.wire_bytes --quick    # the digits CNN, M = 2, 3, 4 (the smoke test)

For each model's parameter tree and worker count M it compiles one optimizer step on M simulated
CPU devices (abstract inputs: nothing of size d is allocated) and sums the bytes of the step's
collectives with :mod:`signvote_jax.hlo` (bandwidth-optimal algorithm costs; a device sends as many
bytes as it receives in each). Methods:

* ``allreduce_f32``, ``allreduce_bf16``: ``mean_allreduce`` of float32 / bfloat16 updates, the
  baseline. XLA:CPU widens a bfloat16 all-reduce to float32 when it compiles; the bfloat16 row
  therefore counts the collectives of the program as lowered (what NCCL sends), and says so.
* ``allgather``, ``alltoall``: Signum with majority vote, one worker per host.
* ``alltoall_r3``, ``alltoall_r5``: ``alltoall`` with each shard voted by 3 (5) workers, whose
  median survives 1 (2) workers lying in every role (``replicas``); only where M >= r.
* ``hierarchical``: hosts of ``--devices-per-host`` workers sum their momentum inside the host (a
  float all-reduce on the fast local link, counted apart) and vote across hosts with ``alltoall``.

The ratio column is network bytes per host against the float32 all-reduce with one worker per host.
Writes ``benchmarks/results/wire_bytes-<date>.{json,md,png}``.
"""

import argparse
import functools
import sys

import benchmarks

if __name__ == "__main__":
  benchmarks.simulate_cpu_devices(64)  # Before JAX starts; 64 covers the largest M.

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

import signvote_jax as sv  # pylint: disable=wrong-import-position
from signvote_jax import hlo  # pylint: disable=wrong-import-position
from benchmarks import results  # pylint: disable=wrong-import-position
from configs import digits, qrnn_wikitext103_signum, resnet50_imagenet_signum  # pylint: disable=wrong-import-position
from train import models  # pylint: disable=wrong-import-position

P = jax.sharding.PartitionSpec
METHODS = ("allreduce_f32", "allreduce_bf16", "allgather", "alltoall", "alltoall_r3", "alltoall_r5", "hierarchical")
# name: (config, classes or vocabulary, one example's input)
MODELS = {
    "resnet50": (resnet50_imagenet_signum, 1000, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)),
    "qrnn": (qrnn_wikitext103_signum, 267_735, jax.ShapeDtypeStruct((1, 140), jnp.int32)),
    "digits_cnn": (digits, 10, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)),
}


@functools.cache
def param_shapes(name: str):
  """The abstract parameter tree of one of :data:`MODELS` (nothing is allocated)."""
  module, classes, example = MODELS[name]
  model = models.create_model(module.get_config(), classes)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda x: model.init(rngs, x, train=False), example)["params"]


def optimizer(method: str, axes):
  if method.startswith("allreduce"):
    return optax.chain(sv.mean_allreduce(axes), optax.sgd(0.1, momentum=0.9))
  if method == "hierarchical":
    return sv.signum(1e-4, vote=sv.Vote(axes[0], inner_axis_name=axes[1], strategy="hierarchical",
                                           outer_strategy="alltoall"))
  if method.startswith("alltoall_r"):
    return sv.signum(1e-4, vote=sv.Vote(axes, strategy="alltoall", replicas=replicas(method)))
  return sv.signum(1e-4, vote=sv.Vote(axes, strategy=method))


def replicas(method: str) -> int:
  """The voters of a shard that ``method`` has (1 but for ``alltoall_r<r>``)."""
  return int(method.removeprefix("alltoall_r")) if method.startswith("alltoall_r") else 1


def applies(method: str, num_workers: int, devices_per_host: int) -> bool:
  """Hierarchical needs hosts of ``devices_per_host`` workers; r voters a shard need M >= r."""
  if method == "hierarchical":
    return num_workers % devices_per_host == 0
  return replicas(method) <= num_workers


def step_hlo(params, method: str, num_workers: int, devices_per_host: int) -> tuple[str, str]:
  """The HLO text of one optimizer step, compiled and as lowered."""
  hosts = num_workers // devices_per_host if method == "hierarchical" else num_workers
  shape, names = ((hosts, devices_per_host), ("hosts", "devices")) if method == "hierarchical" else ((hosts,), ("workers",))
  mesh = jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names),
                       devices=jax.devices()[:num_workers])
  dtype = jnp.bfloat16 if method == "allreduce_bf16" else jnp.float32
  opt = optimizer(method, names)

  def step(params, grads):
    updates, _ = opt.update(jax.tree.map(lambda g: g[0], grads), opt.init(params), params)
    return optax.apply_updates(params, updates)

  replicated, stacked = jax.sharding.NamedSharding(mesh, P()), jax.sharding.NamedSharding(mesh, P(names))
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype, sharding=replicated), params)
  grads = jax.tree.map(lambda p: jax.ShapeDtypeStruct((num_workers, *p.shape), dtype, sharding=stacked), params)
  lowered = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(names)), out_specs=P())).lower(params, grads)
  return lowered.compile().as_text(), lowered.as_text(dialect="hlo")


def measure(model: str, method: str, num_workers: int, devices_per_host: int) -> dict:
  params = param_shapes(model)
  compiled, lowered = step_hlo(params, method, num_workers, devices_per_host)
  # bfloat16: XLA:CPU's compiler widens the all-reduce; count what the program sends (see above).
  counted = lowered if method == "allreduce_bf16" else compiled
  per_host = devices_per_host if method == "hierarchical" else 1
  hosts = num_workers // per_host
  network, local = hlo.bytes_per_device(counted, num_workers, hosts)
  return {
      "model": model, "coordinates": int(sum(np.prod(p.shape) for p in jax.tree.leaves(params))),
      "leaves": len(jax.tree.leaves(params)), "workers": num_workers, "method": method, "hosts": hosts,
      "network_bytes_per_worker": network, "network_bytes_per_host": network * per_host,
      "local_bytes_per_worker": local,
      "collectives": sorted(f"{k} {t} x{n}" for (k, t), n in hlo.counts(counted).items()),
      "counted_from": "lowered HLO (XLA:CPU widens bf16 all-reduce)" if counted is lowered else "compiled HLO",
      "compiled_collectives": sorted(f"{k} {t} x{n}" for (k, t), n in hlo.counts(compiled).items()),
  }


def add_ratios(rows):
  baseline = {(r["model"], r["workers"]): r["network_bytes_per_host"] for r in rows if r["method"] == "allreduce_f32"}
  for r in rows:
    r["fraction_of_allreduce_f32"] = r["network_bytes_per_host"] / baseline[(r["model"], r["workers"])]


def human_bytes(n: float) -> str:
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.0f} B"


def table(rows, model):
  mine = [r for r in rows if r["model"] == model]
  workers = sorted({r["workers"] for r in mine})
  lines = [f"| method | {' | '.join(f'M={m}' for m in workers)} |", "|---|" + "---:|" * len(workers)]
  for method in METHODS:
    cells = []
    for m in workers:
      found = [r for r in mine if r["method"] == method and r["workers"] == m]
      if not found:
        cells.append("-")
        continue
      (r,) = found
      cell = human_bytes(r["network_bytes_per_host"])
      if method != "allreduce_f32":
        fraction = r["fraction_of_allreduce_f32"]
        cell += f" (1/{1 / fraction:.1f})" if fraction > 0 else " (one host)"
      cells.append(cell)
    lines.append(f"| {method} | {' | '.join(cells)} |")
  return "\n".join(lines)


def plot(rows):
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel

  names = sorted({r["model"] for r in rows})
  fig, axs = results.figure(1, len(names), (6 * len(names), 4))
  for ax, model in zip(axs[0], names):
    for method in METHODS:
      mine = sorted((r["workers"], r["network_bytes_per_host"]) for r in rows if r["model"] == model and r["method"] == method)
      if any(b > 0 for _, b in mine):
        ax.plot(*zip(*[(m, b / 1e6) for m, b in mine if b > 0]), marker="o", label=method)
    d = next(r["coordinates"] for r in rows if r["model"] == model)
    ax.set(title=f"{model} ({d / 1e6:.1f}M coordinates)", xlabel="workers M", ylabel="MB sent per host per step",
           xscale="log", yscale="log")
    ticks = sorted({r["workers"] for r in rows})
    ax.set_xticks(ticks, labels=[str(m) for m in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(alpha=0.3)
    ax.legend()
  return fig


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
  parser.add_argument("--workers", type=int, nargs="+", default=None,
                      help="worker counts M (default 2, 3, 4, 7, 8, 16, 31, 32, 64)")
  parser.add_argument("--devices-per-host", type=int, default=2, help="workers per host for 'hierarchical'")
  parser.add_argument("--quick", action="store_true", help="the digits CNN on 2 to 4 workers")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)
  names = args.models or (["digits_cnn"] if args.quick else ["resnet50", "qrnn"])
  workers = args.workers or ([2, 3, 4] if args.quick else [2, 3, 4, 7, 8, 16, 31, 32, 64])
  if max(workers) > jax.device_count():
    parser.error(f"M={max(workers)} needs as many devices, this process has {jax.device_count()}; run it as "
                 "`python -m benchmarks.wire_bytes` (it asks for 64 simulated CPU devices) or set "
                 "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts.")

  rows = []
  for model in names:
    for m in workers:
      for method in METHODS:
        if applies(method, m, args.devices_per_host):
          rows.append(measure(model, method, m, args.devices_per_host))
      print(f"{model} M={m} done", flush=True)
  add_ratios(rows)
  meta = {"devices_per_host": args.devices_per_host,
          "bytes": "per step, bandwidth-optimal algorithm of each collective (ring all-reduce: 2(G-1)/G N; "
                   "all-gather, all-to-all: (G-1)/G N); a device receives as many bytes as it sends"}
  markdown = "\n\n".join(
      f"### {model}: {next(r['coordinates'] for r in rows if r['model'] == model):,} coordinates\n\n"
      "Network bytes sent per host per optimizer step (and 1/x of the float32 all-reduce); hierarchical: "
      f"{args.devices_per_host} workers per host, M / {args.devices_per_host} hosts.\n\n{table(rows, model)}"
      for model in names)
  return results.write("wire_bytes", meta, rows, markdown, plot, args.out)


if __name__ == "__main__":
  sys.exit(main() and 0)
