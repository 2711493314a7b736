"""The programs in examples/ run as written, and the README's code is what they say, line for line."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests import harness

EXAMPLES = pathlib.Path(harness.ROOT, "examples")

# What each program must print: its claims, checked on a fresh process with its own simulated devices.
EXPECTED = {
    "shard_map_step.py": [r"step  99  loss 0\.[0-2]\d*", r"distance to the true weights: 0\.[0-4]"],
    "nnx_step.py": [r"bias 1\.0\d \(the true bias is 1\.00\)"],
    "pmap_step.py": [r"4 workers agree on the parameters: True", r"step  99  loss 0\.[0-2]"],
    "vote_options.py": [r"workers vote for each other: True", r"signum's step is -lr times the vote: True",
                        r"lion's step: -lr times the vote of its directions: True",
                        r"refused when made: replicas and voter_fault apply where workers vote for each other"],
    "faulty_workers.py": [r"2 of 7 workers negate: distance to the optimum [0-9]\.", r"suspected workers: \[5, 6\]",
                          r"suspected workers: \[6\], suspected voters: \[6\]"],
    "optax_wrappers.py": [rf"{name}: loss 0\.[0-2]\d* after 60 steps"
                          for name in ("inject_hyperparams", "MultiSteps", "clipping", "reduce_on_plateau", "apply_if_finite")],
}


def test_every_program_is_checked():
  assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_as_written(name):
  if name == "nnx_step.py":
    pytest.importorskip("flax.nnx")  # Flax comes with the trainer's extra, not the library.
  # One at a time: each simulates its devices as threads, and two programs on 2 cores take 4x as long.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # Each program sets its own devices.
  done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=harness.ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  for pattern in EXPECTED[name]:
    assert re.search(pattern, done.stdout), f"{name} did not print {pattern!r}:\n{done.stdout}"


def _readme_blocks():
  text = pathlib.Path(harness.ROOT, "README.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_code_is_what_the_examples_run():
  """Each Python block of the README names the program it comes from, and each of its lines is one of
  that program's (so that what the README shows is what runs)."""
  blocks = _readme_blocks()
  assert blocks
  for block in blocks:
    first, *lines = block.splitlines()
    source = re.fullmatch(r"# From (examples/\w+\.py)", first)
    assert source, f"a README block does not say which example it comes from: {first!r}"
    program = {line.strip() for line in pathlib.Path(harness.ROOT, source.group(1)).read_text().splitlines()}
    missing = [line for line in lines if line.strip() and line.strip() not in program]
    assert not missing, f"README lines not in {source.group(1)}: {missing}"
