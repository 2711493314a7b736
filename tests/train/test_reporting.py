"""What a run leaves for reading: TensorBoard events and curves.png (its progress lines in a log:
tests/train/test_launch.py)."""

import math

import numpy as np
import pytest

from train import reporting

from tests import harness


def test_every_metric_is_a_tensorboard_scalar(main_run):
  """Each number of metrics.jsonl, per split and per worker, is in the events at its step."""
  _, _, workdir = main_run
  found = harness.tensorboard_scalars(workdir)
  expected = {}
  for record in harness.lines(workdir, timed=True):
    for name, value in record.items():
      if name in ("step", "split"):
        continue
      for worker, v in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
          tag = f"{record['split']}/{name}/worker_{worker}" if isinstance(value, list) else f"{record['split']}/{name}"
          expected[(tag, record["step"])] = np.float32(v)
  assert ("train/loss", 10) in expected and ("test/accuracy", 300) in expected and ("train/kappa/worker_7", 300) in expected
  missing = sorted(set(expected) - set(found))
  assert not missing, missing[:5]
  assert all(found[key] == value for key, value in expected.items())


def test_a_resume_in_the_same_second_keeps_the_first_launch_events(tmp_path, monkeypatch):
  """tensorboardX names an event file by the second it is opened: a second launch must not overwrite the first's."""
  monkeypatch.setattr("time.time", lambda: 1_800_000_000.0)
  for start_step in (0, 20):
    events = reporting.TensorBoardEvents(str(tmp_path), start_step)
    events.write({"step": start_step + 5, "split": "train", "loss": 0.5})
    events.close()
  assert {step for (_, step) in harness.tensorboard_scalars(tmp_path)} == {5, 25}


def test_curves_fit_a_page(main_run):
  image = pytest.importorskip("matplotlib.image").imread(main_run[2] / "curves.png")
  height, width = image.shape[:2]
  assert width == 1100 and height <= 1000  # 11 inches at 100 dpi: two panels a row.
