"""Fixtures of the trainer tests: the digits dataset, built once per session into a temporary dir."""

import pytest

from configs import default
from train import input_pipeline


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  config = default.get_config()
  config.data_dir = path
  input_pipeline.load_image_dataset(config)  # Prepares sklearn_digits offline.
  return path


@pytest.fixture
def digits_config(data_dir):
  """A short digits run on 4 workers; tests override what they exercise."""
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
