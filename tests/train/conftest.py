"""Fixtures of the trainer tests: the digits dataset, built once per session into a temporary dir,
and the runs that several tests start from, trained once per session (tests copy them)."""

import shutil

import pytest

from configs import default, digits
from train import input_pipeline


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  config = default.get_config()
  config.data_dir = path
  input_pipeline.load_image_dataset(config)  # Prepares sklearn_digits offline.
  return path


def _digits_config(data_dir):
  config = default.get_config()
  config.data_dir = data_dir
  config.learning_rate = 3e-3
  config.num_workers = 4
  config.per_worker_batch_size = 16
  config.num_steps = 30
  config.log_every = 5
  config.eval_every = 15
  config.checkpoint_every = 15
  config.eval_batch_size = 128
  config.progress_bar = False
  config.num_data_threads = 2
  return config


@pytest.fixture
def digits_config(data_dir):
  """A short digits run on 4 workers; tests override what they exercise."""
  return _digits_config(data_dir)


def checkpointed_config(data_dir):
  """:func:`digits_config` for 30 steps with a checkpoint every 10, all three kept."""
  config = _digits_config(data_dir)
  config.num_steps, config.checkpoint_every, config.checkpoints_to_keep = 30, 10, 3
  return config


@pytest.fixture(scope="session")
def checkpointed_run(data_dir, tmp_path_factory):
  """The workdir of :func:`checkpointed_config`'s finished run, trained once; copy it before changing it."""
  from train import train  # pylint: disable=import-outside-toplevel

  workdir = tmp_path_factory.mktemp("checkpointed_run")
  train.train_and_evaluate(checkpointed_config(data_dir), str(workdir))
  return workdir


@pytest.fixture
def checkpointed_workdir(checkpointed_run, tmp_path):
  """A copy of :func:`checkpointed_run`'s workdir that the test may change."""
  workdir = tmp_path / "run"
  shutil.copytree(checkpointed_run, workdir)
  return workdir


@pytest.fixture(scope="session")
def main_run(data_dir, tmp_path_factory):
  """``configs/digits.py`` as shipped (the README's main job, only the data dir moved), run once:
  ``(config, summary, workdir)``."""
  from train import train  # pylint: disable=import-outside-toplevel

  config = digits.get_config()
  config.data_dir, config.progress_bar = data_dir, False
  workdir = tmp_path_factory.mktemp("main_run")
  return config, train.train_and_evaluate(config, str(workdir)), workdir
