"""Kernel bandwidth: sign packing, the vote, and the whole Signum update, pure JAX vs Triton.

    python -m benchmarks.kernels                # GPU: 1M..256M coordinates, both implementations
    python -m benchmarks.kernels --quick        # small sizes (what the CPU and the smoke test run)

For each size it reports the median time after warm-up (``block_until_ready`` around each call),
the bytes each operation must move, GB/s, and the fraction of a measured device-to-device copy of
the same float array (the memory-bound floor). The whole Signum update is compared with
``optax.sgd(momentum=0.9)``; on one device it is one worker, whose ballot decides alone per
coordinate with no packing (the pack and vote kernels are timed in their own rows).
Writes ``benchmarks/results/kernels-<device>-<date>.{json,md}``.
"""

import argparse

import jax
import jax.numpy as jnp
import optax

from signvote_jax import ops
import signvote_jax as sv
from benchmarks import results, timing


def signum_step(size, impl):
  """One Signum update on one worker: momentum, its sign (0 where it has nothing to say), decay, scale."""
  mesh = jax.make_mesh((1,), ("workers",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
  opt = sv.shard_optimizer(sv.signum(1e-4, 0.9, 1e-4, vote=sv.Vote("workers", impl=impl)), mesh)
  shared = jax.sharding.PartitionSpec()
  state = opt.init(jnp.zeros((size,), jnp.float32))
  specs = sv.partition_specs(state)

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  fn = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(shared, specs, shared), out_specs=(shared, specs)),
               donate_argnums=(0, 1))
  return fn, state


def sgd_step():
  opt = optax.sgd(1e-4, momentum=0.9)

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1)), opt


def measure(size: int, num_workers: int, impls, repeats: int):
  """Rows of {op, impl, size, seconds, bytes, gbps} for one size."""
  key = jax.random.key(size)
  x = jax.random.normal(key, (size,), jnp.float32)
  words = jax.random.bits(key, (num_workers, ops.num_words(size)), jnp.uint32)
  float_bytes, word_bytes = 4 * size, 4 * ops.num_words(size)
  rows = []

  def add(op, impl, seconds, nbytes):
    rows.append({"op": op, "impl": impl, "size": size, "seconds": seconds, "bytes": nbytes,
                 "gbps": nbytes / seconds / 1e9})

  copy = jax.jit(lambda a: a.copy())
  add("copy", "xla", timing.median_seconds(lambda: copy(x), repeats), 2 * float_bytes)
  for impl in impls:
    pack = jax.jit(lambda a, i=impl: ops.pack_signs(a, impl=i))
    add("pack", impl, timing.median_seconds(lambda: pack(x), repeats), float_bytes + word_bytes)
    voting = jnp.ones(words.shape, jnp.bool_)
    planes = jax.jit(lambda w, i=impl: ops.vote_planes(w, voting=voting, impl=i))
    # Reads the ballots and their word flags (one byte each), writes two planes.
    add("vote_planes", impl, timing.median_seconds(lambda: planes(words), repeats),
        (num_workers + 2) * word_bytes + num_workers * ops.num_words(size))

    step, state = signum_step(size, impl)
    params = jnp.zeros((size,), jnp.float32)
    seconds = timing.median_seconds(timing.Stepping(step, params, state, (x,)), repeats)
    # Reads params, momentum, grads; writes params, momentum (the words stay small).
    add("signum_update", impl, seconds, 5 * float_bytes)

  step, opt = sgd_step()
  params = jnp.zeros((size,), jnp.float32)
  seconds = timing.median_seconds(timing.Stepping(step, params, opt.init(params), (x,)), repeats)
  add("sgd_momentum_update", "xla", seconds, 5 * float_bytes)
  return rows


def table(rows, copy_gbps):
  lines = ["| op | impl | coordinates | median ms | GB/s | of copy |", "|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['op']} | {r['impl']} | {r['size']:,} | {1e3 * r['seconds']:.3f} | "
                 f"{r['gbps']:.1f} | {r['gbps'] / copy_gbps[r['size']]:.0%} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--log2-sizes", type=int, nargs="+", default=None,
                      help="coordinates as powers of two (default 20..28 on GPU, 20..24 elsewhere)")
  parser.add_argument("--workers", type=int, default=8, help="ballots M in the vote benchmarks")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--quick", action="store_true", help="two small sizes, few repeats")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)

  on_gpu = jax.default_backend() == "gpu"
  impls = list(ops.triton_impls()) if on_gpu else ["jax"]
  log2_sizes = args.log2_sizes or ([16, 18] if args.quick else list(range(20, 29 if on_gpu else 25, 2)))
  repeats = 3 if args.quick else args.repeats

  rows = []
  for log2 in log2_sizes:
    rows += measure(2**log2, args.workers, impls, repeats)
    print(f"2^{log2} coordinates done", flush=True)
  copy_gbps = {r["size"]: r["gbps"] for r in rows if r["op"] == "copy"}
  for r in rows:
    r["fraction_of_copy"] = r["gbps"] / copy_gbps[r["size"]]

  meta = {"workers": args.workers, "impls": impls, "repeats": repeats}
  markdown = f"M = {args.workers} ballots in the vote.\n\n{table(rows, copy_gbps)}"
  return results.write("kernels", meta, rows, markdown, out=args.out)


if __name__ == "__main__":
  main()
