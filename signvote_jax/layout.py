"""Where each leaf of an update tree lives in the one uint32 buffer that is exchanged per step."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from signvote_jax import ops


class Ballot(NamedTuple):
  """What one worker sends: its bits and, per word, whether it votes there."""

  words: jax.Array  # u32[W]: bit 1 for +1 (filler bits where it has nothing to say).
  voting: jax.Array  # bool[W]: whether it votes on the word (it abstains on a word with nothing to say).
  nonfinite: jax.Array  # u32[]: its non-finite coordinates.

  @classmethod
  def of(cls, parts, padding: int) -> "Ballot":
    """The ballot of consecutive parts (``ops.pack_ballot`` triples), then ``padding`` abstained words."""
    words, voting, nonfinite = zip(*parts)
    return cls(jnp.concatenate([*words, jnp.zeros((padding,), jnp.uint32)]),
               jnp.concatenate([*voting, jnp.zeros((padding,), jnp.bool_)]),
               sum(nonfinite[1:], nonfinite[0]))


@dataclasses.dataclass(frozen=True)
class WordLayout:
  """Static layout of a list of leaves in one word buffer.

  Each leaf is packed on its own into whole words, starting on a word boundary; the leaves' words
  are concatenated in tree order, then padded with zero words up to ``padded_words``.

  Attributes:
    offsets: first word of each leaf.
    sizes: number of coordinates of each leaf.
    num_words: words holding coordinates (before padding).
    padded_words: buffer length, a multiple of ``multiple``.
  """

  offsets: tuple[int, ...]
  sizes: tuple[int, ...]
  num_words: int
  padded_words: int

  @classmethod
  def of(cls, leaves, multiple: int = 1) -> "WordLayout":
    sizes = tuple(int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves)
    counts = [ops.num_words(size) for size in sizes]
    offsets = tuple(int(o) for o in np.cumsum([0] + counts[:-1]))
    total = int(sum(counts))
    return cls(offsets, sizes, total, -(-total // multiple) * multiple)

  def ballot(self, leaves, phase) -> "Ballot":
    """This worker's ballot of all ``leaves`` (:func:`ops.pack_ballot` of each) in one buffer."""
    return Ballot.of([ops.pack_ballot(leaf, phase) for leaf in leaves],
                     self.padded_words - self.num_words)

  def floats(self, leaves) -> jax.Array:
    """All ``leaves`` as one ``f32[32 * padded_words]`` buffer with the word layout: coordinate ``j``
    of the buffer is the one whose sign :meth:`pack` puts in word ``j // 32``, bit ``j % 32``."""
    parts = []
    for leaf, size in zip(leaves, self.sizes):
      flat = jnp.ravel(leaf).astype(jnp.float32)
      parts.append(jnp.pad(flat, (0, ops.num_words(size) * ops.packing.BITS - size)))
    parts.append(jnp.zeros(((self.padded_words - self.num_words) * ops.packing.BITS,), jnp.float32))
    return jnp.concatenate(parts)

  def valid_mask(self) -> jax.Array:
    """``u32[padded_words]`` with bit 1 exactly where a coordinate lives."""
    partial_words, partial_masks = [], []
    for offset, size in zip(self.offsets, self.sizes):
      if size % ops.packing.BITS:
        partial_words.append(offset + ops.num_words(size) - 1)
        partial_masks.append((1 << (size % ops.packing.BITS)) - 1)
    index = jnp.arange(self.padded_words)
    mask = jnp.where(index < self.num_words, jnp.uint32(0xFFFFFFFF), jnp.uint32(0))
    if partial_words:
      mask = mask.at[np.asarray(partial_words)].set(np.asarray(partial_masks, np.uint32))
    return mask

  def decode(self, sign, nonzero, like):
    """Splits vote planes back into leaves of votes shaped and typed like ``like``.

    Decoding reads each plane word once per coordinate, so the planes are read from memory
    (:func:`ops.computed_once`), not recomputed 32 times from whatever produced them.
    """
    sign, nonzero = ops.computed_once(sign, nonzero)
    out = []
    for offset, size, leaf in zip(self.offsets, self.sizes, like):
      words = slice(offset, offset + ops.num_words(size))
      votes = ops.decode_planes(sign[words], nonzero[words], size, leaf.dtype)
      out.append(votes.reshape(leaf.shape))
    return out
