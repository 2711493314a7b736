"""Preemption and lost processes: SIGTERM or SIGINT stops a job after one agreed step with a
checkpoint, and the resumed run ends bit-identical to one never stopped; a process that dies or
outlives its launcher is reported in one line, never left behind."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil
import pytest

from configs import default
from train import config_checks, desk, input_pipeline, train
from train.preemption import Preempted, Preemption

from tests import harness
from tests.train.conftest import checkpointed_config

STOPPED = r"stopped by SIGTERM after step (\d+), its checkpoint saved; rerun the same command to resume\."


_STARTED = []  # Jobs of 100,000 steps this module starts: none may outlive its test.


@pytest.fixture(autouse=True)
def _stop_what_the_test_started():
  """A job left running when a test fails would take the machine's cores from every test after it."""
  yield
  started, _STARTED[:] = list(_STARTED), []
  for process in started:
    try:
      process.kill()
    except psutil.NoSuchProcess:
      pass
  psutil.wait_procs(started, timeout=30)


def command_line(config) -> list[str]:
  """``python -m train`` arguments that make ``config`` from configs/default.py."""
  defaults = config_checks.flatten(default.get_config())
  return ["--config=configs/default.py"] + [
      f"--config.{key}={value}" for key, value in config_checks.flatten(config).items() if defaults[key] != value]


def wait_for_training(workdir, process, timeout=120):
  """Until the run has written its first train line (it is past compiling and into its steps)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and process.poll() is None:
    if os.path.exists(workdir / "metrics.jsonl") and harness.lines(workdir):
      return
    time.sleep(0.05)
  raise AssertionError(f"no train line within {timeout} s (exit status {process.poll()})")


def assert_resumes_to_the_uninterrupted_state(data_dir, workdir, stopped_at, checkpointed_run):
  summary = train.train_and_evaluate(checkpointed_config(data_dir), str(workdir))
  assert summary["resumed_from_step"] == stopped_at
  whole, resumed = harness.final_state(checkpointed_run, 30), harness.final_state(workdir, 30)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_the_step_with_a_checkpoint(data_dir, tmp_path, monkeypatch, signum, checkpointed_run):
  """In one process: the signal arrives while step 13's batch is read; the run saves step 13 and stops."""
  real_batches = input_pipeline.train_batches

  def signalled_at_step_13(*args, **kwargs):
    for step, batch in enumerate(real_batches(*args, **kwargs), start=kwargs["start_step"] + 1):
      if step == 13:
        os.kill(os.getpid(), signum)
      yield batch

  monkeypatch.setattr(train.input_pipeline, "train_batches", signalled_at_step_13)
  previous = signal.getsignal(signum)
  with pytest.raises(Preempted) as stopped:
    train.train_and_evaluate(checkpointed_config(data_dir), str(tmp_path), Preemption())
  assert signal.getsignal(signum) == previous  # The handlers are the caller's again.
  assert (stopped.value.step, stopped.value.exit_status, stopped.value.saved) == (13, 128 + signum, True)
  assert [r["step"] for r in harness.lines(tmp_path) if r["split"] == "train"] == [5, 10, 13]  # Steps 11-13 kept.
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 13
  if signum == signal.SIGTERM:
    monkeypatch.setattr(train.input_pipeline, "train_batches", real_batches)
    assert_resumes_to_the_uninterrupted_state(data_dir, tmp_path, 13, checkpointed_run)


def test_sigterm_to_a_lone_process_saves_and_exits_143(data_dir, tmp_path, checkpointed_run):
  config = checkpointed_config(data_dir)
  config.num_steps = 100_000  # Still training when the signal comes; a resume may change it.
  run = subprocess.Popen([sys.executable, "-m", "train", f"--workdir={tmp_path}", *command_line(config)],
                         cwd=harness.ROOT, stderr=subprocess.PIPE, text=True)
  _STARTED.append(psutil.Process(run.pid))
  wait_for_training(tmp_path, run)
  run.send_signal(signal.SIGTERM)
  _, stderr = run.communicate(timeout=60)
  assert run.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
  stopped_at = int(re.fullmatch(STOPPED, stderr.strip().splitlines()[-1]).group(1))
  assert 5 <= stopped_at < 30
  assert_resumes_to_the_uninterrupted_state(data_dir, tmp_path, stopped_at, checkpointed_run)


def _running_job(data_dir, workdir, grace=30, train_flags=(), eval_every=None):
  """Two processes under the launcher training :func:`checkpointed_config` without end, once into
  their steps: ``(launcher, [process 0, process 1])``. ``eval_every`` (a field a resume may change,
  which leaves the trained state as it is) slows the steps down where a test needs the job to stop
  well before step 30, whatever the time a notice takes to reach every process."""
  config = checkpointed_config(data_dir)
  config.num_steps = 100_000
  config.eval_every = eval_every or config.eval_every
  launcher = subprocess.Popen(
      [sys.executable, "-m", "train.launch", "--num_processes=2", f"--grace={grace}", "--", f"--workdir={workdir}",
       *train_flags, *command_line(config)],
      cwd=harness.ROOT, stderr=subprocess.PIPE, text=True)
  _STARTED.append(psutil.Process(launcher.pid))
  parent, deadline = psutil.Process(launcher.pid), time.monotonic() + 60

  def place(worker):
    """Its process id once it runs its own program (between fork and exec it has the launcher's environment)."""
    try:
      return worker.environ().get("JAX_PROCESS_ID")
    except psutil.Error:
      return None

  while time.monotonic() < deadline and (len(parent.children()) < 2 or None in map(place, parent.children())):
    time.sleep(0.1)
  workers = sorted(parent.children(), key=place)
  _STARTED.extend(workers)
  assert len(workers) == 2 and [place(w) for w in workers] == ["0", "1"]
  wait_for_training(workdir, launcher)
  return launcher, workers


def _gone(processes, timeout):
  _, alive = psutil.wait_procs(processes, timeout=timeout)
  return not alive


def test_sigterm_to_one_worker_stops_both_at_one_step(data_dir, tmp_path):
  """The notice reaches the other process through JAX's preemption service: both save the same step.
  Before it, a stray process claiming process 1's place in the running job is refused in one line
  (process 0 says the job is running) and the job goes on: it is still there to be stopped."""
  launcher, workers = _running_job(data_dir, tmp_path / "job")
  coordinator = workers[0].environ()["JAX_COORDINATOR_ADDRESS"]
  stray = subprocess.run(
      [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path / 'stray'}",
       f"--config.data_dir={data_dir}", "--config.num_workers=2", f"--coordinator_address={coordinator}",
       "--num_processes=2", "--process_id=1"], cwd=harness.ROOT, capture_output=True, text=True, timeout=60)
  assert stray.returncode == 1 and stray.stderr.strip().splitlines()[-1] == (
      f"error: the job at {coordinator} is already running with all its 2 processes; a process cannot join a running "
      "job (JAX's coordinator would take it for a restart and end the job): give this job its own "
      "--coordinator_address port.")
  tmp_path = tmp_path / "job"
  workers[1].send_signal(signal.SIGTERM)
  _, stderr = launcher.communicate(timeout=90)
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = stderr.strip().splitlines()
  assert launcher.returncode == 143 and lines[-1] == "launch: all 2 processes exited with status 143; the job stopped"
  stopped_at = int(re.fullmatch(STOPPED, lines[-2]).group(1))  # Said once, by process 0.
  assert stopped_at in [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]


def test_workers_of_a_killed_launcher_stop_with_a_checkpoint(data_dir, tmp_path, checkpointed_run):
  """``kill -9`` of the launcher: its workers get SIGTERM (parent-death signal), stop at one step
  and save it; the run resumed in one process ends bit-identical to the uninterrupted one."""
  launcher, workers = _running_job(data_dir, tmp_path, eval_every=1)
  launcher.kill()
  launcher.wait()
  assert _gone(workers, timeout=60), "workers outlived their launcher"
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] < 30
  assert_resumes_to_the_uninterrupted_state(data_dir, tmp_path, saved[-1], checkpointed_run)


# What no process of a job may show: JAX's runtime aborting it (train/guard.py keeps it off the terminal).
JAX_ABORT = ("Terminating process", "Check failure stack trace", "stopped sending heartbeats", "Traceback")


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_is_named_in_one_line_by_the_other(data_dir, tmp_path, victim):
  """Process 0 (JAX's coordinator) or another killed: the survivor says which in one line, at once."""
  launcher, workers = _running_job(data_dir, tmp_path)
  started = time.monotonic()
  workers[victim].kill()
  _, stderr = launcher.communicate(timeout=90)
  assert time.monotonic() - started < 20  # Seconds, not a timeout.
  lines = stderr.strip().splitlines()
  assert lines[-1] == f"launch: process {victim} of 2 was killed by SIGKILL; the job stopped"
  assert launcher.returncode == 137 and not [sign for sign in JAX_ABORT if sign in stderr], stderr[-3000:]
  assert [line for line in lines if line.startswith("error: ")] == [
      f"error: process {1 - victim} of 2 lost process {victim}: {desk.CLOSED}; rerun the job to resume from its last "
      "checkpoint."], stderr[-3000:]


def test_a_stopped_process_is_named_at_the_heartbeat_timeout(data_dir, tmp_path):
  """A process that stops answering (SIGSTOP: a hung or partitioned host) is noticed after
  ``--heartbeat_timeout``, before JAX's own (which would abort with a stack dump); the survivor says
  which in one line, the launcher names the stopped process, and none is left behind."""
  launcher, workers = _running_job(data_dir, tmp_path, grace=5, train_flags=["--heartbeat_timeout=3"])
  started = time.monotonic()
  workers[1].suspend()
  _, stderr = launcher.communicate(timeout=120)
  assert time.monotonic() - started < 30  # The heartbeat timeout (3 s) and the grace (5 s).
  lines = stderr.strip().splitlines()
  assert lines[-1] == "launch: process 1 of 2 is stopped (SIGSTOP), killed; the job stopped", stderr[-3000:]
  assert not [sign for sign in JAX_ABORT if sign in stderr], stderr[-3000:]
  assert [line for line in lines if line.startswith("error: ")] == [
      f"error: process 0 of 2 lost process 1: {desk.silent(3)}; rerun the job to resume from its last checkpoint."]
  assert _gone(workers, timeout=10)
