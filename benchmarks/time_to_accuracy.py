"""Wall time to a test accuracy over emulated links: M hosts, each a real ``python -m train`` process.

    python -m benchmarks.time_to_accuracy                 # the grid below, seed 0 (about 25 min on 2 cores)
    python -m benchmarks.time_to_accuracy --grid 4@1gbit --seeds 1 2 --resume  # adds seeds to today's result
    python -m benchmarks.time_to_accuracy --quick         # M = 2 at 1 Gbit/s, three methods, few steps
    python -m benchmarks.time_to_accuracy --tune          # the learning-rate sweep behind WORKLOADS' rates
    python -m benchmarks.time_to_accuracy --grid 4@1gbit --faulty-nan --resume  # one NaN worker, each method

The question a user asks before choosing Signum with majority vote over SGD or Adam with an
all-reduce: on my links, with my model, how long until the model is as good as I need?

Each run is one JAX job: ``hosts`` processes of ``python -m train`` (the same trainer and configs
users run), each in its own network namespace behind a veth link that ``tc`` caps at the link
rate in both directions, as :mod:`benchmarks.cluster` builds them (without root: one capped
loopback, then plain loopback; the result says which). A host holds one device, or 2 for the
hierarchical vote (``DEVICES_PER_HOST``, one process with 2 simulated devices, as a real host with
2 GPUs). Every host trains on ``BATCH_PER_HOST`` examples a step, so the global batch depends on M
alone, not on the method.

Workload: ``configs/digits_wide.py`` (a 10.5M-parameter MLP on the embedded digits: 42 MB of
float32 gradient a step), with its recipe but for the learning rate, which is each method's own
(``WORKLOADS``, tuned by ``--tune``: at M = 4 on free links, the rate of ``TUNING_GRID`` that
reaches 97 % test accuracy in the fewest steps).
``--workload resnet18_cifar10`` runs ResNet-18 on CIFAR-10 instead, where tfds has it prepared.

Beside the JAX methods runs the peer a PyTorch user would pick instead (:mod:`benchmarks.ddp_peer`):
DDP over gloo, with its plain all-reduce or the PowerSGD hook at rank 2 and 4 (Vogels et al., 2019),
one process per host with one thread, on the same MLP, data split, batch size, recipe (SGD's, at
SGD's rate) and links. Each compressed method is compared with its own framework's all-reduce,
which keeps the comparison fair although the frameworks' steps differ; every run reports the bytes a
host sends per step (the JAX trainer reads them from its compiled step, the peer computes them from
the model's shapes). ``--faulty-nan`` makes the last host send NaN: what one such worker costs each
method (a vote abstains on it, an average takes it in).

Time is the trainer's own ``train_seconds``: wall time of the training steps with compilation
included (also reported apart, ``compile_seconds``) and evaluation and checkpoints excluded; it
is read at each evaluation, every 5 steps (``Workload.eval_every``). A run stops after as many
examples as ``--steps`` steps at 4 hosts, or when its training time passes ``--max-seconds``; a target it has not reached by then is null, and when the
same method and seed reached it elsewhere (the trajectory does not depend on the link), the row
adds ``projected_seconds_to_<target>``: its measured time so far plus the missing steps at its
measured step time. Speed-ups compare the best Signum strategy with SGD and with Adam (per seed,
then the median); a baseline that was projected makes the factor a projection, and the table says so.

Writes ``benchmarks/results/time_to_accuracy-<device>-<date>.{json,md,png}``.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import network, results

ROOT = pathlib.Path(__file__).parents[1]
BATCH_PER_HOST = 32
DEVICES_PER_HOST = 2  # Hierarchical hosts.
GRID = ((4, "100mbit"), (4, "1gbit"), (4, "10gbit"), (2, "1gbit"), (8, "1gbit"))

# method: the trainer's config fields for it.
METHODS = {
    "signum_alltoall": {"optimizer": "signum", "vote.strategy": "alltoall"},
    "signum_allgather": {"optimizer": "signum", "vote.strategy": "allgather"},
    "signum_hierarchical": {"optimizer": "signum", "vote.strategy": "hierarchical", "vote.outer_strategy": "alltoall"},
    "lion_alltoall": {"optimizer": "lion", "vote.strategy": "alltoall", "b2": 0.99},  # Lion's paper: b1 0.9, b2 0.99.
    "sgd_allreduce": {"optimizer": "sgd"},
    "adam_allreduce": {"optimizer": "adam"},
}
# The peer a PyTorch user would pick instead (benchmarks/ddp_peer.py): DDP over gloo with its own
# all-reduce, or with the PowerSGD hook; SGD's recipe and rate. method: (exchange, rank).
PEERS = {"ddp_allreduce": ("allreduce", None), "ddp_powersgd_r2": ("powersgd", 2), "ddp_powersgd_r4": ("powersgd", 4)}
SIGNUM = ("signum_alltoall", "signum_allgather", "signum_hierarchical")
BASELINES = ("sgd_allreduce", "adam_allreduce")
# Each compressed method against its own framework's all-reduce.
ALL_METHODS = (*METHODS, *PEERS)
OWN_ALLREDUCE = {**{m: "sgd_allreduce" for m in (*SIGNUM, "lion_alltoall")},
                 **{m: "ddp_allreduce" for m in PEERS if m != "ddp_allreduce"}}


@dataclasses.dataclass(frozen=True)
class Workload:
  config: str  # The trainer's config file; the method's fields go on top.
  targets: tuple[float, ...]  # Test accuracies to time.
  eval_every: int  # Steps between evaluations: the resolution of the step and time counts.
  learning_rates: dict  # Per optimizer.


WORKLOADS = {
    # Tuned with --tune (benchmarks/results/time_to_accuracy_tuning-*.json); Signum's strategies
    # share Signum's rate.
    "digits_wide": Workload("configs/digits_wide.py", (0.95, 0.97), 5,
                            {"signum": 3e-3, "lion": 3e-4, "sgd": 0.1, "adam": 3e-3}),
    # The paper's rates for Signum and SGD (configs/resnet18_cifar10_*.py), Adam's default, and
    # Lion at Signum's (the same sign step); untuned here, where CIFAR-10 cannot be read.
    "resnet18_cifar10": Workload("configs/resnet18_cifar10_signum.py", (0.80, 0.90), 390,
                                 {"signum": 1e-4, "lion": 1e-4, "sgd": 0.1, "adam": 1e-3}),
}
# Started at 3 rates a factor of about 3 apart, around each optimizer's usual rate, and widened where the
# best was at an edge.
TUNING_GRID = {"signum": (1e-3, 3e-3, 1e-2), "lion": (1e-4, 3e-4, 1e-3, 3e-3), "sgd": (0.03, 0.1, 0.3, 1.0),
               "adam": (3e-4, 1e-3, 3e-3)}


def steps_for(steps_at_4: int, hosts: int) -> int:
  """A run's steps: ``steps_at_4`` at 4 hosts, as many examples at any M (the global batch is M x 32)."""
  return max(1, round(steps_at_4 * 4 / hosts))


def devices_per_host(method: str) -> int:
  return DEVICES_PER_HOST if METHODS.get(method, {}).get("vote.strategy") == "hierarchical" else 1


def optimizer_of(method: str) -> str:
  """Whose learning rate a method takes: the JAX trainer's optimizer; SGD's for the DDP peers."""
  return "sgd" if method in PEERS else METHODS[method]["optimizer"]


def overrides(workload: Workload, method: str, hosts: int, seed: int, steps: int, learning_rate: float,
              data_dir: str, fault: str = "") -> dict:
  """The trainer's config fields of one run, on top of the workload's config."""
  per_host = devices_per_host(method)
  fields = {**METHODS[method], "num_workers": hosts * per_host, "per_worker_batch_size": BATCH_PER_HOST // per_host,
            "learning_rate": learning_rate, "seed": seed, "num_steps": steps, "eval_every": workload.eval_every,
            "log_every": workload.eval_every, "checkpoint_every": 0, "progress_bar": False}
  if fault:  # The last host's workers; for hierarchical, one of them poisons its host's sum.
    fields.update({"faults.kind": fault, "faults.num_faulty": 1})
  if data_dir:
    fields["data_dir"] = data_dir
  return fields


def command(workload: Workload, method: str, hosts: int, seed: int, steps: int, learning_rate: float,
            data_dir: str, fault: str, workdir: pathlib.Path) -> list[str]:
  """A host's command line: ``python -m train`` with the run's config, or the DDP peer."""
  if method in PEERS:
    comm, rank = PEERS[method]
    config = pathlib.Path(workload.config).stem
    return [sys.executable, "-m", "benchmarks.ddp_peer", f"--workdir={workdir}", f"--comm={comm}", f"--rank={rank or 1}",
            f"--config={config}", f"--learning-rate={learning_rate}", f"--batch={BATCH_PER_HOST}", f"--num-steps={steps}",
            f"--eval-every={workload.eval_every}", f"--seed={seed}", *(["--faulty-nan"] if fault else [])]
  fields = overrides(workload, method, hosts, seed, steps, learning_rate, data_dir, fault)
  return [sys.executable, "-m", "train", f"--config={ROOT / workload.config}", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in fields.items())]


# ----------------------------------------------------------------------------------------------
# One run: the job's processes in the hosts' namespaces, stopped at --max-seconds of training.


def _records(workdir: pathlib.Path) -> list[dict]:
  try:
    text = (workdir / "metrics.jsonl").read_text()
  except FileNotFoundError:
    return []
  return [json.loads(line) for line in text.splitlines() if line.endswith("}")]  # A line being written is skipped.


def train_job(net, hosts: int, make_command, max_seconds: float, timeout: float) -> dict:
  """Runs one job (``make_command(workdir)``: each host's command line) to its end, or stops it once it
  has trained ``max_seconds``; its metrics records."""
  from train import launch  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as workdir:
    workdir = pathlib.Path(workdir)
    port = launch.free_port()
    argv = make_command(workdir)
    processes, logs = [], [None] + [workdir / f"host{host}.log" for host in range(1, hosts)]
    for host in range(hosts):
      env = network.host_environment(net, port, hosts, host)
      # Host 0 speaks on this terminal (its error line, if any); the others into files, shown on failure.
      with open(logs[host] or os.devnull, "w", encoding="utf-8") as stderr:
        processes.append(subprocess.Popen([*net.prefix(host), *argv], env=env,
                                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None if host == 0 else stderr,
                                          start_new_session=True))
    started, capped, failed = time.monotonic(), False, []
    try:
      while any(p.poll() is None for p in processes) and not failed:
        # A run that fails (its training diverged, say) is a result: its records so far, and its status.
        failed = [p.returncode for p in processes if p.poll() not in (None, 0)]
        records = _records(workdir)
        if records and records[-1].get("train_seconds", 0) >= max_seconds:
          capped = True
          break
        if time.monotonic() - started > timeout:
          raise TimeoutError(f"time_to_accuracy: a job ran past --timeout={timeout} s: {argv}")
        time.sleep(0.2)
    finally:
      for p in processes:
        if p.poll() is None:
          os.killpg(p.pid, 9)
        p.wait()
    failed = failed or [p.returncode for p in processes if p.returncode and not capped]
    for log, p in zip(logs, processes):
      if log is not None and p.returncode and not capped:
        print(f"{log.name}: {log.read_text().strip().splitlines()[-1:]}", file=sys.stderr)
    return {"records": _records(workdir), "stopped_at_max_seconds": capped,
            "exit_status": launch.exit_status(failed[0]) if failed else 0}


# ----------------------------------------------------------------------------------------------
# What a run's records say.


def target_name(target: float) -> str:
  return f"{round(100 * target)}"


def summarize(records: list[dict], targets, eval_split: str = "test") -> dict:
  evals = [r for r in records if r["split"] == eval_split]
  train = [r for r in records if r["split"] == "train"]
  row = {"steps": train[-1]["step"] if train else 0,
         "compile_seconds": next((r["compile_seconds"] for r in train if "compile_seconds" in r), None),
         # Bytes a host sends per step (bandwidth-optimal collectives), as the run reported them.
         "wire_bytes_per_host": next((r["wire_bytes_per_host"] for r in train if "wire_bytes_per_host" in r), None),
         "final_accuracy": evals[-1]["accuracy"] if evals else None,
         "curve": {"step": [r["step"] for r in evals], "train_seconds": [r["train_seconds"] for r in evals],
                   "accuracy": [r["accuracy"] for r in evals]}}
  # The steady step time: training periods after the first (which compiles).
  periods = [(b["train_seconds"] - a["train_seconds"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:])]
  row["step_seconds"] = statistics.median(periods) if periods else None
  for target in targets:
    name = target_name(target)
    row[f"seconds_to_{name}"] = results.first_reaching(row["curve"]["train_seconds"], row["curve"]["accuracy"], target)
    row[f"steps_to_{name}"] = results.first_reaching(row["curve"]["step"], row["curve"]["accuracy"], target)
  return row


def add_projections(rows: list[dict], targets) -> None:
  """Where a run stopped short of a target that the same method and seed reached on another link."""
  for r in rows:
    for target in targets:
      name = target_name(target)
      if r[f"seconds_to_{name}"] is not None or r["step_seconds"] is None:
        continue
      steps = [o[f"steps_to_{name}"] for o in rows
               if (o["method"], o["hosts"], o["seed"], o.get("fault", "")) == (r["method"], r["hosts"], r["seed"], r.get("fault", ""))
               and o[f"steps_to_{name}"] is not None]
      if steps and r["curve"]["step"]:
        trained, seconds = r["curve"]["step"][-1], r["curve"]["train_seconds"][-1]
        r[f"projected_seconds_to_{name}"] = seconds + (steps[0] - trained) * r["step_seconds"]
        r[f"projected_steps_to_{name}"] = steps[0]


def seconds_to(row: dict, name: str):
  """Measured time to a target, else the projected one; and whether it was projected."""
  if row[f"seconds_to_{name}"] is not None:
    return row[f"seconds_to_{name}"], False
  projected = row.get(f"projected_seconds_to_{name}")
  return projected, projected is not None


def speedups(rows: list[dict], name: str) -> list[dict]:
  """Per link and M: the best Signum strategy against each baseline, the median over seeds (runs
  without a fault)."""
  rows = [r for r in rows if not r.get("fault")]
  out = []
  for hosts, link in sorted({(r["hosts"], r["link"]) for r in rows}, key=network.setting_order):
    mine = [r for r in rows if (r["hosts"], r["link"]) == (hosts, link)]
    for baseline in BASELINES:
      factors, projected, best_methods = [], False, []
      for seed in sorted({r["seed"] for r in mine}):
        signum = [(seconds_to(r, name)[0], r["method"]) for r in mine
                  if r["seed"] == seed and r["method"] in SIGNUM and r[f"seconds_to_{name}"] is not None]
        base = next((seconds_to(r, name) for r in mine if r["seed"] == seed and r["method"] == baseline), (None, False))
        if signum and base[0] is not None:
          best = min(signum)
          factors.append(base[0] / best[0])
          projected |= base[1]
          best_methods.append(best[1])
      if factors:
        out.append({"hosts": hosts, "link": link, "baseline": baseline, "speedup": statistics.median(factors),
                    "per_seed": factors, "projected": projected, "best_signum": max(set(best_methods), key=best_methods.count)})
  return out


def own_speedups(rows: list[dict], name: str) -> list[dict]:
  """Per link and M, each compressed method against its own framework's all-reduce (Signum and Lion
  against the JAX trainer's SGD, PowerSGD against DDP's all-reduce): the median over seeds of the
  all-reduce's time to the target over the method's, with both times and the bytes a host sends."""
  rows = [r for r in rows if not r.get("fault")]
  out = []
  for hosts, link in sorted({(r["hosts"], r["link"]) for r in rows}, key=network.setting_order):
    mine = [r for r in rows if (r["hosts"], r["link"]) == (hosts, link)]
    for method, baseline in OWN_ALLREDUCE.items():
      factors, times, base_times, projected = [], [], [], False
      for seed in sorted({r["seed"] for r in mine}):
        run = next((r for r in mine if (r["method"], r["seed"]) == (method, seed)), None)
        base = next((r for r in mine if (r["method"], r["seed"]) == (baseline, seed)), None)
        if run is None or base is None:
          continue
        (t, p), (b, q) = seconds_to(run, name), seconds_to(base, name)
        if t is not None and b is not None:
          factors.append(b / t)
          times.append(t)
          base_times.append(b)
          projected |= p or q
      runs = [r for r in mine if r["method"] in (method, baseline)]
      if factors:
        wire = {m: next((r["wire_bytes_per_host"] for r in runs if r["method"] == m and r.get("wire_bytes_per_host")), None)
                for m in (method, baseline)}
        out.append({"hosts": hosts, "link": link, "method": method, "baseline": baseline,
                    "seconds": statistics.median(times), "baseline_seconds": statistics.median(base_times),
                    "speedup": statistics.median(factors), "projected": projected,
                    "wire_bytes_per_host": wire[method], "baseline_wire_bytes_per_host": wire[baseline]})
  return out


# ----------------------------------------------------------------------------------------------
# Results.


def _cell(value, fmt, projected=None):
  if value is None:
    return "never" if projected is None else f"({fmt.format(projected)})"
  return fmt.format(value)


def table(rows: list[dict], targets) -> str:
  rows = [r for r in rows if not r.get("fault")]
  low, high = map(target_name, targets)
  lines = [f"| M | link | method | lr | s to {low} % | s to {high} % | steps to {high} % | compile s | step ms | final acc. |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  groups = sorted({(r["hosts"], r["link"], r["method"]) for r in rows},
                  key=lambda k: network.setting_order((*k[:2], list(ALL_METHODS).index(k[2]))))
  for hosts, link, method in groups:
    mine = [r for r in rows if (r["hosts"], r["link"], r["method"]) == (hosts, link, method)]

    def med(key, mine=mine):
      values = [r[key] for r in mine if r.get(key) is not None]
      return statistics.median(values) if len(values) == len(mine) else None

    def med_projected(key, mine=mine):
      values = [seconds_to(r, key)[0] for r in mine]
      return statistics.median(values) if None not in values else None

    lines.append(
        f"| {hosts} | {link} | {method} | {mine[0]['learning_rate']:g} | "
        f"{_cell(med(f'seconds_to_{low}'), '{:.1f}', med_projected(low))} | "
        f"{_cell(med(f'seconds_to_{high}'), '{:.1f}', med_projected(high))} | "
        f"{_cell(med(f'steps_to_{high}'), '{:.0f}')} | {_cell(med('compile_seconds'), '{:.1f}')} | "
        f"{_cell(med('step_seconds') and 1e3 * med('step_seconds'), '{:.0f}')} | {_cell(med('final_accuracy'), '{:.1%}')}"
        f"{_failures(mine)} |")
  return "\n".join(lines)


def _failures(rows: list[dict]) -> str:
  failed = [r for r in rows if r.get("exit_status")]
  return f" ({len(failed)} of {len(rows)} failed, exit {failed[0]['exit_status']})" if failed else ""


def own_speedup_table(factors: list[dict], name: str) -> str:
  lines = [f"| M | link | method | s to {name} % | its own all-reduce | s to {name} % | sooner | MB a step | "
           "of the all-reduce's |", "|---:|---|---|---:|---|---:|---:|---:|---:|"]
  for f in factors:
    wire, base_wire = f["wire_bytes_per_host"], f["baseline_wire_bytes_per_host"]
    share = f"1/{base_wire / wire:.0f}" if wire and base_wire else "n/a"
    mark = ("(", ")") if f["projected"] else ("", "")
    lines.append(f"| {f['hosts']} | {f['link']} | {f['method']} | {f['seconds']:.1f} | {f['baseline']} | "
                 f"{f['baseline_seconds']:.1f} | {mark[0]}{f['speedup']:.2f}x{mark[1]} | "
                 f"{'n/a' if wire is None else f'{wire / 1e6:.2f}'} | {share} |")
  return "\n".join(lines)


def fault_table(rows: list[dict], targets) -> str:
  """The runs with a faulty worker: what one NaN worker does to each method."""
  high = target_name(targets[-1])
  faulty = [r for r in rows if r.get("fault")]
  lines = [f"| M | link | method | fault | s to {high} % | final acc. |", "|---:|---|---|---|---:|---:|"]
  for r in sorted(faulty, key=lambda r: (network.setting_order((r["hosts"], r["link"])), list(ALL_METHODS).index(r["method"]))):
    lines.append(f"| {r['hosts']} | {r['link']} | {r['method']} | one {r['fault']} worker of {r['hosts']} | "
                 f"{_cell(r[f'seconds_to_{high}'], '{:.1f}')} | {_cell(r['final_accuracy'], '{:.1%}')} |")
  return "\n".join(lines)


def speedup_table(factors: list[dict], name: str) -> str:
  lines = [f"| M | link | best Signum strategy | sooner to {name} % than SGD | than Adam |", "|---:|---|---|---:|---:|"]
  for hosts, link in sorted({(f["hosts"], f["link"]) for f in factors}, key=network.setting_order):
    cells, best = [], ""
    for baseline in BASELINES:
      f = next((f for f in factors if (f["hosts"], f["link"], f["baseline"]) == (hosts, link, baseline)), None)
      cells.append("n/a" if f is None else f"{'(' if f['projected'] else ''}{f['speedup']:.1f}x{')' if f['projected'] else ''}")
      best = best or (f and f["best_signum"])
    lines.append(f"| {hosts} | {link} | {best} | {cells[0]} | {cells[1]} |")
  return "\n".join(lines)


def plot(rows: list[dict], target: float):
  settings = sorted({(r["hosts"], r["link"]) for r in rows}, key=lambda k: (k[0] != 4, network.setting_order(k)))
  fig, axs = results.figure(1, len(settings), (4.2 * len(settings), 3.4), sharey=True)
  for ax, (hosts, link) in zip(axs[0], settings):
    for i, method in enumerate(ALL_METHODS):
      mine = [r for r in rows if (r["hosts"], r["link"], r["method"]) == (hosts, link, method) and not r.get("fault")]
      for j, r in enumerate(mine):
        ax.plot(r["curve"]["train_seconds"], r["curve"]["accuracy"], color=f"C{i}", lw=1, alpha=0.8,
                ls="--" if method in PEERS else "-", label=method if j == 0 else None)
    ax.axhline(target, color="k", lw=0.5, ls="--")
    ax.set(title=f"M = {hosts} hosts, {link}", xlabel="training seconds (compile included)", xscale="log",
           ylim=(max(0.0, target - 0.4), 1.0))
  axs[0][0].set_ylabel("test accuracy")
  axs[0][0].legend(fontsize=7)
  return fig


# ----------------------------------------------------------------------------------------------
# The grid, and the learning-rate sweep.


def run_key(row: dict) -> tuple:
  """What tells runs apart: method, link, hosts, seed, and the fault ("" for none)."""
  return row["method"], row["link"], row["hosts"], row["seed"], row.get("fault", "")


def run_grid(mode: str, args, earlier: list[dict]) -> list[dict]:
  """Every run of the grid; those of ``earlier`` (``--resume``) are kept, not run again, and so are
  its runs outside this grid (another invocation's settings, seeds or fault)."""
  workload = WORKLOADS[args.workload]
  fault = "nan" if args.faulty_nan else ""
  planned = {(m, l, h, s, fault) for h, l in args.grid for m in args.methods for s in args.seeds}
  rows = [r for r in earlier if run_key(r) not in planned]
  by_hosts = {}
  for hosts, link in args.grid:
    by_hosts.setdefault(hosts, []).append(link)
  for hosts, links in by_hosts.items():
    with network.emulated(mode, hosts) as net:
      for link in links:
        net.set_rate(link)
        for method in args.methods:
          for seed in args.seeds:
            lr, num_steps = workload.learning_rates[optimizer_of(method)], steps_for(args.steps, hosts)
            done = [r for r in earlier if run_key(r) == (method, link, hosts, seed, fault)
                    and (r["learning_rate"], r.get("num_steps")) == (lr, num_steps)]
            if done:
              rows.append(done[0])
              continue
            argv = lambda workdir, m=method, s=seed: command(workload, m, hosts, s, num_steps, lr, args.data_dir, fault,  # pylint: disable=unnecessary-lambda-assignment
                                                              workdir)
            job = train_job(net, hosts, argv, args.max_seconds, args.timeout)
            row = {"method": method, "link": link, "hosts": hosts, "devices_per_host": devices_per_host(method),
                   "seed": seed, "fault": fault, "learning_rate": lr, "num_steps": num_steps,
                   "stopped_at_max_seconds": job["stopped_at_max_seconds"], "exit_status": job["exit_status"],
                   **summarize(job["records"], workload.targets)}
            rows.append(row)
            high = target_name(workload.targets[-1])
            print(f"M={hosts} {link} {method}{' ' + fault if fault else ''} seed {seed}: {high} % after "
                  f"{row[f'seconds_to_{high}']} s (step {row[f'steps_to_{high}']}), final {row['final_accuracy']}",
                  flush=True)
  add_projections(rows, workload.targets)
  return rows


def tune(args, earlier: list[dict]) -> list[dict]:
  """Steps to 97 % for each learning rate of TUNING_GRID, at M = 4 on free (uncapped) links.

  Runs of ``earlier`` (``--resume``) are kept, not run again: a grid widened where the best rate was
  at its edge runs only its new rates.
  """
  workload, rows = WORKLOADS[args.workload], []
  with network.emulated("uncapped-loopback", 4) as net:
    for optimizer, rates in TUNING_GRID.items():
      method = next(m for m, f in METHODS.items() if f["optimizer"] == optimizer)
      for lr in rates:
        for seed in args.seeds:
          done = [r for r in earlier if (r["optimizer"], r["learning_rate"], r["seed"]) == (optimizer, lr, seed)]
          if done:
            rows.append(done[0])
            continue
          argv = lambda workdir, m=method, s=seed, r=lr: command(workload, m, 4, s, args.steps, r, args.data_dir, "",  # pylint: disable=unnecessary-lambda-assignment
                                                                  workdir)
          job = train_job(net, 4, argv, float("inf"), args.timeout)
          row = {"optimizer": optimizer, "method": method, "learning_rate": lr, "seed": seed,
                 "exit_status": job["exit_status"], **summarize(job["records"], workload.targets)}
          rows.append(row)
          print(f"tune {optimizer} lr={lr:g} seed {seed}: 97 % at step {row['steps_to_97']}, "
                f"final {row['final_accuracy']}", flush=True)
  return rows


def tuning_table(rows: list[dict], steps: int, eval_every: int) -> str:
  never = steps + eval_every
  lines = [f"| optimizer | lr | steps to 97 % (mean over seeds; never counts {never}) | final acc. | chosen |",
           "|---|---:|---:|---:|---|"]
  for optimizer in TUNING_GRID:
    scores = {}
    for lr in TUNING_GRID[optimizer]:
      mine = [r for r in rows if r["optimizer"] == optimizer and r["learning_rate"] == lr]
      if mine:
        scores[lr] = (statistics.mean(r["steps_to_97"] or never for r in mine),
                      statistics.mean(r["final_accuracy"] or 0 for r in mine))
    best = min(scores, key=lambda lr: (scores[lr][0], -scores[lr][1])) if scores else None
    for lr, (mean_steps, final) in scores.items():
      failed = _failures([r for r in rows if r["optimizer"] == optimizer and r["learning_rate"] == lr])
      lines.append(f"| {optimizer} | {lr:g} | {mean_steps:.1f} | {final:.1%}{failed} | {'yes' if lr == best else ''} |")
  return "\n".join(lines)


def _grid_entry(text: str) -> tuple[int, str]:
  hosts, _, link = text.partition("@")
  try:
    network.rate_bits(link)
    if int(hosts) < 2:
      raise ValueError
    return int(hosts), link
  except ValueError:
    raise argparse.ArgumentTypeError(f"a grid entry is HOSTS@LINK with at least 2 hosts and a rate in tc's units, "
                                     f"like 4@1gbit; got {text!r}") from None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--grid", type=_grid_entry, nargs="+", default=list(GRID), help="HOSTS@LINK settings")
  parser.add_argument("--methods", nargs="+", choices=list(ALL_METHODS), default=list(ALL_METHODS))
  parser.add_argument("--faulty-nan", action="store_true",
                      help="the last host's worker sends NaN (faults.kind=nan; the DDP peer's --faulty-nan)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--steps", type=int, default=50,
                      help="steps of a run at 4 hosts, at most (M hosts: 4/M times as many, the same examples)")
  parser.add_argument("--max-seconds", type=float, default=40.0, help="training seconds of a run, at most")
  parser.add_argument("--workload", choices=list(WORKLOADS), default="digits_wide")
  parser.add_argument("--data-dir", default="", help="tfds data dir (default: tfds' own)")
  parser.add_argument("--network", choices=network.NETWORK_MODES, default="auto")
  parser.add_argument("--timeout", type=float, default=600, help="seconds before a job's processes are stopped")
  parser.add_argument("--quick", action="store_true",
                      help="M = 2 at 1gbit, signum_alltoall, sgd_allreduce and ddp_powersgd_r4, 20 steps")
  parser.add_argument("--tune", action="store_true", help="the learning-rate sweep (free links, M = 4)")
  parser.add_argument("--resume", action="store_true",
                      help="keep the runs of today's result in --out made with the same settings; run the others")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.quick:
    # 20 steps at 2 hosts (10 at 4).
    args.grid, args.methods, args.steps, args.max_seconds = ([(2, "1gbit")], ["signum_alltoall", "sgd_allreduce",
                                                                               "ddp_powersgd_r4"], 10, 60.0)
  if args.workload == "resnet18_cifar10":
    _check_cifar10(args.data_dir, parser)
  _prepare_digits(args.data_dir)
  out, workload = args.out or results.RESULTS, WORKLOADS[args.workload]
  network.exit_cleanly_on_signals()

  if args.tune:
    rows = tune(args, _earlier(out, "time_to_accuracy_tuning", args, {"network": "uncapped-loopback"}))
    meta = {"workload": args.workload, "hosts": 4, "network": "uncapped-loopback", "steps": args.steps,
            "seeds": args.seeds, "eval_every": workload.eval_every, "grid": TUNING_GRID}
    return results.write("time_to_accuracy_tuning", meta, rows, tuning_table(rows, args.steps, workload.eval_every),
                         None, out, command="python -m benchmarks.time_to_accuracy --tune")

  mode = network.choose_network(args.network, "benchmarks.time_to_accuracy", argv)
  if mode is None:
    return None
  rows = run_grid(mode, args, _earlier(out, "time_to_accuracy", args, {"network": mode, "max_seconds": args.max_seconds}))
  high = target_name(workload.targets[-1])
  factors, own = speedups(rows, high), own_speedups(rows, high)
  settings = sorted({(r["hosts"], r["link"], r["seed"]) for r in rows}, key=network.setting_order)
  meta = {"workload": args.workload, "network": mode, "runs": [f"{h}@{l} seed {s}" for h, l, s in settings],
          "steps": args.steps, "max_seconds": args.max_seconds,
          "eval_every": workload.eval_every, "batch_per_host": BATCH_PER_HOST,
          "learning_rates": workload.learning_rates, "speedups": factors, "own_speedups": own}
  seeds = {f"{h}@{l}": sorted({s for h2, l2, s in settings if (h2, l2) == (h, l)}) for h, l, _ in settings}
  markdown = (f"Workload **{args.workload}**, network **{mode}** ({network.HOW[mode]}); seeds {seeds}, "
              f"medians over them. A run stops after {args.steps} steps at 4 hosts (as many examples at M "
              f"hosts) or {args.max_seconds:g} s of training. "
              "Seconds are training time (compilation included, evaluation excluded); a time in parentheses "
              "is projected (the target was reached by the same method and seed on another link, at the "
              "step time measured here); never: not reached and nothing to project from.\n\n"
              f"{speedup_table(factors, high)}\n\nEach compressed method against its own framework's "
              "all-reduce (JAX: SGD over `mean_allreduce`; PyTorch: DDP's), and the bytes a host sends a "
              f"step (bandwidth-optimal collectives):\n\n{own_speedup_table(own, high)}\n\n"
              f"{table(rows, workload.targets)}"
              + (f"\n\nOne faulty worker:\n\n{fault_table(rows, workload.targets)}" if any(r.get("fault") for r in rows) else ""))
  return results.write("time_to_accuracy", meta, rows, markdown,
                       lambda rows: plot(rows, workload.targets[-1]), out)


def _earlier(out, name: str, args, settings: dict) -> list[dict]:
  """With ``--resume``, the rows of today's ``name`` result in ``out`` if it has these settings."""
  path = results.stem(name, out).with_suffix(".json")
  if not args.resume or not path.exists():
    return []
  saved = json.loads(path.read_text())
  settings = {**settings, "workload": args.workload, "steps": args.steps}
  differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
  if differ:
    print(f"time_to_accuracy: not resuming {path.name}, whose settings differ: {differ}", flush=True)
    return []
  print(f"time_to_accuracy: keeping the {len(saved['rows'])} runs of {path.name}", flush=True)
  return saved["rows"]


def _prepare_digits(data_dir: str) -> None:
  """Builds the embedded digits once, here, rather than in M processes at the same time."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from train import input_pipeline  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  config.data_dir = data_dir
  input_pipeline.load_dataset(config)


def _check_cifar10(data_dir: str, parser) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    tfds.data_source("cifar10", split="test", data_dir=data_dir or None, download=False)
  except Exception:  # pylint: disable=broad-exception-caught  (tfds raises several kinds for a missing dataset)
    parser.error(f"CIFAR-10 is not prepared in data dir {data_dir or '(tfds default)'!r}; prepare it with tfds "
                 "(tfds build cifar10) or pass --data-dir where it is.")


if __name__ == "__main__":
  main()
