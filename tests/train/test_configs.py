"""Every config in configs/ runs: the paper's on mock data with small sizes, two steps on the CPU."""

import importlib
import re
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from tests import harness
from train import config_checks, optimizers, train

# Size overrides that keep each model small enough for a CPU test; everything else as configured.
PAPER = {
    "resnet50_imagenet_signum": {"width": 2, "image_size": 32},
    "resnet50_imagenet_sgd": {"width": 2, "image_size": 32},
    "resnet50_imagenet_adversary": {"width": 2, "image_size": 32, "num_workers": 3, "faults.num_faulty": 1},
    "alexnet_imagenet_signum": {"width": 4, "image_size": 64},
    "resnet18_cifar10_signum": {"width": 4},
    "resnet18_cifar10_sgd": {"width": 4},
    "qrnn_wikitext103_signum": {"width": 8, "qrnn_hidden": 16, "bptt": 6},
    "qrnn_wikitext103_adam": {"width": 8, "qrnn_hidden": 16, "bptt": 6},
}
BASELINES = {  # config -> (its baseline, the only fields that may differ)
    "resnet50_imagenet_sgd": ("resnet50_imagenet_signum", {"optimizer", "learning_rate"}),
    "resnet18_cifar10_sgd": ("resnet18_cifar10_signum", {"optimizer", "learning_rate"}),
    "resnet50_imagenet_adversary": ("resnet50_imagenet_signum", {"weight_decay", "faults.kind", "faults.num_faulty"}),
    "qrnn_wikitext103_adam": ("qrnn_wikitext103_signum", {"optimizer", "b1"}),
}


def _get(name):
  return importlib.import_module(f"configs.{name}").get_config()


def test_every_config_file_is_tested():
  names = {f[:-3] for f in os.listdir(os.path.join(harness.ROOT, "configs")) if f.endswith(".py")}
  # digits: tests/train/test_train.py; digits_wide: below.
  assert names - {"__init__", "default"} == set(PAPER) | {"digits", "digits_wide"}


def test_digits_wide_is_digits_with_10_to_30_million_parameters():
  """The communication-heavy workload: digits.py's recipe, only the model wider."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from train import models  # pylint: disable=import-outside-toplevel

  here, there = config_checks.flatten(_get("digits_wide")), config_checks.flatten(_get("digits"))
  assert {k for k in here if here[k] != there[k]} == {"model", "width"}
  model = models.create_model(_get("digits_wide"), 10)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert count == 64 * 3200 + 3200 * 3200 + 3200 * 10 + 2 * 3200 + 10 and 10e6 <= count <= 30e6


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_runs_two_steps_on_mock_data(name, tmp_path):
  config = _get(name)
  config_checks.check_keys(config)
  workers = PAPER[name].get("num_workers", 2)
  small = {"num_workers": workers, "per_worker_batch_size": 2, "eval_batch_size": 2 * workers, "num_steps": 2,
           "log_every": 1, "eval_every": 2, "checkpoint_every": 2, "num_data_threads": 1,
           "data_dir": str(tmp_path / "data"), "progress_bar": False}
  config.update_from_flattened_dict({**small, **PAPER[name]})
  if config.dataset == "wikitext103":
    config.manual_dir = harness.write_tiny_wikitext(tmp_path / "wikitext")
    summary = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert summary["test_perplexity"] > 1
  else:
    with tfds.testing.mock_data(num_examples=4 * workers):
      summary = train.train_and_evaluate(config, str(tmp_path / "work"))
  assert summary["steps"] == 2 and summary["test_accuracy"] is not None
  assert [r["step"] for r in harness.lines(tmp_path / "work") if r["split"] == "train"] == [1, 2]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_differs_only_in_the_optimizer(name):
  base, allowed = BASELINES[name]
  here, there = config_checks.flatten(_get(name)), config_checks.flatten(_get(base))
  assert {k for k in here if here[k] != there[k]} == allowed


def test_imagenet_configs_train_with_the_papers_recipe():
  """Bernstein et al. (2019), ResNet-50 on ImageNet: 7 workers of 128 images, learning rate 1e-4
  warmed up linearly over 5 epochs and divided by 10 every 30, 80 epochs; read from the schedule
  and the step count the trainer builds from the config (10 steps an epoch here)."""
  config = _get("resnet50_imagenet_signum")
  learning_rate = optimizers.create_schedules(config, steps_per_epoch=10).learning_rate
  steps = [0, 24, 49, 299, 300, 599, 600]
  np.testing.assert_allclose([float(learning_rate(t)) for t in steps], [2e-6, 5e-5, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6],
                             rtol=1e-5)
  assert config.num_workers * config.per_worker_batch_size == 7 * 128 and config.num_epochs * 10 == 800
  assert (config.optimizer, config.b1, config.weight_decay) == ("signum", 0.9, 1e-4)
  assert _get("alexnet_imagenet_signum").per_worker_batch_size == 64
  assert set(config_checks.flatten(config)) == set(config_checks.flatten(default.get_config()))


@pytest.mark.parametrize("name", ["slurm.sbatch", "kubernetes_job.yaml"])
def test_cluster_examples_set_fields_and_configs_that_exist(name):
  """The cluster examples' `python -m train` command names a config file and fields that exist."""
  text = open(os.path.join(harness.ROOT, "examples", name)).read()
  assert "python -m train" in text
  configs = re.findall(r"--config=(configs/\w+\.py)", text)
  fields = set(re.findall(r"--config\.([\w.]+)=", text))
  assert configs and all(os.path.exists(os.path.join(harness.ROOT, c)) for c in configs)
  assert fields and fields <= set(config_checks.flatten(default.get_config())), fields


def test_show_config_lists_every_field_with_its_meaning_and_value():
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  done = subprocess.run([sys.executable, "-m", "train", "--config=configs/digits.py", "--show_config",
                         "--config.vote.replicas=3"], cwd=harness.ROOT, capture_output=True, text=True, timeout=60, check=False)
  assert done.returncode == 0, done.stderr
  lines = {line.split(" = ")[0]: line for line in done.stdout.splitlines()}
  assert set(lines) == set(config_checks.flatten(default.get_config()))
  assert re.fullmatch(r"vote\.replicas = 3 +# Voters of each alltoall shard .* \(default: 1\)", lines["vote.replicas"])
  assert re.fullmatch(r"learning_rate = 0\.003 +# The paper's default for Signum\. \(default: 0\.0001\)", lines["learning_rate"])
  assert all("#" in line for line in lines.values())  # Every field has a comment in default.py.
