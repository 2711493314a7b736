"""What a run shows and leaves for reading: TensorBoard events, progress lines in a log, curves.png."""

import math
import subprocess
import sys

import numpy as np
import pytest

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


def test_progress_in_a_log_file_is_one_line_a_record(data_dir, tmp_path):
  """stderr redirected to a file: no bar and no carriage returns, a line per logged record and one
  around each checkpoint's save."""
  log = tmp_path / "log"
  with open(log, "w") as stderr:
    done = subprocess.run(
        [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path / 'run'}",
         f"--config.data_dir={data_dir}", "--config.num_workers=2", "--config.num_steps=20", "--config.log_every=5",
         "--config.eval_every=10", "--config.checkpoint_every=10"],
        cwd=harness.ROOT, stderr=stderr, stdout=subprocess.PIPE, text=True, timeout=300, check=False)
  text = log.read_text()
  assert done.returncode == 0, text[-3000:]
  assert "\r" not in text
  lines = text.splitlines()
  train = [l for l in lines if l.startswith("step ") and " train: loss " in l]
  assert [l.split()[1] for l in train] == ["5/20", "10/20", "15/20", "20/20"]
  assert all(l.endswith("steps/s)") for l in train)
  assert sum(" test: loss " in l for l in lines) == 2
  assert "step 10: saving a checkpoint" in lines and any(l.startswith("step 20: checkpoint saved in ") for l in lines)


def test_curves_fit_a_page(main_run):
  image = pytest.importorskip("matplotlib.image").imread(main_run[2] / "curves.png")
  height, width = image.shape[:2]
  assert width == 1100 and height <= 1000  # 11 inches at 100 dpi: two panels a row.
