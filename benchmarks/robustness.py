"""Fault tolerance on digits: Signum with majority vote against SGD over an all-reduce (the paper's Figure 4).

    python -m benchmarks.robustness            # 7 workers, f = 0..3 of each fault kind, 3 seeds
    python -m benchmarks.robustness --quick    # 3 workers, f = 0 and 1 'negate', 1 seed, a few steps

The last f of the 7 workers send a faulty update (``faults.kind``): ``negate`` (the paper's
adversary), ``random`` signs, ``zero`` (a dead worker), ``scale`` (x -1e3) or ``nan``. Both
optimizers run the same trainer with the same faults injected before their exchange. It reports
the final test accuracy (mean and spread over the seeds) and, for the vote, whether its statistics
named exactly the faulty workers: suspected by their kappa, or, for ``zero`` and ``nan`` workers,
which have nothing to say and abstain, reported as abstaining (kappa NaN).

A second table puts the last worker at fault in each role it plays (DESIGN.md, threat model): its
ballot, the vote it returns for the shards it votes (``negate``, ``random``, ``zero``), the counts it
reports (``blame``), a different ballot to each voter (``equivocate``), and all of them at once
(``every role``: a negating ballot, a negating vote and blaming counts), against ``allgather``,
``alltoall`` and ``alltoall`` with 3 voters a shard (``replicas=3``). It reports the accuracy and
whether the vote's statistics named the faulty worker where its lie is detectable (a negating
ballot; a lying vote with replicas) and never an honest one. Writes
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
# Update-level kinds of the first table; "equivocate" lives on the wire and is in the second.
SENDER_KINDS = tuple(k for k in faults.KINDS if k != "equivocate")
# The second table: what the faulty worker does, by role (one faulty worker, the last).
ATTACKS = {
    "none": {},
    "negate ballot": {"faults.kind": "negate"},
    "negate vote": {"faults.voter_kind": "negate"},
    "random vote": {"faults.voter_kind": "random"},
    "zero vote": {"faults.voter_kind": "zero"},
    "blame": {"faults.voter_kind": "blame"},
    "equivocate": {"faults.kind": "equivocate"},
    "every role": {"faults.kind": "negate", "faults.voter_kind": "negate+blame"},
}
VOTINGS = {"allgather": {"vote.strategy": "allgather"}, "alltoall r=1": {"vote.strategy": "alltoall"},
           "alltoall r=3": {"vote.strategy": "alltoall", "vote.replicas": 3}}


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


def role_overrides(attack: str, voting: str) -> dict | None:
  """The config overrides of ``attack`` under ``voting``; None where it has nothing to attack.

  Under ``allgather`` nobody votes for anyone else, so only the ballot part of an attack applies;
  an equivocating sender there leaves each worker with its own vote, which one replicated model
  cannot hold (the trainer refuses it; ``tests/test_replicas.py`` measures it).
  """
  attack_faults = dict(ATTACKS[attack])
  if voting == "allgather":
    if attack_faults.get("faults.kind") == "equivocate":
      return None
    attack_faults.pop("faults.voter_kind", None)
    if attack != "none" and not attack_faults:
      return None
  out = {**VOTINGS[voting], **attack_faults}
  if "faults.kind" in attack_faults:
    out["faults.num_faulty"] = 1
  if "faults.voter_kind" in attack_faults:
    out["faults.num_faulty_voters"] = 1
  return out


def must_be_named(attack: str, voting: str) -> bool:
  """Whether a fair statistic sees the attack: a negating ballot; a lying vote where r >= 3 voters
  can be compared (a lone voter's lie is the vote, and blaming counts leave the vote honest)."""
  lie = ATTACKS[attack].get("faults.voter_kind", "").split("+")[0]
  replicated = VOTINGS[voting].get("vote.replicas", 1) >= 3
  return ATTACKS[attack].get("faults.kind") == "negate" or (replicated and lie in ("negate", "random", "zero"))


def measure_roles(base, attack: str, voting: str, seed: int) -> dict:
  summary, _ = training.run(base, {**role_overrides(attack, voting), "seed": seed})
  faulty = base.num_workers - 1
  named = set(summary["suspected_workers"] or []) | set(summary["suspected_voters"] or [])
  named_ok = named <= {faulty} and (faulty in named or not must_be_named(attack, voting))
  return {"section": "roles", "attack": attack, "voting": voting, "seed": seed,
          "test_accuracy": summary["test_accuracy"], "suspected_workers": summary["suspected_workers"],
          "suspected_voters": summary["suspected_voters"], "named_faulty": named_ok,
          "wall_seconds": summary["wall_seconds"]}


def aggregate(rows, key=lambda r: (r["optimizer"], r["kind"], r["num_faulty"])):
  """Mean and spread over seeds of each (optimizer, kind, f), or of each ``key``."""
  groups = {}
  for r in rows:
    groups.setdefault(key(r), []).append(r)
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


def roles_table(stats, attacks, num_workers):
  lines = [f"| worker {num_workers - 1} of {num_workers} lies in | {' | '.join(VOTINGS)} |",
           "|---|" + "---:|" * len(VOTINGS)]
  for attack in attacks:
    cells = []
    for voting in VOTINGS:
      s = stats.get((attack, voting))
      if s is None:
        cells.append("no such role" if voting == "allgather" and attack != "equivocate" else "each worker its own vote")
        continue
      partial = " (its ballot)" if voting == "allgather" and "faults.voter_kind" in ATTACKS[attack] else ""
      cells.append(f"{100 * s['mean']:.1f} % ± {100 * s['std']:.1f}{partial}, named {s['named']}")
    lines.append(f"| {attack} | {' | '.join(cells)} |")
  return "\n".join(lines)


def plot_for(kinds, max_faulty):
  def plot(rows):
    stats = aggregate([r for r in rows if r.get("section") != "roles"])
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
  parser.add_argument("--kinds", nargs="+", choices=SENDER_KINDS, default=list(SENDER_KINDS))
  parser.add_argument("--attacks", nargs="*", choices=list(ATTACKS), default=list(ATTACKS),
                      help="the second table's attacks by role (none: skip it)")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--data-dir", default="", help="tfds data dir ('' is tfds' default)")
  parser.add_argument("--quick", action="store_true",
                      help="3 workers, one 'negate' worker, and one lying in every role; 1 seed, 10 steps")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)
  if args.quick:
    args.workers, args.max_faulty, args.kinds, args.seeds, args.steps = 3, 1, ["negate"], 1, 10
    args.attacks = ["none", "every role"]
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
    by_role = []
    for attack in args.attacks:
      for voting in VOTINGS:
        if role_overrides(attack, voting) is not None:
          by_role += [measure_roles(base, attack, voting, seed) for seed in range(args.seeds)]
          print(f"{attack} / {voting}: {[r['test_accuracy'] for r in by_role[-args.seeds:]]}", flush=True)
  stats = aggregate(rows)
  role_stats = aggregate(by_role, key=lambda r: (r["attack"], r["voting"]))
  meta = {"workers": args.workers, "steps": args.steps, "seeds": args.seeds,
          "optimizers": {k: {**v, "learning_rate": v.get("learning_rate", base.learning_rate)} for k, v in OPTIMIZERS.items()},
          "summary": [{"optimizer": o, "kind": k, "num_faulty": f, **s} for (o, k, f), s in stats.items()],
          "roles_summary": [{"attack": a, "voting": v, **s} for (a, v), s in role_stats.items()]}
  markdown = (f"Digits, {args.workers} workers x {base.per_worker_batch_size}, {args.steps} steps, "
              f"{args.seeds} seeds (mean ± std of the final test accuracy). Signum: lr {base.learning_rate}, "
              f"b1 {base.b1}; SGD: lr {OPTIMIZERS['sgd']['learning_rate']}, momentum 0.9; both with "
              f"weight decay {base.weight_decay} and the same schedule. The faulty workers are the last f; the "
              "last column counts the seeds where the vote named exactly them: suspected by kappa, or "
              "reported as abstaining (zero, nan).\n\n"
              + table(stats, pairs, args.workers))
  if by_role:
    markdown += ("\n\n### Faulty in every role: allgather, alltoall, and alltoall with 3 voters a shard\n\n"
                 f"Worker {args.workers - 1} lies in the role named (Signum, the same recipe, {args.seeds} seeds). "
                 "'named' counts the seeds where the vote's statistics (kappa of the ballots, and with "
                 "replicas the voters' kappa) named it wherever its lie is detectable (a negating ballot; "
                 "a lying vote with 3 voters a shard) and never named an honest worker.\n\n"
                 + roles_table(role_stats, args.attacks, args.workers))
  return results.write("robustness", meta, rows + by_role, markdown, plot_for(args.kinds, args.max_faulty), args.out)


if __name__ == "__main__":
  sys.exit(main() and 0)
