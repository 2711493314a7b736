"""Test accuracy against steps and against wall time: the vote, one worker's Signum, SGD, Adam.

    python -m benchmarks.convergence            # digits, 300 steps (and CIFAR-10 if it is prepared)
    python -m benchmarks.convergence --quick    # digits, 20 steps, 2 workers

Every method trains the same model on the same global batches (``configs/digits.py``: 8 workers x
16): Signum with majority vote over 8 workers; single-worker Signum (one worker with the whole
global batch of 128, no vote); SGD with momentum and Adam over ``mean_allreduce``. Test accuracy
is evaluated every ``--eval-every`` steps; wall time is the trainer's ``train_seconds`` (evaluation
not included), on this machine's simulated CPU devices, where communication is free: the time
axis shows the cost of compute only. A one-step run of each method fills JAX's compilation cache
first, so that compiling (a few seconds, once per program) does not dominate the time axis. CIFAR-10 (ResNet-18, ``configs/resnet18_cifar10_*``)
runs too when ``cifar10`` is prepared in ``--data-dir``; otherwise the result says it was absent.
Writes ``benchmarks/results/convergence-<device>-<date>.{json,md,png}``.
"""

import argparse
import sys

import benchmarks

if __name__ == "__main__":
  benchmarks.simulate_cpu_devices(8)  # Before JAX starts.

from benchmarks import results, training  # pylint: disable=wrong-import-position
from configs import digits, resnet18_cifar10_sgd, resnet18_cifar10_signum  # pylint: disable=wrong-import-position
from train import input_pipeline  # pylint: disable=wrong-import-position
from train.errors import ConfigError  # pylint: disable=wrong-import-position


def digits_methods(num_workers: int) -> dict:
  """Each method as (config module, overrides): configs/digits.py is the vote's own recipe."""
  batch = digits.get_config().per_worker_batch_size * num_workers
  return {
      "signum_vote": (digits, {"num_workers": num_workers}),
      "signum_single": (digits, {"num_workers": 1, "per_worker_batch_size": batch}),
      "sgd_momentum": (digits, {"num_workers": num_workers, "optimizer": "sgd", "learning_rate": 0.1, "b1": 0.9}),
      "adam": (digits, {"num_workers": num_workers, "optimizer": "adam", "learning_rate": 3e-3, "b1": 0.9}),
  }


# The paper's CIFAR-10 pair, 8 workers x 16, as configured.
CIFAR_METHODS = {"signum_vote": (resnet18_cifar10_signum, {}), "sgd_momentum": (resnet18_cifar10_sgd, {})}


def curve(dataset: str, method: str, config, overrides: dict) -> dict:
  summary, records = training.run(config, overrides)
  evals = [r for r in records if r["split"] == config.eval_split]
  return {"dataset": dataset, "method": method, "overrides": overrides,
          "steps": [r["step"] for r in evals], "test_accuracy": [r["accuracy"] for r in evals],
          "train_seconds": [r["train_seconds"] for r in evals], "final_test_accuracy": summary["test_accuracy"]}


def table(rows, targets):
  head = " | ".join(f"steps to {t:.0%} | seconds to {t:.0%}" for t in targets)
  lines = [f"| dataset | method | final test accuracy | {head} |", "|---|---|---:|" + "---:|---:|" * len(targets)]
  for r in rows:
    cells = []
    for t in targets:
      step = results.first_reaching(r["steps"], r["test_accuracy"], t)
      seconds = results.first_reaching(r["train_seconds"], r["test_accuracy"], t)
      cells += ["-" if step is None else str(step), "-" if seconds is None else f"{seconds:.1f}"]
    lines.append(f"| {r['dataset']} | {r['method']} | {100 * r['final_test_accuracy']:.1f} % | {' | '.join(cells)} |")
  return "\n".join(lines)


def plot(rows):

  datasets = sorted({r["dataset"] for r in rows})
  fig, axs = results.figure(len(datasets), 2, (10, 3.6 * len(datasets)))
  for (by_step, by_time), dataset in zip(axs, datasets):
    for r in (r for r in rows if r["dataset"] == dataset):
      accuracy = [None if a is None else 100 * a for a in r["test_accuracy"]]
      by_step.plot(r["steps"], accuracy, marker=".", label=r["method"])
      by_time.plot(r["train_seconds"], accuracy, marker=".", label=r["method"])
    by_step.set(title=f"{dataset}: test accuracy against steps", xlabel="step", ylabel="test accuracy (%)")
    by_time.set(title=f"{dataset}: against training wall time", xlabel="seconds (compiled beforehand)")
    for ax in (by_step, by_time):
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
  return fig


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--eval-every", type=int, default=10)
  parser.add_argument("--workers", type=int, default=8)
  parser.add_argument("--cifar-steps", type=int, default=2000, help="steps of the CIFAR-10 runs, if prepared")
  parser.add_argument("--data-dir", default="", help="tfds data dir ('' is tfds' default)")
  parser.add_argument("--quick", action="store_true", help="20 steps on 2 workers, no CIFAR-10")
  parser.add_argument("--out", default=str(results.RESULTS))
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.eval_every, args.workers = 20, 10, 2

  plans = [("sklearn_digits", args.steps, digits_methods(args.workers))]
  cifar = resnet18_cifar10_signum.get_config()
  cifar.data_dir = args.data_dir
  try:
    if args.quick:
      raise ConfigError("not run by --quick")
    input_pipeline.load_image_dataset(cifar)
    plans.append(("cifar10", args.cifar_steps, CIFAR_METHODS))
    cifar_status = "present"
  except ConfigError as e:
    cifar_status = f"absent: {e}"
  print(f"cifar10 {cifar_status}", flush=True)

  rows = []
  with training.compile_cache():
    for dataset, steps, methods in plans:
      for method, (module, overrides) in methods.items():
        config = module.get_config()
        config.data_dir, config.num_steps = args.data_dir, steps
        config.eval_every = config.log_every = args.eval_every if dataset == "sklearn_digits" else max(1, steps // 20)
        config.checkpoint_every = steps
        training.run(config, {**overrides, "num_steps": 1})  # Compiles into the cache.
        rows.append(curve(dataset, method, config, overrides))
        print(f"{dataset} {method}: {rows[-1]['final_test_accuracy']}", flush=True)
  targets = (0.9, 0.95)
  meta = {"steps": args.steps, "workers": args.workers, "cifar10": cifar_status}
  markdown = (f"Digits: `configs/digits.py` ({args.workers} workers x 16 unless noted), {args.steps} steps, "
              f"evaluated every {args.eval_every}; SGD lr 0.1 with momentum 0.9, Adam lr 3e-3, both over "
              "`mean_allreduce`; single-worker Signum takes the whole global batch. Seconds: training wall time on "
              "this machine (simulated devices, no network; programs compiled beforehand). CIFAR-10: {cifar_status}.\n\n" + table(rows, targets))
  return results.write("convergence", meta, rows, markdown, plot, args.out)


if __name__ == "__main__":
  sys.exit(main() and 0)
