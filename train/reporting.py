"""What a run leaves in its workdir: metrics.jsonl, TensorBoard events, summary.json and curves.png;
and its progress: a bar on a terminal, one line per log period in a log file."""

import contextlib
import glob
import json
import math
import os
import sys
import time

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
  """Writes metrics lines, TensorBoard events and the final files, and shows the run's progress;
  only the process given ``enabled`` writes or shows anything.

  A resumed run keeps the lines of steps up to its checkpoint and drops later ones (written after
  the checkpoint by the run that stopped), so the file reads as one uninterrupted run; its events
  start with a purge of the later steps, which TensorBoard applies to the earlier event files.
  Progress (with ``progress``) is a bar when stderr is a terminal, and otherwise one line per
  logged record (a log file has no use for a bar's carriage returns).
  """

  def __init__(self, workdir: str, *, start_step: int, num_steps: int, enabled: bool, progress: bool, title: str = ""):
    self._workdir, self._enabled, self._num_steps, self._title = workdir, enabled, num_steps, title
    self._path = os.path.join(workdir, "metrics.jsonl")
    self.records = []
    self._events = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      with writing(self._path):
        if start_step > 0 and os.path.exists(self._path):
          with open(self._path) as f:
            self.records = [r for r in map(_parse, f) if r is not None and r["step"] <= start_step]
        with open(self._path, "w") as f:
          f.writelines(json.dumps(r) + "\n" for r in self.records)
      with writing(os.path.join(workdir, EVENTS)):
        self._events = TensorBoardEvents(workdir, start_step)
    self._show = enabled and progress
    self._terminal = self._show and sys.stderr.isatty()
    self._bar = tqdm.tqdm(total=num_steps, initial=start_step, disable=not self._terminal, unit="step")
    self._rate_from = (start_step, time.perf_counter())

  def write(self, step: int, split: str, metrics: dict) -> None:
    record = {"step": step, "split": split, **{k: _json_value(v) for k, v in metrics.items()}}
    self.records.append(record)
    if not self._enabled:
      return
    with writing(self._path), open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    with writing(os.path.join(self._workdir, EVENTS)):
      self._events.write(record)
    shown = {k: f"{v:.4g}" for k, v in metrics.items() if k in SHOWN and v is not None}
    self._bar.set_postfix({f"{split} {k}": v for k, v in shown.items()}, refresh=False)
    if self._show and not self._terminal:
      rate = f" ({self._steps_per_second(step):.1f} steps/s)" if split == "train" else ""
      self.say(f"step {step}/{self._num_steps} {split}: " + ", ".join(f"{k} {v}" for k, v in shown.items()) + rate)

  def _steps_per_second(self, step: int) -> float:
    (before, then), now = self._rate_from, time.perf_counter()
    self._rate_from = (step, now)
    return (step - before) / max(now - then, 1e-9)

  def say(self, line: str) -> None:
    """A line of progress: above the bar on a terminal, as it is in a log file."""
    if not self._show:
      return
    if self._terminal:
      tqdm.tqdm.write(line, file=sys.stderr)
    else:
      print(line, file=sys.stderr, flush=True)

  @contextlib.contextmanager
  def saving(self, step: int):
    """Says that a checkpoint is being saved (the first one can take seconds), and how long it took."""
    self.say(f"step {step}: saving a checkpoint")
    started = time.perf_counter()
    yield
    self.say(f"step {step}: checkpoint saved in {time.perf_counter() - started:.1f} s")

  def advance(self, step: int) -> None:
    self._bar.update(step - self._bar.n)

  def last(self, split: str) -> dict:
    """The latest metrics of ``split`` ({} if none yet)."""
    return next((r for r in reversed(self.records) if r["split"] == split), {})

  def finish(self, summary: dict) -> None:
    self._bar.close()
    if not self._enabled:
      return
    self._events.close()
    path = os.path.join(self._workdir, "summary.json")
    with writing(path), open(path, "w") as f:
      json.dump({k: _json_value(v) for k, v in summary.items()}, f, indent=2)
    path = os.path.join(self._workdir, "curves.png")
    with writing(path):
      plot_curves(self.records, path, self._title)


SHOWN = ("loss", "accuracy", "perplexity")  # What a progress line or the bar shows of a record.
EVENTS = "events.out.tfevents.*"  # TensorBoard's event files, one a launch of the run.


class TensorBoardEvents:
  """A TensorBoard event file in ``workdir`` (``tensorboard --logdir`` of its parent shows every run).

  Written with tensorboardX's protocol buffers and record writer: no TensorFlow (clu's writer needs
  it) and no torch (torch's needs torch and tensorboard), pure Python over protobuf. Written in the
  calling thread and flushed with each record (tensorboardX's SummaryWriter writes from a thread of
  its own, where a full disk would be a traceback instead of the run's one-line error). A resumed
  run's file starts with a purge of the steps after its checkpoint, as its metrics.jsonl drops them.
  """

  def __init__(self, workdir: str, start_step: int):
    from tensorboardX.event_file_writer import EventsWriter  # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel

    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    # tensorboardX names the file by the second it opens it: a launch in the same second as the one
    # before (a quick resume) would overwrite that one's file, so each launch's name says which it is.
    launch = len(glob.glob(os.path.join(workdir, EVENTS)))  # The workdir is locked: no other run adds one.
    self._writer = EventsWriter(os.path.join(workdir, "events"), filename_suffix=f".{launch}")
    if start_step:
      self._writer.write_event(self._event(wall_time=time.time(), step=start_step + 1,
                                           session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._writer.flush()

  def write(self, record: dict) -> None:
    """Each number of ``record`` as a scalar ``split/name``, each per-worker list as ``split/name/worker_m``."""
    values = []
    for name, value in record.items():
      if name in ("step", "split"):
        continue
      for worker, v in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          tag = f"{record['split']}/{name}/worker_{worker}" if isinstance(value, list) else f"{record['split']}/{name}"
          values.append(self._summary.Value(tag=tag, simple_value=v))
    self._writer.write_event(self._event(wall_time=time.time(), step=record["step"], summary=self._summary(value=values)))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def plot_curves(records: list[dict], path: str, title: str = "") -> None:
  """A page-wide figure of the run: the loss (log scale) and accuracy or perplexity of every split,
  the learning rate, and those of the vote's per-worker statistics that say something (kappa of the
  ballots, kappa of the returned votes with replicated voters, non-finite coordinates where any
  were seen), two panels a row, each legend beside its panel rather than over the curves."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  (1 s at every start otherwise)

  splits = sorted({r["split"] for r in records}, key=lambda split: split != "train")
  def logged(name):
    return [r for r in records if r.get(name) is not None]

  panels = [("loss", "loss (log scale)")]
  panels += [(name, name) for name in ("accuracy", "perplexity") if logged(name)]
  panels += [("learning_rate", "learning rate")] if logged("learning_rate") else []
  per_worker = {"kappa": ("kappa: agreement with the vote beyond chance", 0.0),
                "voter_kappa": ("kappa of the votes each worker returned", 0.0),
                "nonfinite": ("non-finite coordinates (abstained)", None)}
  for name, (label, _) in per_worker.items():
    values = [v for r in records for v in r.get(name) or [] if v is not None]
    if values and (name != "nonfinite" or any(values)):  # A panel of zeros says nothing.
      panels.append((name, label))
  rows = (len(panels) + 1) // 2
  figure = Figure(figsize=(11, 2.6 * rows + 0.6), layout="constrained")
  figure.suptitle(title or "training run", fontsize="medium")
  grid = figure.subplots(rows, 2, squeeze=False).ravel()
  for axes, (name, label) in zip(grid, panels):
    if name in per_worker:
      measured = [r for r in records if name in r]
      for worker in range(max(len(r[name]) for r in measured)):  # Elastic runs change the count.
        # A statistic not measured (a worker that abstained everywhere, or absent then) is NaN.
        values = [np.nan if worker >= len(r[name]) or r[name][worker] is None else r[name][worker] for r in measured]
        axes.plot([r["step"] for r in measured], values, label=f"worker {worker}", linewidth=1)
      chance = per_worker[name][1]
      if chance is not None:
        axes.axhline(chance, color="grey", linestyle=":", linewidth=1)
    else:
      for split in splits if name != "learning_rate" else ["train"]:
        points = [r for r in logged(name) if r["split"] == split]
        axes.plot([r["step"] for r in points], [r[name] for r in points], label=split, marker="." if split != "train" else None)
      if name in ("loss", "perplexity", "learning_rate") and all(r[name] > 0 for r in logged(name)):
        axes.set_yscale("log")
    axes.set_title(label, fontsize="small")
    axes.set_xlabel("step", fontsize="small")
    axes.tick_params(labelsize="small")
    axes.grid(alpha=0.3)
    if len(axes.get_legend_handles_labels()[0]) > 1:
      axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  for axes in grid[len(panels):]:
    axes.set_visible(False)
  figure.savefig(path, dpi=100)
