"""WikiText-103 (Merity et al., 2016) as a tfds dataset, word level, from the user's own files.

tfds has no builder for it. This one reads the standard ``wiki.train.tokens``,
``wiki.valid.tokens`` and ``wiki.test.tokens`` from the manual dir (the unpacked
``wikitext-103`` folder) and stores each split as one stream of word ids in chunks of
``CHUNK`` ids. The vocabulary is every word of the training file, most frequent first (ties in
order of first appearance), plus ``<eos>``, which ends every line (the usual word-level setup;
the files already use ``<unk>``). Words of valid/test missing from it map to ``<unk>``.

  builder = Wikitext103(data_dir=DATA, config=...)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DIR))
"""

import collections
import os

import numpy as np
import tensorflow_datasets as tfds

EOS, UNK = "<eos>", "<unk>"
CHUNK = 65536  # Word ids per stored example; the last chunk of a split is shorter.
FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens", "test": "wiki.test.tokens"}


def read_words(path: str):
  """The words of a WikiText file, line by line, each non-empty line ended by ``<eos>``."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      words = line.split()
      if words:
        yield from words
        yield EOS


def build_vocabulary(path: str) -> list[str]:
  counts = collections.Counter(read_words(path))
  counts.setdefault(UNK, 0)
  # Counter keeps first-appearance order, and sorted() is stable, so ties keep it too.
  return sorted(counts, key=lambda word: -counts[word])


class Wikitext103(tfds.core.GeneratorBasedBuilder):
  """WikiText-103, word level: each split one stream of word ids, stored in chunks."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Unpack wikitext-103-v1.zip (https://blog.salesforceairesearch.com/the-wikitext-long-term-dependency-"
      "language-modeling-dataset/) and pass the folder holding wiki.train.tokens as the manual dir "
      "(config.manual_dir)."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({"ids": tfds.features.Tensor(shape=(None,), dtype=np.int32)}),
        metadata=tfds.core.MetadataDict(),
        homepage="https://arxiv.org/abs/1609.07843",
    )

  def _split_generators(self, dl_manager):
    paths = {split: os.path.join(dl_manager.manual_dir, name) for split, name in FILES.items()}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(f"WikiText-103 files not found: {missing}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    vocabulary = build_vocabulary(paths["train"])
    self.info.metadata["vocabulary"] = vocabulary
    index = {word: i for i, word in enumerate(vocabulary)}
    return {split: self._generate_examples(path, index) for split, path in paths.items()}

  def _generate_examples(self, path, index):
    unk = index[UNK]
    ids = np.fromiter((index.get(word, unk) for word in read_words(path)), dtype=np.int32)
    for number, start in enumerate(range(0, len(ids), CHUNK)):
      yield number, {"ids": ids[start : start + CHUNK]}
