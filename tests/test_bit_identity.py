"""The restructured step (issue 23) against the outputs recorded before it: the same bits.

``tests/golden.py`` holds the scenarios (every strategy, Signum and Lion, faults, bfloat16, a lone
worker) on inputs full of zeros of both signs, NaN, +-Inf and values near the float32 maximum;
``tests/golden/outputs.npz`` the parameters, vote statistics and momentum each step gave before.
"""

import numpy as np
import pytest

from tests import golden

RECORDED = golden.load()
SCENARIOS = golden.scenarios()


def test_the_recording_covers_every_scenario():
  assert {key.split("/")[0] for key in RECORDED} == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_outputs_are_bit_identical_to_the_recording(name):
  found = SCENARIOS[name]()
  expected = {key.split("/", 1)[1]: value for key, value in RECORDED.items() if key.split("/")[0] == name}
  assert sorted(found) == sorted(expected)
  for key, value in expected.items():
    got = np.asarray(found[key])
    assert got.dtype == value.dtype and got.shape == value.shape, key
    # Bits, not values: NaN where NaN was, -0.0 where -0.0 was.
    np.testing.assert_array_equal(np.ravel(got).view(np.uint8), np.ravel(value).view(np.uint8), err_msg=key)
