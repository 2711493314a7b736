"""Multi-process training: 2 local processes x 2 devices (gloo over 127.0.0.1) equal 1 process x 4."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil

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
  first = [harness.lines(tmp_path / run, timed=True)[0] for run in ("two", "one")]
  assert first[0]["wire_bytes_per_host"] > 0 == first[1]["wire_bytes_per_host"]  # One host sends nothing over a network.
  for a, b in zip(jax.tree.leaves(harness.final_state(tmp_path / "two", 20)), jax.tree.leaves(harness.final_state(tmp_path / "one", 20))):
    np.testing.assert_array_equal(a, b)


def test_sigterm_stops_every_worker(data_dir, tmp_path):
  """SIGTERM to the launcher reaches its workers: none is alive after it exits, with status 143."""
  launcher = subprocess.Popen(
      [sys.executable, "-m", "train.launch", "--num_processes=2", "--grace=20", "--",
       "--config=configs/digits.py", f"--workdir={tmp_path}", f"--config.data_dir={data_dir}",
       "--config.num_workers=2", "--config.num_steps=100000", "--config.progress_bar=False"],
      cwd=harness.ROOT, stderr=subprocess.PIPE, text=True,
  )
  parent = psutil.Process(launcher.pid)
  deadline = time.monotonic() + 60
  try:
    while len(parent.children()) < 2 and time.monotonic() < deadline:
      time.sleep(0.2)
    workers = parent.children()
    assert len(workers) == 2
    time.sleep(2)  # Well into their start-up.
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=60)
  finally:  # Never leave a job of 100,000 steps behind to slow every test after this one.
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()
  assert launcher.returncode == 143, stderr[-2000:]
  assert "SIGTERM forwarded to the workers" in stderr
  assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


def test_a_slurm_job_runs_as_one_job(data_dir, tmp_path):
  """With SLURM's variables set (as srun sets them for each task) and no flags, JAX's cluster
  detection puts the two processes in one job: one summary of 2 processes, not two runs of one.
  Its progress, in a log (stderr not a terminal), is one line a logged record and a line around each
  checkpoint's save, with no bar's carriage returns."""
  from train import launch  # pylint: disable=import-outside-toplevel

  port = launch.free_port()
  command = [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path}",
             f"--config.data_dir={data_dir}", "--config.num_workers=2", "--config.num_steps=4",
             "--config.log_every=2", "--config.eval_every=4", "--config.checkpoint_every=2"]
  slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
           "JAX_COORDINATOR_PORT": str(port)}
  tasks = [subprocess.Popen(command, cwd=harness.ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)})
           for i in range(2)]
  try:
    errors = [task.communicate(timeout=300)[1] for task in tasks]
  finally:
    for task in tasks:
      if task.poll() is None:
        task.kill()
        task.wait()
  assert [task.returncode for task in tasks] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
  assert f"process 1 of 2: joining the job at localhost:{port}, detected from slurm" in errors[1]
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert summary["num_processes"] == 2 and len(summary["devices"]) == 2 and summary["steps"] == 4
  lines = errors[0].splitlines()  # Process 0's: it speaks for the job.
  assert "\r" not in errors[0] and not any(l.startswith("step ") for l in errors[1].splitlines())
  train = [l for l in lines if l.startswith("step ") and " train: loss " in l]
  assert [l.split()[1] for l in train] == ["2/4", "4/4"] and all(l.endswith("steps/s)") for l in train)
  assert sum(l.startswith("step 4/4 test: loss ") for l in lines) == 1
  assert "step 2: saving a checkpoint" in lines and any(l.startswith("step 4: checkpoint saved in ") for l in lines)
