"""Input pipelines: tfds data sources (TF-free), shuffled, batched and sharded per process by grain.

Every process builds the same seeded, epoch-reshuffled stream of global batches and reads only its
own rows: process p of P holds rows [p*L, (p+1)*L) of each global batch of P*L examples, which the
trainer then splits over its local devices, L/D rows each. So a job's global batches do not depend
on how its workers are spread over processes, and batch ``k`` is read directly by index, which
makes resuming exact without saving any iterator state.
"""

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from train import augment
from train.datasets import sklearn_digits, wikitext103
from train.errors import ConfigError

# The project's own builders: digits is prepared into the data dir on first use, wikitext103 from
# the user's files (config.manual_dir).
OWN_BUILDERS = {"sklearn_digits": sklearn_digits.SklearnDigits, "wikitext103": wikitext103.Wikitext103}


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """An image-classification dataset: its splits as tfds data sources, and how examples are fed."""

  name: str
  train: Sequence  # Random-access records {"image": uint8[H, W, C], "label": int, ...}.
  eval: Sequence
  num_classes: int
  input_shape: tuple[int, ...]  # One example as the model sees it, after the transforms.
  train_image: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # uint8 -> float32.
  eval_image: Callable[[np.ndarray], np.ndarray]
  input_dtype = np.float32
  is_language = False

  def train_example(self, example: dict, rng: np.random.Generator) -> dict:
    return {"inputs": self.train_image(example["image"], rng), "targets": np.int32(example["label"])}

  def eval_example(self, example: dict) -> dict:
    return {"inputs": self.eval_image(example["image"]), "targets": np.int32(example["label"])}


def image_transforms(name: str, stored_shape, config):
  """(train, eval) image transforms and the model's input shape, by dataset.

  * ``sklearn_digits``: pixels 0-16 scaled to [0, 1].
  * ``cifar10`` / ``cifar100``: pad 4, random 32x32 crop and flip; per-channel standardisation.
  * images of varying size (``imagenet2012``, ...): random-resized crop to ``config.image_size``
    and flip; evaluation resizes the centre 87.5 % crop; ImageNet standardisation.
  * any other fixed-size images: pixels scaled to [0, 1].
  """
  if name == "sklearn_digits":
    scale = lambda image: (image / 16.0).astype(np.float32)
    return (lambda image, rng: scale(image)), scale, tuple(stored_shape)
  if name in ("cifar10", "cifar100"):
    norm = functools.partial(augment.normalize, mean=augment.CIFAR_MEAN, std=augment.CIFAR_STD)
    return (lambda image, rng: norm(augment.flip(augment.pad_crop(image, rng), rng))), norm, tuple(stored_shape)
  if None in stored_shape[:2]:
    size = config.image_size
    norm = functools.partial(augment.normalize, mean=augment.IMAGENET_MEAN, std=augment.IMAGENET_STD)
    train = lambda image, rng: norm(augment.flip(augment.random_resized_crop(image, rng, size), rng))
    return train, (lambda image: norm(augment.center_crop(image, size))), (size, size, stored_shape[2])
  scale = lambda image: (image / 255.0).astype(np.float32)
  return (lambda image, rng: scale(image)), scale, tuple(stored_shape)


class Windows(Sequence):
  """Non-overlapping windows of ``length + 1`` ids of a stream (inputs and shifted targets).

  The stream's last ``< length`` ids, which fill no window, are left out.
  """

  def __init__(self, ids: np.ndarray, length: int):
    self.ids, self.length = ids, length

  def __len__(self):
    return (len(self.ids) - 1) // self.length

  def __getitem__(self, index):
    if not 0 <= index < len(self):
      raise IndexError(index)
    return self.ids[index * self.length : (index + 1) * self.length + 1]


@dataclasses.dataclass(frozen=True)
class LanguageDataset:
  """A word-level corpus: each split one stream of ids, served as windows of ``bptt`` words.

  Every window starts from a fresh recurrent state (truncated back-propagation through ``bptt``
  words); training visits the windows in a new order each epoch.
  """

  name: str
  train: Windows
  eval: Windows
  num_classes: int  # The vocabulary size.
  input_shape: tuple[int, ...]  # (bptt,)
  input_dtype = np.int32
  is_language = True

  def train_example(self, window: np.ndarray, rng: np.random.Generator) -> dict:
    del rng
    return self.eval_example(window)

  def eval_example(self, window: np.ndarray) -> dict:
    return {"inputs": window[:-1], "targets": window[1:]}


def load_language_dataset(config) -> LanguageDataset:
  """``wikitext103``, built once from ``config.manual_dir`` into ``config.data_dir``."""
  data_dir = _data_dir(config)
  builder = wikitext103.Wikitext103(data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    if not config.manual_dir:
      raise ConfigError(
          f"dataset 'wikitext103' is not prepared in data_dir {data_dir!r}; set --config.manual_dir to the "
          "folder holding wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens to build it once."
      )
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(config.manual_dir)))
    except FileNotFoundError as e:
      raise ConfigError(str(e)) from None

  def stream(split):
    source = _source("wikitext103", split, data_dir)
    return np.concatenate([source[i]["ids"] for i in range(len(source))]), source

  train_ids, source = stream(config.train_split)
  eval_ids, _ = stream(config.eval_split)
  return LanguageDataset(
      name="wikitext103",
      train=Windows(train_ids, config.bptt),
      eval=Windows(eval_ids, config.bptt),
      num_classes=len(source.dataset_info.metadata["vocabulary"]),
      input_shape=(config.bptt,),
  )


def load_dataset(config) -> ImageDataset | LanguageDataset:
  """``config.dataset``: ``wikitext103`` (words), or images by tfds name."""
  return load_language_dataset(config) if config.dataset == "wikitext103" else load_image_dataset(config)


def _data_dir(config) -> str:
  return os.path.expanduser(config.data_dir) if config.data_dir else None


def _source(name: str, split: str, data_dir):
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f"unknown dataset {name!r}: not a tfds name; the project's own are {sorted(OWN_BUILDERS)}."
    ) from None
  except ValueError as e:
    if str(e).startswith("Unknown split"):
      raise ConfigError(f"dataset {name!r}: {e} Set --config.train_split / --config.eval_split.") from None
    raise _not_prepared(name, split, data_dir, e) from None
  except (AssertionError, FileNotFoundError, KeyError, NotImplementedError) as e:  # KeyError: no splits written.
    raise _not_prepared(name, split, data_dir, e) from None


def _not_prepared(name, split, data_dir, error) -> ConfigError:
  return ConfigError(
      f"dataset {name!r} split {split!r} is not prepared in data_dir "
      f"{data_dir or tfds.core.constants.DATA_DIR!r} ({type(error).__name__}: {str(error).splitlines()[0]}); "
      f"prepare it once with `tfds build {name} --file_format=array_record --data_dir=...` "
      "(data sources need array_record files) and set --config.data_dir."
  )


def load_image_dataset(config) -> ImageDataset:
  """The dataset ``config.dataset`` with ``config.train_split`` and ``config.eval_split``."""
  data_dir = _data_dir(config)
  if config.dataset in OWN_BUILDERS:
    builder = OWN_BUILDERS[config.dataset](data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()  # A no-op once prepared; reads nothing from the network.
  train = _source(config.dataset, config.train_split, data_dir)
  eval_ = _source(config.dataset, config.eval_split, data_dir)
  features = train.dataset_info.features
  if "image" not in features or "label" not in features:
    raise ConfigError(f"dataset {config.dataset!r} has no 'image' and 'label' features to classify.")
  train_image, eval_image, input_shape = image_transforms(config.dataset, features["image"].shape, config)
  return ImageDataset(
      name=config.dataset,
      train=train,
      eval=eval_,
      num_classes=features["label"].num_classes,
      input_shape=input_shape,
      train_image=train_image,
      eval_image=eval_image,
  )


def _read(dataset: grain.MapDataset, num_threads: int) -> Iterator[dict]:
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
  return iter(dataset.to_iter_dataset(options))


def train_batches(
    data: ImageDataset | LanguageDataset, *, global_batch_size, seed, process_index, process_count, start_step=0, num_threads=4
) -> Iterator[dict]:
  """This process's rows of global training batches ``start_step, start_step + 1, ...`` (endless).

  Each epoch is a fresh permutation of the training split seeded by ``seed`` (and the epoch); the
  stream runs on across epoch boundaries, so every batch is full. Random augmentations are seeded
  by ``seed`` and the example's position in the stream.
  """
  local_batch_size = global_batch_size // process_count
  batches = (
      grain.MapDataset.source(data.train)
      .shuffle(seed=seed)
      .repeat()
      .random_map(data.train_example, seed=seed)
      .batch(local_batch_size, drop_remainder=True)
  )
  return _read(batches[process_index::process_count][start_step:], num_threads)


def eval_batches(data: ImageDataset | LanguageDataset, *, global_batch_size, process_index, process_count, num_threads=4) -> Iterator[dict]:
  """This process's rows of the evaluation split in global batches, in order, once.

  The last batch is padded by repeating the final example; ``"mask"`` (1.0 for a real example,
  0.0 for padding) lets the metrics count every example exactly once.
  """
  size = len(data.eval)
  padded = math.ceil(size / global_batch_size) * global_batch_size

  def example(index):
    out = data.eval_example(data.eval[min(index, size - 1)])
    out["mask"] = np.float32(index < size)
    return out

  batches = grain.MapDataset.range(padded).map(example).batch(global_batch_size // process_count)
  return _read(batches[process_index::process_count], num_threads)
