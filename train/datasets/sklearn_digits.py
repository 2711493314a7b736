"""scikit-learn's bundled handwritten digits as a tfds dataset (real data, no download).

1,797 grey-scale 8x8 images of the digits 0-9 (pixel values 0-16), from the UCI "Optical
Recognition of Handwritten Digits" set that scikit-learn ships inside its wheel. A fixed
permutation (seed 0) holds out 360 images as the ``test`` split; the other 1,437 are ``train``.

Build it once into a data dir (no network needed), then read it TF-free with ``tfds.data_source``:

  builder = SklearnDigits(data_dir=data_dir)
  builder.download_and_prepare(file_format="array_record")
  tfds.data_source("sklearn_digits", data_dir=data_dir, split="test")
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360
SPLIT_SEED = 0  # The permutation that chooses the test images; part of the dataset's definition.


def _split_indices(num_examples: int) -> dict[str, np.ndarray]:
  order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
  return {"test": np.sort(order[:NUM_TEST]), "train": np.sort(order[NUM_TEST:])}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits, 8x8 pixels with values 0-16, ten classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Train 1,437 / test 360 by a fixed permutation (seed 0)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {
        split: self._generate_examples(digits.images[indices], digits.target[indices], indices)
        for split, indices in _split_indices(len(digits.target)).items()
    }

  def _generate_examples(self, images, labels, indices):
    for image, label, index in zip(images, labels, indices):
      yield int(index), {"image": image.astype(np.uint8)[..., None], "label": int(label)}
