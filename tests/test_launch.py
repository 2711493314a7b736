"""Multi-process training: 2 local processes x 2 devices (gloo over 127.0.0.1) equal 1 process x 4."""

import json
import subprocess
import sys

import jax
import numpy as np

from tests import harness
from train import train


def test_two_processes_train_exactly_like_one(digits_config, tmp_path):
  digits_config.num_steps = 20
  overrides = [f"--config.{k}={v}" for k, v in digits_config.items() if k in (
      "data_dir", "learning_rate", "num_workers", "per_worker_batch_size", "num_steps", "log_every",
      "eval_every", "checkpoint_every", "eval_batch_size", "progress_bar", "num_data_threads")]
  result = subprocess.run(
      [sys.executable, "-m", "train.launch", "--num_processes=2", "--timeout=300", "--",
       "--config=configs/default.py", f"--workdir={tmp_path / 'two'}", *overrides],
      cwd=harness.ROOT, capture_output=True, text=True, timeout=360,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = train.train_and_evaluate(digits_config, str(tmp_path / "one"))

  with open(tmp_path / "two" / "summary.json") as f:
    two = json.load(f)
  assert two["num_processes"] == 2 and len(two["devices"]) == 4 and summary["num_processes"] == 1
  assert harness.lines(tmp_path / "two") == harness.lines(tmp_path / "one")  # Losses, accuracies, votes: all equal.
  for a, b in zip(jax.tree.leaves(harness.final_state(tmp_path / "two", 20)), jax.tree.leaves(harness.final_state(tmp_path / "one", 20))):
    np.testing.assert_array_equal(a, b)
