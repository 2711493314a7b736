"""Bad configs, devices and command lines get one clear error each, before anything trains."""

import errno
import fcntl
import os
import re
import socket
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

from configs import default
from signvote_jax import ops
from train import config_checks, reporting, train
from train.errors import ConfigError, StorageError

from tests import harness


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'; valid optimizers are \('signum', 'lion', 'sgd', 'adam'\)"),
        ({"vote.strategy": "ring"}, r"config.vote: Unknown strategy 'ring'; valid strategies are \('allgather'"),
        ({"vote.impl": "cuda"}, r"config.vote: impl='cuda' is not one of \('auto', 'jax', 'triton'\)"),
        pytest.param({"vote.impl": "triton"}, r"config.vote: impl='triton' needs a GPU build of jax and the jax-triton package",
                     marks=pytest.mark.skipif(ops.triton_importable(), reason="jax-triton is installed")),
        ({"dataset": "no_such_dataset"}, r"unknown dataset 'no_such_dataset'"),
        ({"model": "resnet9000"}, r"unknown model 'resnet9000'"),
        ({"eval_split": "validation"}, r"Unknown split 'validation'. Should be one of \['test', 'train'\]"),
        ({"num_workers": 16}, r"num_workers=16 needs 16 devices per process, but this process has 8"),
        ({"per_worker_batch_size": 0}, r"per_worker_batch_size=0 must be a positive integer"),
        ({"eval_batch_size": 0}, r"eval_batch_size=0 must be a positive integer"),
        ({"checkpoint_every": -1}, r"checkpoint_every=-1 must be a positive integer, or 0 for no checkpoints"),
        ({"learning_rate": 0.0}, r"learning_rate=0.0 must be > 0"),
        ({"learning_rate": -0.1}, r"learning_rate=-0.1 must be > 0"),
        ({"b1": 1.5}, r"b1=1.5 must be in \[0, 1\)"),
        ({"optimizer": "adam", "b1": 1.5}, r"b1=1.5 must be in \[0, 1\)"),
        ({"b2": 1.0}, r"b2=1.0 must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, r"weight_decay=-0.0001 must be >= 0"),
        ({"late_from_epochs": 1.0, "late_b1": 1.5}, r"late_b1=1.5 must be in \[0, 1\)"),
        ({"late_from_epochs": 1.0, "late_learning_rate": 0.0}, r"late_learning_rate=0.0 must be > 0"),
        ({"per_worker_batch_size": 400}, r"global batch of 3200 .* is larger than the 1437 training examples"),
        ({"num_steps": -1, "num_epochs": 0.0}, r"the run has no steps"),
        ({"faults.kind": "lie", "faults.num_faulty": 1}, r"config.faults: Unknown fault kind 'lie'; valid kinds are"),
        ({"faults.num_faulty": 3}, r"faults.num_faulty=3 needs faults.kind, one of \('negate'"),
        ({"faults.kind": "negate", "faults.num_faulty": 8}, r"faults.num_faulty=8 .* between 1 and 7"),
        ({"faults.kind": "negate", "faults.num_faulty": 0}, r"faults.num_faulty=0 .* between 1 and 7"),
        ({"vote.strategy": "alltoall", "vote.replicas": 2}, r"config.vote: replicas must be an odd number from 1 to "),
        ({"vote.strategy": "alltoall", "vote.replicas": 9}, r"replicas=9 needs as many voters, but axis \('workers',\) has 8"),
        ({"vote.replicas": 3}, r"config.vote: replicas and voter_fault apply where workers vote for each other"),
        ({"faults.voter_kind": "negate", "faults.num_faulty_voters": 1},
         r"config.vote with faults.voter_kind: replicas and voter_fault apply where workers vote for each other"),
        ({"vote.strategy": "alltoall", "faults.voter_kind": "lie", "faults.num_faulty_voters": 1},
         r"config.faults: Unknown voter fault 'lie'"),
        ({"vote.strategy": "alltoall", "faults.num_faulty_voters": 1}, r"faults.num_faulty_voters=1 needs faults.voter_kind"),
        ({"vote.strategy": "alltoall", "faults.voter_kind": "negate", "faults.num_faulty_voters": 8},
         r"faults.num_faulty_voters=8 .* between 1 and 7"),
        ({"faults.kind": "equivocate", "faults.num_faulty": 1}, r"faults.kind='equivocate' against an allgather vote"),
        ({"optimizer": "sgd", "faults.kind": "equivocate", "faults.num_faulty": 1}, r"need a vote \(optimizer in \('signum', 'lion'\)\)"),
        ({"vote.strategy": "hierarchical", "vote.outer_strategy": "ring"}, r"config.vote: Unknown outer_strategy 'ring'"),
        ({"vote.outer_strategy": "alltoall"}, r"config.vote: outer_strategy is the vote across hosts of strategy='hierarchical'"),
        ({"optimizer": "adam", "vote.strategy": "alltoall"}, r"config.vote \(strategy\), faults.voter_kind .* need a vote"),
        ({"vote.strategy": "hierarchical", "workers_per_host": 3}, r"workers_per_host=3 must divide num_workers=8"),
        ({"lr_decay_every_epochs": 0.01}, r"lr_decay_every_epochs=0.01 is less than one step"),
        ({"seed": -1}, r"seed=-1 must be in \[0, 2\*\*31\)"),
        ({"seed": 2**32}, r"seed=4294967296 must be in \[0, 2\*\*31\)"),
        ({"width": 0}, r"width=0 must be a positive integer"),
        ({"num_data_threads": 1000}, r"num_data_threads=1000 is more than 64"),
        ({"dropout_rate": 1.0}, r"dropout_rate=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_config_is_one_clear_error(data_dir, tmp_path, overrides, message):
  config = default.get_config()
  config.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # Refused before anything was written: no empty workdir left.


def test_unknown_key_in_a_config_object_is_refused(data_dir, tmp_path):
  config = default.get_config()
  config.learning_rat = 0.1
  with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rat'\]"):
    train.train_and_evaluate(config, str(tmp_path))


def test_workers_must_spread_evenly_over_processes():
  config = default.get_config()
  config.num_workers = 8
  with pytest.raises(ConfigError, match=r"num_workers=8 does not spread evenly over 3 processes"):
    config_checks.check_devices(config, process_count=3, local_device_count=8)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/digits.py", "--config.nope=1"], "error: unknown config key 'nope'; every field must be one of configs/default.py."),
        (["--config=configs/digits.py", "--config.num_steps=ten"], "error: flag --config.num_steps=ten: invalid literal for int() with base 10: 'ten'"),
        (["--config=configs/missing.py"], "error: cannot load the config file 'configs/missing.py'; pass --config=configs/<name>.py from the repository root."),
        (["--config=configs/missing.py", "--config.num_steps=3"], "error: cannot load the config file 'configs/missing.py'; pass --config=configs/<name>.py from the repository root."),
        (["--config={tmp}/syntax.py"], "error: the config file '{tmp}/syntax.py' has a syntax error at line 1: invalid syntax."),
        (["--config={tmp}/no_get_config.py", "--config.num_steps=3"], "error: the config file '{tmp}/no_get_config.py' has no get_config(); a config defines get_config() returning an ml_collections.ConfigDict (see configs/default.py)."),
        (["--config=configs/digits.py", "--config.optimizer=lamb"], "error: unknown optimizer 'lamb'; valid optimizers are ('signum', 'lion', 'sgd', 'adam')."),
        (["--config=configs/digits.py", "--config.b1=1.5"], "error: b1=1.5 must be in [0, 1)."),
        (["--config=configs/digits.py", "--config.weight_decay=-0.1"], "error: weight_decay=-0.1 must be >= 0."),
        (["--config=configs/digits.py", "--config.learning_rate=0.0"], "error: learning_rate=0.0 must be > 0."),
        (["--config=configs/digits.py", "--config.num_faulty=3"], "error: unknown config key 'num_faulty' (did you mean 'faults.num_faulty'?); every field must be one of configs/default.py."),
        (["--config=configs/digits.py", "--config.strategy=alltoall"], "error: unknown config key 'strategy' (did you mean 'vote.strategy'?); every field must be one of configs/default.py."),
        (["--config=configs/digits.py", "--config.vote.strategy=alltoall", "--config.vote.replicas=9"],
         "error: config.vote: replicas=9 needs as many voters, but axis ('workers',) has 8; use an odd number from 1 to 8."),
        (["--config=configs/digits.py", "--config.faults.num_faulty=3"], "error: faults.num_faulty=3 needs faults.kind, one of ('negate', 'random', 'zero', 'nan', 'scale', 'equivocate')."),
        (["--config=configs/digits.py", "--workdir={tmp}/a_file"], "error: the workdir '{tmp}/a_file' is a file; pass a directory."),
        (["--config=configs/digits.py", "--workdir="], "error: the workdir is empty; pass --workdir=DIR, a directory for checkpoints and metrics."),
        (["--config=configs/digits.py", "--config.lerning_rate=0.1"], "error: unknown config key 'lerning_rate' (did you mean 'learning_rate'?); every field must be one of configs/default.py."),
        (["--config=configs/digits.py", "--config.faults.kin=negate"], "error: unknown config key 'faults.kin' (did you mean 'faults.kind'?); every field must be one of configs/default.py."),
        (["--config={tmp}/raises.py"], "error: get_config() of the config file '{tmp}/raises.py' raised RuntimeError: no cluster here."),
        (["--config={tmp}/imports.py"], "error: the config file '{tmp}/imports.py' raised ModuleNotFoundError when loaded: No module named 'not_a_module'."),
        (["--config={tmp}/a_dict.py"], "error: get_config() of the config file '{tmp}/a_dict.py' returned a dict, not an ml_collections.ConfigDict (see configs/default.py)."),
        (["--config=configs/digits.py:small"], "error: get_config('small') of the config file 'configs/digits.py' raised TypeError: get_config() takes 0 positional arguments but 1 was given."),
        (["--config=configs/digits.py", "--config.seed=-1"], "error: seed=-1 must be in [0, 2**31): it seeds numpy, grain and jax alike."),
        (["--config=configs/digits.py", "--num_processes=2", "--process_id=5", "--coordinator_address=127.0.0.1:1"], "error: --process_id=5 must be in [0, 2) for a job of --num_processes=2."),
        (["--config=configs/digits.py", "--num_processes=2", "--process_id=1"], "error: a job of 2 processes needs --coordinator_address=HOST:PORT: process 0's host and a free port, the same for every process."),
        (["--config=configs/digits.py", "--num_processes=2", "--process_id=1", "--coordinator_address=not_an_address"], "error: --coordinator_address='not_an_address' must be HOST:PORT, the address of process 0."),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, args, message):
  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  (tmp_path / "no_get_config.py").write_text("learning_rate = 0.1\n")
  (tmp_path / "raises.py").write_text("def get_config():\n  raise RuntimeError('no cluster here')\n")
  (tmp_path / "imports.py").write_text("import not_a_module\n\ndef get_config():\n  return None\n")
  (tmp_path / "a_dict.py").write_text("def get_config():\n  return {'learning_rate': 0.1}\n")
  (tmp_path / "a_file").write_text("not a directory\n")
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  result = subprocess.run(
      [sys.executable, "-m", "train", f"--workdir={tmp_path / 'work'}", *args], cwd=harness.ROOT, capture_output=True,
      text=True, timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == message.replace("{tmp}", str(tmp_path))
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "work").exists()  # Nothing left behind.


def test_diverging_run_ends_with_one_line_naming_the_step(tmp_path, data_dir):
  result = subprocess.run(
      [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path}",
       f"--config.data_dir={data_dir}", "--config.optimizer=sgd", "--config.learning_rate=1e30",
       "--config.num_workers=2", "--config.num_steps=20", "--config.progress_bar=False"],
      cwd=harness.ROOT, capture_output=True, text=True, timeout=120,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert re.fullmatch(r"error: non-finite parameters at step \d+; .*", result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("workdir, message", [
    ("", r"the workdir is empty; pass --workdir=DIR"),
    ("a_file", r"the workdir '.*a_file' is a file; pass a directory"),
    ("a_file/below", r"cannot create the workdir '.*a_file/below': '.*a_file' is not a directory you can write"),
])
def test_a_bad_workdir_is_one_clear_error(tmp_path, workdir, message):
  (tmp_path / "a_file").write_text("not a directory\n")
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(default.get_config(), str(tmp_path / workdir) if workdir else "")


def test_a_torn_last_metrics_line_does_not_block_resuming(digits_config, tmp_path):
  digits_config.num_steps, digits_config.checkpoint_every = 20, 10
  train.train_and_evaluate(digits_config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 21, "split": "tr')  # What a run killed mid-write leaves.
  digits_config.num_steps = 30
  summary = train.train_and_evaluate(digits_config, str(tmp_path))
  assert summary["resumed_from_step"] == 20 and summary["steps_trained"] == 10
  assert [r["step"] for r in harness.lines(tmp_path) if r["split"] == "train"] == [5, 10, 15, 20, 25, 30]


def test_a_lone_process_gives_up_waiting_for_its_peers_in_one_line(tmp_path):
  from train import launch  # pylint: disable=import-outside-toplevel

  result = subprocess.run(
      [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path}",
       f"--coordinator_address=127.0.0.1:{launch.free_port()}", "--num_processes=2", "--process_id=0",
       "--join_timeout=5", "--config.num_workers=2"],
      cwd=harness.ROOT, capture_output=True, text=True, timeout=120,
  )
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "process 0 of 2: joining the job at 127.0.0.1:" in result.stderr
  assert re.fullmatch(r"error: process 0 of 2 could not join the job at 127\.0\.0\.1:\d+ within 5 s; .*", lines[-1])


@pytest.mark.parametrize("entry, make, message", [
    ("checkpoints", "file", r"'.*/checkpoints' is a file where the run keeps its checkpoints; move it away"),
    ("metrics.jsonl", "folder", r"'.*/metrics.jsonl' is a directory where the run writes a file; move it away"),
    ("config.json", "garbage", r"the workdir's '.*/config.json' is unreadable \(JSONDecodeError\); it records the config"),
])
def test_what_is_in_the_way_in_a_workdir_is_one_line_before_anything_is_written(digits_config, tmp_path, entry, make,
                                                                                 message):
  if make == "folder":
    (tmp_path / entry).mkdir()
  else:
    (tmp_path / entry).write_text("not what the run writes\n")
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(digits_config, str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([entry, "lock"])


def test_a_workdir_in_use_is_refused_naming_its_holder(digits_config, tmp_path):
  with open(tmp_path / "lock", "w") as held:
    held.write("pid 4242 on trainer-7, since 2026-12-04 09:00:00\n")
    held.flush()
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(ConfigError, match=r"the workdir '.*' is in use by another run \(pid 4242 on trainer-7, since "
                                          r"2026-12-04 09:00:00\); wait for it to end, stop it, or pass another"):
      train.train_and_evaluate(digits_config, str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]
  digits_config.num_steps = 5  # Released (as the kernel does when its holder dies): the run goes ahead.
  assert train.train_and_evaluate(digits_config, str(tmp_path))["steps"] == 5
  assert "pid" in (tmp_path / "lock").read_text()


def test_a_coordinator_port_in_use_is_refused_before_joining(tmp_path):
  """A stray process 0 on a running job's port is refused, instead of joining (and aborting) that job."""
  with socket.socket() as job:
    job.bind(("127.0.0.1", 0))
    job.listen()
    port = job.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "train", "--config=configs/digits.py", f"--workdir={tmp_path / 'work'}",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=0", "--config.num_workers=2"],
        cwd=harness.ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert re.fullmatch(rf"error: the coordinator's port {port} is in use on this host \(Address already in use\), "
                      r"by another job or program; .*", result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("target", ["metrics.jsonl", "events", "checkpoint"])
def test_a_full_disk_is_one_line_and_what_was_written_stays(digits_config, tmp_path, monkeypatch, target):
  digits_config.num_steps, digits_config.checkpoint_every = 20, 10
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  if target == "metrics.jsonl":
    real_open = open

    def open_until_step_15(path, mode="r", *args, **kwargs):
      if str(path).endswith("metrics.jsonl") and "a" in mode and len(harness.lines(tmp_path)) >= 4:
        raise full
      return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(reporting, "open", open_until_step_15, raising=False)
    expected = rf"cannot write '{tmp_path}/metrics.jsonl': No space left on device; what the run wrote before is intact"
  elif target == "events":
    from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel

    real_write = event_file_writer.EventsWriter.write_event

    def write_until_step_15(writer, event):
      if event.step >= 15:
        raise full
      return real_write(writer, event)

    monkeypatch.setattr(event_file_writer.EventsWriter, "write_event", write_until_step_15)
    expected = (rf"cannot write '{tmp_path}/events.out.tfevents.\*': No space left on device; what the run wrote "
                "before is intact")
  else:
    real_save = ocp.CheckpointManager.save

    def save_until_step_20(manager, step, *args, **kwargs):
      if step == 20:
        raise RuntimeError("a write failed") from full
      return real_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_step_20)
    expected = (rf"cannot save the checkpoint of step 20 in {tmp_path}/checkpoints: No space left on device; the "
                "checkpoints before it are intact")
  with pytest.raises(StorageError, match=expected):
    train.train_and_evaluate(digits_config, str(tmp_path))
  monkeypatch.undo()
  written = harness.lines(tmp_path)
  summary = train.train_and_evaluate(digits_config, str(tmp_path))  # Room again: it resumes.
  assert summary["resumed_from_step"] == 10 and summary["steps"] == 20
  assert harness.lines(tmp_path)[: len([r for r in written if r["step"] <= 10])] == [r for r in written if r["step"] <= 10]


def test_a_missing_workdir_is_one_line():
  result = subprocess.run([sys.executable, "-m", "train", "--config=configs/digits.py"], cwd=harness.ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 1 and result.stderr.strip() == (
      "error: pass --workdir=DIR, a directory for checkpoints and metrics (or --show_config to list the config).")
