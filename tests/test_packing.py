"""Bit packing and the vote kernels against the numpy reference of the layout in DESIGN.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from signvote_jax import ops
from signvote_jax.layout import WordLayout
from tests import reference


def _random_values(rng, shape, dtype):
  values = rng.normal(size=shape).astype(np.float32)
  flat = values.reshape(-1)
  specials = np.array([0.0, -0.0, np.nan, -np.inf, np.inf, -1e-30], np.float32)
  flat[rng.choice(flat.size, size=min(flat.size, specials.size), replace=False)] = specials[: min(flat.size, 6)]
  return jnp.asarray(values, dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(), (1,), (31,), (32,), (33,), (3, 5, 7), (2, 64), (1000,)])
def test_pack_matches_reference_and_round_trips(shape, dtype):
  x = _random_values(np.random.default_rng(len(shape) + sum(shape)), shape, dtype)
  words = jax.jit(ops.pack_signs)(x)
  as_float = np.asarray(x, np.float32)
  np.testing.assert_array_equal(np.asarray(words), reference.pack(as_float))
  signs = ops.unpack_signs(words, as_float.size, dtype)
  assert signs.dtype == dtype
  np.testing.assert_array_equal(np.asarray(signs, np.float32), np.where(reference.sign_bits(as_float.ravel()), 1, -1))


def test_zero_signs_follow_design():
  words = ops.pack_signs(jnp.array([0.0, -0.0, jnp.nan, -jnp.nan, -1.0, 1.0]))
  # +0.0 and -0.0 vote +1 (bits 0, 1); NaN of either sign and -1 vote -1; 1.0 votes +1 (bit 5).
  assert int(words[0]) == 0b100011


@pytest.mark.parametrize("phase", [0, 1, 6])
@pytest.mark.parametrize("size", [1, 31, 33, 100])
def test_ballot_matches_reference(size, phase):
  rng = np.random.default_rng(size + phase)
  values = rng.integers(-1, 2, size=size).astype(np.float32) * rng.choice([1.0, np.nan], size=size, p=[0.9, 0.1])
  if size > 64:
    values[32:64] = 0.0  # a word with nothing to say
  words, voting, nonfinite = ops.pack_ballot(jnp.asarray(values), phase)
  bits, voting_by_coordinate = reference.ballots(values[None], step=phase)
  np.testing.assert_array_equal(np.asarray(words), reference.pack(np.where(bits[0], 1.0, -1.0)))
  np.testing.assert_array_equal(np.asarray(voting), voting_by_coordinate[0, ::32])
  assert int(nonfinite) == reference.nonfinite(values[None])[0]


# Up to 70 ballots: counts of 6 and 7 bits in the bit-sliced vote.
@pytest.mark.parametrize("num_workers", [1, 2, 3, 4, 7, 8, 9, 32, 33, 70])
@pytest.mark.parametrize("size", [1, 31, 33, 200])
def test_vote_matches_reference(num_workers, size):
  rng = np.random.default_rng(num_workers * 1000 + size)
  values = rng.integers(-1, 2, size=(num_workers, size)).astype(np.float32)  # zeros: nothing to say
  values[:, 0] = 1.0  # a unanimous coordinate
  if num_workers % 2 == 0 and size > 1:
    values[:, 1] = np.repeat([1.0, -1.0], num_workers // 2)  # an exact tie
  if size > 64:
    values[: (num_workers + 1) // 2, 32:64] = 0.0  # half the workers abstain on a word
    values[:, 96:128] = np.nan  # everyone abstains on a word
  step = num_workers % 3
  ballots = [ops.pack_ballot(jnp.asarray(row), step + m) for m, row in enumerate(values)]
  words, voting = jnp.stack([b[0] for b in ballots]), jnp.stack([b[1] for b in ballots])
  expected = reference.vote_of_ballots(values, step)
  layout = WordLayout.of([values[0]])
  sign, nonzero = ops.vote_planes(words, layout.valid_mask(), voting=voting, tie_phase=step)
  np.testing.assert_array_equal(np.asarray(ops.decode_planes(sign, nonzero, size, jnp.float32)), expected)

  counts = ops.agreement_counts(words, sign, nonzero, voting)
  bits, voting_by_coordinate = reference.ballots(values, step)
  counted = voting_by_coordinate & (expected != 0)
  signs = np.where(bits, 1.0, -1.0)
  np.testing.assert_array_equal(np.asarray(counts.total), counted.sum(axis=1))
  np.testing.assert_array_equal(np.asarray(counts.vote_positive), (counted & (expected > 0)).sum(axis=1))
  np.testing.assert_array_equal(np.asarray(counts.agree), (counted & (signs == expected)).sum(axis=1))
  np.testing.assert_array_equal(np.asarray(counts.positive), (counted & bits).sum(axis=1))


def test_layout_places_each_leaf_on_a_word_boundary():
  leaves = [jnp.ones((33,)), jnp.ones(()), jnp.zeros((0,)), jnp.ones((2, 16))]
  layout = WordLayout.of(leaves, multiple=4)
  assert layout.offsets == (0, 2, 3, 3)
  assert (layout.num_words, layout.padded_words) == (4, 4)
  np.testing.assert_array_equal(
      np.asarray(layout.valid_mask()), np.array([0xFFFFFFFF, 0x1, 0x1, 0xFFFFFFFF], np.uint32)
  )
  ballot = layout.ballot([-leaf for leaf in leaves], phase=0)
  assert ballot.words.dtype == jnp.uint32 and ballot.words.shape == (4,)
  np.testing.assert_array_equal(np.asarray(ballot.words), 0)  # all negative: every bit 0
  np.testing.assert_array_equal(np.asarray(ballot.voting), True)


def _reference_ternary(votes):
  """Base-3 words from votes in {-1, 0, +1}: digit i % 20 of word i // 20 is 0 (tie), 1 (-1) or 2 (+1)."""
  digits = np.select([votes > 0, votes < 0], [2, 1], 0).astype(np.uint64)
  digits = np.pad(digits, (0, -len(digits) % 20)).reshape(-1, 20)
  return (digits * 3 ** np.arange(20, dtype=np.uint64)).sum(axis=1).astype(np.uint32)


@pytest.mark.parametrize("plane_words", [1, 5, 8, 33])
def test_ternary_packing_matches_reference_and_round_trips(plane_words):
  rng = np.random.default_rng(plane_words)
  votes = rng.integers(-1, 2, size=32 * plane_words)
  votes[:20] = 1  # a word of all +1: the largest base-3 word, 2 * (3**20 - 1) / 2
  sign = jnp.asarray(reference.pack(np.where(votes > 0, 1.0, -1.0)))
  nonzero = jnp.asarray(reference.pack(np.where(votes != 0, 1.0, -1.0)))
  words = jax.jit(ops.pack_ternary)(sign, nonzero)
  assert words.shape == (ops.packing.num_trit_words(plane_words),) == (-(-32 * plane_words // 20),)
  np.testing.assert_array_equal(np.asarray(words), _reference_ternary(votes))
  assert int(words[0]) == 3**20 - 1
  back_sign, back_nonzero = ops.unpack_ternary(jnp.stack([words, words]), plane_words)
  for back, plane in ((back_sign, sign), (back_nonzero, nonzero)):
    np.testing.assert_array_equal(np.asarray(back), np.stack([np.asarray(plane)] * 2))


def test_ternary_unpack_rejects_a_wrong_length():
  with pytest.raises(ValueError, match="travel as 2 base-3 words"):
    ops.unpack_ternary(jnp.zeros((3,), jnp.uint32), 1)


def test_auto_impl_is_chosen_for_the_platform_being_lowered(monkeypatch):
  """With jax-triton installed, ``impl="auto"`` lowers the Triton twin for CUDA only: a jit on CPU
  devices (of a GPU host, say) takes the pure-JAX path."""
  marker = 0xDEADBEEF
  monkeypatch.setattr(ops.dispatch, "triton_importable", lambda: True)
  monkeypatch.setattr(ops.packing, "_pack_signs_triton", lambda x: jnp.full((ops.num_words(x.size),), marker, jnp.uint32))
  x = jnp.array([1.0, -1.0, 2.0])
  pack = jax.jit(lambda a: ops.pack_signs(a, impl="auto"))
  with jax.default_device(jax.devices("cpu")[0]):
    assert int(pack(x)[0]) == 0b101
  for_cuda = pack.trace(x).lower(lowering_platforms=("cuda",)).as_text()
  for_cpu = pack.trace(x).lower(lowering_platforms=("cpu",)).as_text()
  assert str(marker) in for_cuda and str(marker) not in for_cpu


@pytest.mark.parametrize("num_workers", range(1, 10))
def test_without_zeros_or_non_finite_values_the_vote_is_the_papers(num_workers):
  """Where every worker has something to say everywhere, nobody abstains and no filler is sent: the
  vote is exactly sign(2c - M) of the ballots' signs, whatever the step (the tie-break never fires)."""
  rng = np.random.default_rng(num_workers)
  values = rng.choice([-1.0, 1.0], size=(num_workers, 100)) * rng.uniform(1e-30, 1e3, (num_workers, 100))
  count = (values > 0).sum(axis=0)
  for step in (0, 1):
    ballots = [ops.pack_ballot(jnp.asarray(row, jnp.float32), step + m) for m, row in enumerate(values)]
    words, voting = jnp.stack([b[0] for b in ballots]), jnp.stack([b[1] for b in ballots])
    assert bool(voting.all())
    sign, nonzero = ops.vote_planes(words, WordLayout.of([values[0]]).valid_mask(), voting=voting, tie_phase=step)
    votes = np.asarray(ops.decode_planes(sign, nonzero, 100, jnp.float32))
    np.testing.assert_array_equal(votes, np.sign(2 * count - num_workers))
