"""Fault tolerance on digits: Signum with majority vote against SGD over an all-reduce (the paper's Figure 4).

    python -m benchmarks.robustness            # 7 workers, f = 0..3 of each fault kind, 3 seeds
    python -m benchmarks.robustness --quick    # 3 workers, f = 0 and 1 'negate', 1 seed, a few steps

The last f of the 7 workers send a faulty update (``faults.kind``): ``negate`` (the paper's
adversary), ``random`` signs, ``zero`` (a dead worker), ``scale`` (x -1e3) or ``nan``. Both
optimizers run the same trainer with the same faults injected before their exchange. It reports
the final test accuracy (mean and spread over the seeds) and, for the vote, whether its statistics
named exactly the faulty workers: suspected by their kappa, or, for ``zero`` and ``nan`` workers,
which have nothing to say and abstain, reported as abstaining (kappa NaN). Writes
``benchmarks/results/robustness-<device>-<date>.{json,md,png}``.
"""

import argparse
import math
import sys

import benchmarks

if __name__ == "__main__":
  benchmarks.simulate_cpu_devices(8)  # Before JAX starts.

import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import results, training  # pylint: disable=wrong-import-position
from configs import digits  # pylint: disable=wrong-import-position
from signvote_jax import faults  # pylint: disable=wrong-import-position

# The vote's recipe is configs/digits.py; SGD's is lr 0.1 with momentum 0.9 (it learns digits to ~97 %).
OPTIMIZERS = {"signum": {"optimizer": "signum"}, "sgd": {"optimizer": "sgd", "learning_rate": 0.1, "b1": 0.9}}
# Kinds whose workers have nothing to say: the vote reports them as abstaining, not as suspects.
ABSTAINING = ("zero", "nan")


def experiments(kinds, max_faulty):
  """(kind, f) pairs: f = 0 once (no fault, shared by every kind), then f = 1..max_faulty of each kind."""
  return [("none", 0)] + [(kind, f) for kind in kinds for f in range(1, max_faulty + 1)]


def measure(base, optimizer, kind, num_faulty, seed) -> dict:
  overrides = {**OPTIMIZERS[optimizer], "seed": seed, "faults.kind": "" if kind == "none" else kind,
               "faults.num_faulty": num_faulty}
  summary, _ = training.run(base, overrides)
  faulty = list(range(base.num_workers - num_faulty, base.num_workers))
  suspected = summary["suspected_workers"]
  # The vote's statistic behind the naming: each worker's kappa averaged over the run (None or NaN:
  # it abstained everywhere).
  kappa = None if summary["kappa"] is None else [None if math.isnan(k) else k for k in summary["kappa"]]
  named = None
  if suspected is not None:
    abstaining = [m for m, k in enumerate(kappa) if k is None]
    expected_suspects, expected_abstaining = ([], faulty) if kind in ABSTAINING else (faulty, [])
    named = sorted(suspected) == expected_suspects and abstaining == expected_abstaining
  return {"optimizer": optimizer, "kind": kind, "num_faulty": num_faulty, "seed": seed,
          "test_accuracy": summary["test_accuracy"], "suspected_workers": suspected,
          "named_faulty": named, "kappa": kappa, "wall_seconds": summary["wall_seconds"]}


def aggregate(rows):
  """Mean and spread over seeds of each (optimizer, kind, f)."""
  groups = {}
  for r in rows:
    groups.setdefault((r["optimizer"], r["kind"], r["num_faulty"]), []).append(r)
  out = {}
  for key, runs in groups.items():
    accuracy = np.array([np.nan if r["test_accuracy"] is None else r["test_accuracy"] for r in runs])
    named = [r["named_faulty"] for r in runs if r["named_faulty"] is not None]
    out[key] = {"mean": float(np.mean(accuracy)), "min": float(np.min(accuracy)), "max": float(np.max(accuracy)),
                "std": float(np.std(accuracy)), "named": f"{sum(named)}/{len(named)}" if named else "-"}
  return out


def table(stats, pairs, num_workers):
  lines = [f"| fault | f of {num_workers} | Signum + vote | SGD + all-reduce | vote named the faulty workers |",
           "|---|---:|---:|---:|---:|"]
  for kind, f in pairs:
    cells = []
    for optimizer in OPTIMIZERS:
      s = stats[(optimizer, kind, f)]
      cells.append(f"{100 * s['mean']:.1f} % ± {100 * s['std']:.1f}")
    lines.append(f"| {kind} | {f} | {' | '.join(cells)} | {stats[('signum', kind, f)]['named']} |")
  return "\n".join(lines)


def plot_for(kinds, max_faulty):
  def plot(rows):

    stats = aggregate(rows)
    fig, axs = results.figure(1, len(kinds), (3.2 * len(kinds), 3.2), sharey=True)
    for ax, kind in zip(axs[0], kinds):
      for optimizer, label in (("signum", "Signum + majority vote"), ("sgd", "SGD + all-reduce")):
        keys = [(optimizer, "none", 0)] + [(optimizer, kind, f) for f in range(1, max_faulty + 1)]
        mean = [100 * stats[k]["mean"] for k in keys]
        low = [100 * (stats[k]["mean"] - stats[k]["min"]) for k in keys]
        high = [100 * (stats[k]["max"] - stats[k]["mean"]) for k in keys]
        ax.errorbar(range(max_faulty + 1), mean, yerr=[low, high], marker="o", capsize=3, label=label)
      ax.set(title=kind, xlabel="faulty workers f", xticks=range(max_faulty + 1), ylim=(0, 100))
      ax.grid(alpha=0.3)
    axs[0][0].set_ylabel("test accuracy (%)")
    axs[0][0].legend(fontsize=8, loc="lower left")
    return fig

  return plot


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workers", type=int, default=7)
  parser.add_argument("--max-faulty", type=int, default=3, help="f runs from 0 to this")
  parser.add_argument("--kinds", nargs="+", choices=faults.KINDS, default=list(faults.KINDS))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--data-dir", default="", help="tfds data dir ('' is tfds' default)")
  parser.add_argument("--quick", action="store_true", help="3 workers, one 'negate' worker, 1 seed, 10 steps")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)
  if args.quick:
    args.workers, args.max_faulty, args.kinds, args.seeds, args.steps = 3, 1, ["negate"], 1, 10
  if not 0 <= 2 * args.max_faulty < args.workers:
    parser.error(f"--max-faulty={args.max_faulty} must stay below half of --workers={args.workers}: "
                 "no vote survives a faulty majority.")

  base = digits.get_config()
  base.data_dir, base.num_workers, base.num_steps = args.data_dir, args.workers, args.steps
  base.eval_every = base.checkpoint_every = base.log_every = args.steps
  base.eval_batch_size = args.workers * (base.eval_batch_size // args.workers)  # An equal share each.
  pairs = experiments(args.kinds, args.max_faulty)
  rows = []
  with training.compile_cache():
    for kind, f in pairs:
      for optimizer in OPTIMIZERS:
        for seed in range(args.seeds):
          rows.append(measure(base, optimizer, kind, f, seed))
      print(f"{kind} f={f}: " + ", ".join(f"{r['optimizer']} {r['test_accuracy']}" for r in rows[-2 * args.seeds:]),
            flush=True)
  stats = aggregate(rows)
  meta = {"workers": args.workers, "steps": args.steps, "seeds": args.seeds,
          "optimizers": {k: {**v, "learning_rate": v.get("learning_rate", base.learning_rate)} for k, v in OPTIMIZERS.items()},
          "summary": [{"optimizer": o, "kind": k, "num_faulty": f, **s} for (o, k, f), s in stats.items()]}
  markdown = (f"Digits, {args.workers} workers x {base.per_worker_batch_size}, {args.steps} steps, "
              f"{args.seeds} seeds (mean ± std of the final test accuracy). Signum: lr {base.learning_rate}, "
              f"b1 {base.b1}; SGD: lr {OPTIMIZERS['sgd']['learning_rate']}, momentum 0.9; both with "
              f"weight decay {base.weight_decay} and the same schedule. The faulty workers are the last f; the "
              "last column counts the seeds where the vote named exactly them: suspected by kappa, or "
              "reported as abstaining (zero, nan).\n\n"
              + table(stats, pairs, args.workers))
  return results.write("robustness", meta, rows, markdown, plot_for(args.kinds, args.max_faulty), args.out)


if __name__ == "__main__":
  sys.exit(main() and 0)
