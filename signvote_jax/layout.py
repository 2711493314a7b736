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

  def planes(self, leaves):
    """``(positive, says, nonfinite)`` bit planes ``u32[padded_words]`` of ``leaves`` (:func:`ops.sign_planes`)."""
    padding = self.padded_words - self.num_words
    return tuple(jnp.pad(p, (0, padding)) if padding else p for p in ops.sign_planes(*leaves))

  def ballot(self, leaves, phase) -> "Ballot":
    """This worker's ballot of all ``leaves`` in one buffer, as :func:`ops.pack_ballot` makes one of
    each leaf: its sign where a coordinate has something to say, else the filler bit, and the words
    it votes on. Built on the whole buffer at once, after one pass over each leaf."""
    return Ballot(*ops.ballot_of_planes(*self.planes(leaves), self.valid_mask(), phase))

  def floats(self, leaves) -> jax.Array:
    """All ``leaves`` as one ``f32[32 * padded_words]`` buffer with the word layout: coordinate ``j``
    of the buffer is the one whose sign :meth:`pack` puts in word ``j // 32``, bit ``j % 32``."""
    parts = []
    for leaf, size in zip(leaves, self.sizes):
      flat = jnp.ravel(leaf).astype(jnp.float32)
      parts.append(jnp.pad(flat, (0, ops.num_words(size) * ops.BITS - size)))
    parts.append(jnp.zeros(((self.padded_words - self.num_words) * ops.BITS,), jnp.float32))
    return jnp.concatenate(parts)

  def valid_mask(self) -> jax.Array:
    """``u32[padded_words]`` with bit 1 exactly where a coordinate lives."""
    return jnp.pad(ops.word_masks(*self.sizes), (0, self.padded_words - self.num_words))

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
