"""What a run leaves in its workdir: metrics.jsonl, summary.json and curves.png; and a progress bar."""

import contextlib
import json
import math
import os

import numpy as np
import tqdm

from train.errors import StorageError, reason


@contextlib.contextmanager
def writing(path: str):
  """Turns a failed write of ``path`` (a full disk, a directory in the way) into one StorageError line."""
  try:
    yield
  except OSError as e:
    raise StorageError(
        f"cannot write {path!r}: {reason(e)}; what the run wrote before is intact (a torn last line is "
        "dropped on resume): make room and rerun the same command to resume from the last checkpoint.") from e


def _json_value(value):
  """Non-finite floats become null, so that every line stays valid JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, list):
    return [_json_value(v) for v in value]
  return value


def _parse(line: str) -> dict | None:
  """A metrics line, or None for one that a killed run left half-written (it is dropped)."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


class Reporter:
  """Writes metrics lines and the final files; only the process given ``enabled`` writes anything.

  A resumed run keeps the lines of steps up to its checkpoint and drops later ones (written after
  the checkpoint by the run that stopped), so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, *, start_step: int, num_steps: int, enabled: bool, progress_bar: bool):
    self._workdir = workdir
    self._enabled = enabled
    self._path = os.path.join(workdir, "metrics.jsonl")
    self.records = []
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      with writing(self._path):
        if start_step > 0 and os.path.exists(self._path):
          with open(self._path) as f:
            self.records = [r for r in map(_parse, f) if r is not None and r["step"] <= start_step]
        with open(self._path, "w") as f:
          f.writelines(json.dumps(r) + "\n" for r in self.records)
    self._bar = tqdm.tqdm(total=num_steps, initial=start_step, disable=not (enabled and progress_bar), unit="step")

  def write(self, step: int, split: str, metrics: dict) -> None:
    record = {"step": step, "split": split, **{k: _json_value(v) for k, v in metrics.items()}}
    self.records.append(record)
    if not self._enabled:
      return
    with writing(self._path), open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    shown = {f"{split} {k}": f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "accuracy") and v is not None}
    self._bar.set_postfix(shown, refresh=False)

  def advance(self, step: int) -> None:
    self._bar.update(step - self._bar.n)

  def last(self, split: str) -> dict:
    """The latest metrics of ``split`` ({} if none yet)."""
    return next((r for r in reversed(self.records) if r["split"] == split), {})

  def finish(self, summary: dict) -> None:
    self._bar.close()
    if not self._enabled:
      return
    path = os.path.join(self._workdir, "summary.json")
    with writing(path), open(path, "w") as f:
      json.dump({k: _json_value(v) for k, v in summary.items()}, f, indent=2)
    path = os.path.join(self._workdir, "curves.png")
    with writing(path):
      plot_curves(self.records, path)


def plot_curves(records: list[dict], path: str) -> None:
  """Loss and accuracy of every split against steps, and the per-worker vote statistics if logged."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  (1 s at every start otherwise)

  splits = sorted({r["split"] for r in records})
  per_worker = {"agreement": ("agreement with the vote", 0.5), "kappa": ("kappa (agreement beyond chance)", 0.0),
                "nonfinite": ("non-finite coordinates (abstained)", 0.0),
                "voter_kappa": ("kappa of its votes against the median", 0.0)}
  measured = [name for name in per_worker if any(v is not None for r in records for v in r.get(name) or [])]
  panels = ["loss", "accuracy"] + measured
  figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
  for axes, name in zip(figure.subplots(1, len(panels)), panels):
    if name in per_worker:
      label, chance = per_worker[name]
      rows = [r for r in records if name in r]
      for worker in range(max(len(r[name]) for r in rows)):  # Elastic runs change the count.
        # A statistic not measured (a worker that abstained everywhere, or absent then) is NaN.
        values = [np.nan if worker >= len(r[name]) or r[name][worker] is None else r[name][worker] for r in rows]
        axes.plot([r["step"] for r in rows], values, label=f"worker {worker}")
      axes.axhline(chance, color="grey", linestyle=":", linewidth=1)
      axes.set_ylabel(label)
    else:
      for split in splits:
        rows = [r for r in records if r["split"] == split and r.get(name) is not None]
        axes.plot([r["step"] for r in rows], [r[name] for r in rows], label=split)
      axes.set_ylabel(name)
    axes.set_xlabel("step")
    axes.legend(fontsize="small")
  figure.savefig(path, dpi=100)
