"""Bad configs, devices and command lines get one clear error each, before anything trains."""

import re
import subprocess
import sys

import pytest

from configs import default
from signvote_jax import ops
from train import config_checks, train
from train.errors import ConfigError

from tests import harness


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'; valid optimizers are \('signum', 'lion', 'sgd', 'adam'\)"),
        ({"strategy": "ring"}, r"unknown strategy 'ring'"),
        ({"impl": "cuda"}, r"unknown impl 'cuda'"),
        pytest.param({"impl": "triton"}, r"impl='triton' needs a GPU build of jax and the jax-triton package",
                     marks=pytest.mark.skipif(ops.dispatch.triton_importable(), reason="jax-triton is installed")),
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
        ({"faults.kind": "lie", "faults.num_faulty": 1}, r"unknown faults.kind 'lie'"),
        ({"faults.num_faulty": 3}, r"faults.num_faulty=3 needs faults.kind, one of \('negate'"),
        ({"faults.kind": "negate", "faults.num_faulty": 8}, r"faults.num_faulty=8 .* between 1 and 7"),
        ({"faults.kind": "negate", "faults.num_faulty": 0}, r"faults.num_faulty=0 .* between 1 and 7"),
        ({"strategy": "alltoall", "replicas": 2}, r"replicas=2 must be an odd number from 1 to the number of workers"),
        ({"strategy": "alltoall", "replicas": 9}, r"replicas=9 needs as many voters, but the vote has 8 ballots"),
        ({"replicas": 3}, r"replicas and faults.voter_kind apply where workers vote for each other"),
        ({"faults.voter_kind": "negate", "faults.num_faulty_voters": 1},
         r"replicas and faults.voter_kind apply where workers vote for each other"),
        ({"strategy": "alltoall", "faults.voter_kind": "lie", "faults.num_faulty_voters": 1},
         r"faults: Unknown voter fault 'lie'"),
        ({"strategy": "alltoall", "faults.num_faulty_voters": 1}, r"faults.num_faulty_voters=1 needs faults.voter_kind"),
        ({"strategy": "alltoall", "faults.voter_kind": "negate", "faults.num_faulty_voters": 8},
         r"faults.num_faulty_voters=8 .* between 1 and 7"),
        ({"faults.kind": "equivocate", "faults.num_faulty": 1}, r"faults.kind='equivocate' against an allgather vote"),
        ({"optimizer": "sgd", "faults.kind": "equivocate", "faults.num_faulty": 1}, r"need a vote \(optimizer in \('signum', 'lion'\)\)"),
        ({"strategy": "hierarchical", "outer_strategy": "ring"}, r"unknown outer_strategy 'ring'"),
        ({"strategy": "hierarchical", "workers_per_host": 3}, r"workers_per_host=3 must divide num_workers=8"),
        ({"lr_decay_every_epochs": 0.01}, r"lr_decay_every_epochs=0.01 is less than one step"),
    ],
)
def test_bad_config_is_one_clear_error(data_dir, tmp_path, overrides, message):
  config = default.get_config()
  config.data_dir = data_dir
  for key, value in overrides.items():
    config_checks.set_field(config, key, value)
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()  # Refused before anything was written.


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
        (["--config=configs/digits.py", "--config.num_faulty=3"], "error: unknown config key 'num_faulty'; every field must be one of configs/default.py."),
        (["--config=configs/digits.py", "--config.faults.num_faulty=3"], "error: faults.num_faulty=3 needs faults.kind, one of ('negate', 'random', 'zero', 'nan', 'scale', 'equivocate')."),
        (["--config=configs/digits.py", "--workdir={tmp}/a_file"], "error: the workdir '{tmp}/a_file' is a file; pass a directory."),
        (["--config=configs/digits.py", "--workdir="], "error: the workdir is empty; pass --workdir=DIR, a directory for checkpoints and metrics."),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, args, message):
  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  (tmp_path / "no_get_config.py").write_text("learning_rate = 0.1\n")
  (tmp_path / "a_file").write_text("not a directory\n")
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  result = subprocess.run(
      [sys.executable, "-m", "train", f"--workdir={tmp_path / 'work'}", *args], cwd=harness.ROOT, capture_output=True,
      text=True, timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == message.replace("{tmp}", str(tmp_path))
  assert "Traceback" not in result.stderr


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
    ("a_file/below", r"cannot create the workdir '.*a_file/below'"),
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
