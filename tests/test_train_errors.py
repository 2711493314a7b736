"""Bad configs, devices and command lines get one clear error each, before anything trains."""

import re
import subprocess
import sys

import pytest

from configs import default
from train import config_checks, train
from train.errors import ConfigError

from tests import harness


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'; valid optimizers are \('signum', 'sgd', 'adam'\)"),
        ({"strategy": "ring"}, r"unknown strategy 'ring'"),
        ({"impl": "cuda"}, r"unknown impl 'cuda'"),
        ({"dataset": "no_such_dataset"}, r"unknown dataset 'no_such_dataset'"),
        ({"model": "resnet9000"}, r"unknown model 'resnet9000'"),
        ({"eval_split": "validation"}, r"Unknown split 'validation'. Should be one of \['test', 'train'\]"),
        ({"num_workers": 16}, r"num_workers=16 needs 16 devices per process, but this process has 8"),
        ({"per_worker_batch_size": 0}, r"per_worker_batch_size=0 must be a positive integer"),
        ({"per_worker_batch_size": 400}, r"global batch of 3200 .* is larger than the 1437 training examples"),
        ({"eval_batch_size": 100}, r"eval_batch_size=100 must be a multiple of num_workers=8"),
        ({"num_steps": -1, "num_epochs": 0.0}, r"the run has no steps"),
        ({"faults.kind": "lie", "faults.num_faulty": 1}, r"unknown faults.kind 'lie'"),
        ({"faults.kind": "negate", "faults.num_faulty": 8}, r"faults.num_faulty=8 .* between 1 and 7"),
        ({"faults.kind": "negate", "faults.num_faulty": 0}, r"faults.num_faulty=0 .* between 1 and 7"),
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
        (["--config=configs/digits.py", "--config.optimizer=lamb"], "error: unknown optimizer 'lamb'; valid optimizers are ('signum', 'sgd', 'adam')."),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, args, message):
  result = subprocess.run(
      [sys.executable, "-m", "train", f"--workdir={tmp_path}", *args], cwd=harness.ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == message
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
