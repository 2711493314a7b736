"""WikiText builder, BPTT windows, fo-pooling and the QRNN against plain-Python references."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tests import harness
from train import input_pipeline, models, optimizers
from train.errors import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("wikitext")
  config = default.get_config()
  config.dataset, config.eval_split, config.bptt = "wikitext103", "test", 3
  config.data_dir, config.manual_dir = str(root / "data"), harness.write_tiny_wikitext(root / "text")
  return config, input_pipeline.load_dataset(config)


def _reference_ids(text, vocabulary):
  words = [w for line in text.split("\n") if line.split() for w in line.split() + ["<eos>"]]
  return [vocabulary.index(w) if w in vocabulary else vocabulary.index("<unk>") for w in words]


def test_vocabulary_and_ids_follow_the_word_level_convention(corpus):
  config, data = corpus
  train_words = [w for line in harness.TINY_TEXT["wiki.train.tokens"].split("\n") if line.split() for w in line.split() + ["<eos>"]]
  counts = collections.Counter(train_words)
  vocabulary = sorted(dict.fromkeys(train_words), key=lambda w: -counts[w]) + ["<unk>"]
  assert data.num_classes == len(vocabulary)
  np.testing.assert_array_equal(data.train.ids, _reference_ids(harness.TINY_TEXT["wiki.train.tokens"], vocabulary))
  test_ids = _reference_ids(harness.TINY_TEXT["wiki.test.tokens"], vocabulary)  # "bird" is unknown.
  np.testing.assert_array_equal(data.eval.ids, test_ids)
  assert vocabulary.index("<unk>") in test_ids


def test_windows_are_inputs_and_next_word_targets(corpus):
  _, data = corpus
  ids = data.train.ids
  assert len(data.train) == (len(ids) - 1) // 3
  for k in range(len(data.train)):
    example = data.train_example(data.train[k], np.random.default_rng(0))
    np.testing.assert_array_equal(example["inputs"], ids[3 * k : 3 * k + 3])
    np.testing.assert_array_equal(example["targets"], ids[3 * k + 1 : 3 * k + 4])
  with pytest.raises(IndexError):
    data.train[len(data.train)]


def test_missing_wikitext_files_are_one_clear_error(tmp_path):
  config = default.get_config()
  config.dataset, config.data_dir = "wikitext103", str(tmp_path / "data")
  with pytest.raises(ConfigError, match="set --config.manual_dir"):
    input_pipeline.load_dataset(config)
  config.manual_dir = str(tmp_path)
  with pytest.raises(ConfigError, match="WikiText-103 files not found"):
    input_pipeline.load_dataset(config)


def test_fo_pooling_matches_the_recurrence():
  rng = np.random.default_rng(0)
  forget, candidate, output = (rng.uniform(0, 1, size=(2, 7, 3)).astype(np.float32) for _ in range(3))
  expected, cell = np.zeros_like(forget), np.zeros((2, 3), np.float32)
  for t in range(7):
    cell = forget[:, t] * cell + (1 - forget[:, t]) * candidate[:, t]
    expected[:, t] = output[:, t] * cell
  np.testing.assert_allclose(models.fo_pool(forget, candidate, output), expected, rtol=1e-5, atol=1e-6)


def test_qrnn_is_causal_and_ties_its_decoder():
  model = models.QRNNLanguageModel(vocab_size=11, embed=4, hidden=6, num_layers=3)
  ids = jnp.asarray([[1, 2, 3, 4, 5]])
  params = model.init(jax.random.key(0), ids)["params"]
  assert set(params) == {"Embed_0", "QRNNLayer_0", "QRNNLayer_1", "QRNNLayer_2"}  # No separate decoder.
  logits = model.apply({"params": params}, ids)
  assert logits.shape == (1, 5, 11)
  changed = model.apply({"params": params}, ids.at[0, 3].set(9))
  np.testing.assert_array_equal(logits[:, :3], changed[:, :3])  # The future does not leak back.
  assert not np.allclose(logits[:, 3:], changed[:, 3:])


def test_late_phase_switches_learning_rate_and_momentum():
  config = default.get_config()
  config.learning_rate, config.b1, config.late_learning_rate, config.late_b1 = 1e-3, 0.5, 1e-4, 0.9
  config.late_from_epochs = 2.0
  schedules = optimizers.create_schedules(config, steps_per_epoch=5)
  np.testing.assert_allclose([float(schedules.b1(t)) for t in (0, 9, 10, 30)], [0.5, 0.5, 0.9, 0.9])
  np.testing.assert_allclose([float(schedules.learning_rate(t)) for t in (0, 9, 10, 30)], [1e-3, 1e-3, 1e-4, 1e-4])
  config.late_from_epochs = 0.0
  assert optimizers.create_schedules(config, steps_per_epoch=5).b1 is None
