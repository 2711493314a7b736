"""The digits builder against scikit-learn's arrays, and grain batching, sharding and resuming."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from configs import default
from train import augment, input_pipeline, optimizers
from train.errors import ConfigError


@pytest.fixture(scope="module")
def digits(data_dir):
  config = default.get_config()
  config.data_dir = data_dir
  return input_pipeline.load_image_dataset(config)


def _records(source):
  return [source[i] for i in range(len(source))]


def test_digits_splits_hold_each_sklearn_image_once(digits):
  reference = load_digits()
  train, test = _records(digits.train), _records(digits.eval)
  assert (len(train), len(test), digits.num_classes, digits.input_shape) == (1437, 360, 10, (8, 8, 1))

  def key(image, label):
    return image.astype(np.uint8).tobytes() + bytes([label])

  expected = sorted(key(i, l) for i, l in zip(reference.images, reference.target))
  got_train = [key(r["image"][..., 0], r["label"]) for r in train]
  got_test = [key(r["image"][..., 0], r["label"]) for r in test]
  assert sorted(got_train + got_test) == expected  # Every image in exactly one split, labels intact.


def _labels_and_pixels(batch):
  return np.concatenate([batch["targets"][:, None].astype(np.float32), batch["inputs"].reshape(len(batch["targets"]), -1)], 1)


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_read_disjoint_rows_of_the_same_global_batches(digits, process_count):
  whole = input_pipeline.train_batches(digits, global_batch_size=32, seed=3, process_index=0, process_count=1)
  parts = [
      input_pipeline.train_batches(digits, global_batch_size=32, seed=3, process_index=p, process_count=process_count)
      for p in range(process_count)
  ]
  for _ in range(3):
    expected = _labels_and_pixels(next(whole))
    got = np.concatenate([_labels_and_pixels(next(part)) for part in parts])
    np.testing.assert_array_equal(got, expected)


def test_an_epoch_is_a_seeded_permutation_and_the_next_one_differs(digits):
  size = len(digits.train)
  batches = input_pipeline.train_batches(digits, global_batch_size=size, seed=0, process_index=0, process_count=1)
  first, second = _labels_and_pixels(next(batches)), _labels_and_pixels(next(batches))
  assert sorted(map(bytes, first)) == sorted(map(bytes, second))  # Same examples...
  assert not np.array_equal(first, second)  # ...in a new order.
  again = input_pipeline.train_batches(digits, global_batch_size=size, seed=0, process_index=0, process_count=1)
  np.testing.assert_array_equal(_labels_and_pixels(next(again)), first)
  other = input_pipeline.train_batches(digits, global_batch_size=size, seed=1, process_index=0, process_count=1)
  assert not np.array_equal(_labels_and_pixels(next(other)), first)


def test_starting_at_a_step_reads_the_batch_of_that_step(digits):
  from_start = input_pipeline.train_batches(digits, global_batch_size=64, seed=0, process_index=0, process_count=1)
  batches = [_labels_and_pixels(next(from_start)) for _ in range(30)]  # Crosses an epoch boundary.
  resumed = input_pipeline.train_batches(digits, global_batch_size=64, seed=0, process_index=0, process_count=1, start_step=25)
  for step in range(25, 30):
    np.testing.assert_array_equal(_labels_and_pixels(next(resumed)), batches[step])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once(digits, process_count):
  rows = []
  for p in range(process_count):
    for batch in input_pipeline.eval_batches(digits, global_batch_size=128, process_index=p, process_count=process_count):
      assert len(batch["targets"]) == 128 // process_count
      rows.extend(_labels_and_pixels(batch)[batch["mask"] == 1])
  expected = [np.concatenate([[r["label"]], r["image"].ravel() / 16.0]).astype(np.float32) for r in _records(digits.eval)]
  assert sorted(map(bytes, rows)) == sorted(map(bytes, expected))


def test_digits_pixels_are_scaled_to_one(digits):
  batch = next(input_pipeline.train_batches(digits, global_batch_size=256, seed=0, process_index=0, process_count=1))
  assert batch["inputs"].dtype == np.float32 and batch["targets"].dtype == np.int32
  assert batch["inputs"].min() == 0.0 and batch["inputs"].max() == 1.0


@pytest.mark.parametrize("name, message", [("no_such_dataset", "unknown dataset"), ("mnist", "not prepared"), ("cifar10", "not prepared")])
def test_unknown_or_unprepared_dataset_is_one_clear_error(data_dir, name, message):
  config = default.get_config()
  config.data_dir, config.dataset = data_dir, name
  with pytest.raises(ConfigError, match=message):
    input_pipeline.load_image_dataset(config)


@pytest.mark.parametrize(
    "warmup, decay_every, factor",
    [(0.0, 0.0, 0.1), (2.0, 0.0, 0.1), (0.0, 3.0, 0.1), (1.5, 2.0, 0.5)],
)
def test_schedule_is_warmup_then_step_decay(warmup, decay_every, factor):
  config = default.get_config()
  config.learning_rate, config.warmup_epochs, config.lr_decay_every_epochs, config.lr_decay_factor = 0.2, warmup, decay_every, factor
  steps_per_epoch = 10
  schedule = optimizers.create_schedules(config, steps_per_epoch).learning_rate
  for t in range(80):
    expected = 0.2
    if warmup:
      expected *= min(1.0, (t + 1) / round(warmup * steps_per_epoch))
    if decay_every:
      expected *= factor ** (t // round(decay_every * steps_per_epoch))
    np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6)


@pytest.fixture
def mock_config(tmp_path):
  config = default.get_config()
  config.data_dir, config.image_size = str(tmp_path), 32
  return config


def _batches(data, process_index=0, process_count=1, start_step=0, seed=0):
  return input_pipeline.train_batches(data, global_batch_size=8, seed=seed, process_index=process_index,
                                      process_count=process_count, start_step=start_step)


@pytest.mark.parametrize("name, eval_split", [("cifar10", "test"), ("imagenet2012", "validation")])
def test_augmented_pipelines_on_mock_data_are_deterministic_and_sharded(mock_config, name, eval_split):
  mock_config.dataset, mock_config.eval_split = name, eval_split
  with tfds.testing.mock_data(num_examples=24):
    data = input_pipeline.load_image_dataset(mock_config)
    assert data.input_shape == (32, 32, 3) and data.num_classes == {"cifar10": 10, "imagenet2012": 1000}[name]
    first = [next(b) for b in [_batches(data)] for _ in range(4)]
    assert first[0]["inputs"].shape == (8, 32, 32, 3) and first[0]["inputs"].dtype == np.float32
    # Same seed, same crops and flips; reading from step 3, or as 2 processes, gives the same rows.
    np.testing.assert_array_equal(next(_batches(data, start_step=3))["inputs"], first[3]["inputs"])
    halves = [next(_batches(data, process_index=p, process_count=2, start_step=2))["inputs"] for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), first[2]["inputs"])
    assert not np.array_equal(next(_batches(data, seed=1))["inputs"], first[0]["inputs"])
    evaluated = next(input_pipeline.eval_batches(data, global_batch_size=8, process_index=0, process_count=1))
    assert evaluated["inputs"].shape == (8, 32, 32, 3)


def test_pad_crop_and_flip_match_numpy():
  image = np.arange(4 * 5 * 1, dtype=np.uint8).reshape(4, 5, 1)
  rng, check = np.random.default_rng(7), np.random.default_rng(7)
  top, left = check.integers(0, 9, size=2)
  expected = np.pad(image, ((4, 4), (4, 4), (0, 0)))[top : top + 4, left : left + 5]
  np.testing.assert_array_equal(augment.pad_crop(image, rng), expected)
  flips = [augment.flip(image, np.random.default_rng(s)) for s in range(20)]
  assert {f.tobytes() for f in flips} == {image.tobytes(), image[:, ::-1].tobytes()}


def test_crops_keep_the_content():
  image = np.zeros((40, 60, 3), np.uint8)
  image[10:30, 20:40] = 255  # A centred bright square, 20 px on a side.
  centre = augment.center_crop(image, 20, crop_fraction=0.5)
  np.testing.assert_array_equal(centre, np.full((20, 20, 3), 255, np.uint8))
  whole = augment.random_resized_crop(image, np.random.default_rng(0), 30, area=(1.0, 1.0), ratio=(1.5, 1.5))
  np.testing.assert_array_equal(whole, augment.resize(image, 30, 30))
  assert augment.random_resized_crop(image, np.random.default_rng(0), 16).shape == (16, 16, 3)
