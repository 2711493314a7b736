"""Bit-level kernels of signvote-jax: sign packing and majority vote.

Every function here works on flat arrays with the bit layout fixed in DESIGN.md: flat coordinate
``i`` of a leaf lives in word ``i // 32``, bit ``i % 32`` (least significant first). A ballot
(:func:`pack_ballot`) has bit 1 for +1 and 0 for -1, and one flag a word for whether the worker
votes on it; where it has nothing to say (zero or non-finite) inside a word it votes on, it sends an
unbiased filler bit.

The pure-JAX functions are written for XLA's fusion: a leaf's ballot is one pass over it, into
which XLA fuses whatever computes the leaf (the momentum), and everything after that works on
words. :func:`pack_signs`, :func:`vote_planes` and :func:`majority` also have Triton twins and take
``impl="auto" | "jax" | "triton"``: ``"jax"`` is the pure-JAX version that runs everywhere;
``"triton"`` runs the Triton kernel through ``jax_triton`` on a GPU; ``"auto"`` picks Triton when the
computation is lowered for a GPU and ``jax_triton`` imports, and JAX otherwise. The ballot has no
Triton twin: a custom kernel would need the momentum written out before it could read it.
"""

from .dispatch import IMPLS, Impl, check_impl, triton_importable, triton_impls
from .fusion import computed_once
from .packing import (BITS, ballot_of_planes, filler_word, num_words, pack_ballot, pack_bits, pack_signs, pack_ternary, popcount_sum,
                      sign_planes, unpack_bits, unpack_signs, unpack_ternary, word_masks)
from .voting import AgreementCounts, agreement_counts, decode_planes, majority, vote_planes

__all__ = [
    "AgreementCounts",
    "BITS",
    "IMPLS",
    "Impl",
    "agreement_counts",
    "ballot_of_planes",
    "check_impl",
    "computed_once",
    "decode_planes",
    "filler_word",
    "majority",
    "num_words",
    "pack_ballot",
    "pack_bits",
    "pack_signs",
    "pack_ternary",
    "popcount_sum",
    "sign_planes",
    "triton_importable",
    "triton_impls",
    "unpack_bits",
    "unpack_signs",
    "unpack_ternary",
    "vote_planes",
    "word_masks",
]
