"""What `pip install signvote-jax` gives a user: one namespace, lean dependencies, importable anywhere."""

import doctest
import importlib
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from tests import harness


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel built from a copy of the files the build reads (the checkout stays untouched)."""
  source = tmp_path_factory.mktemp("source")
  for name in ("pyproject.toml", "README.md", "LICENSE", "signvote_jax", "ops"):
    copy = shutil.copytree if (pathlib.Path(harness.ROOT, name)).is_dir() else shutil.copy
    copy(pathlib.Path(harness.ROOT, name), source / name)
  build = (
      "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
  )
  out = source / "dist"
  result = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return out / result.stdout.strip().splitlines()[-1]


def test_wheel_installs_only_the_signvote_jax_namespace(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
  assert {n.split("/")[0] for n in names} == {"signvote_jax", "signvote_jax-0.1.0.dist-info"}
  assert "signvote_jax/ops/voting.py" in names and "signvote_jax/ops/triton_kernels.py" in names


def test_wheel_carries_the_license_and_the_type_marker(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = z.read(metadata).decode()
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    license_text = z.read(license_file).decode()
  assert "signvote_jax/py.typed" in names
  assert "License-Expression: Apache-2.0" in text and "Apache License" in license_text and "Version 2.0" in license_text


def test_wheel_requires_only_jax_optax_and_numpy(wheel):
  with zipfile.ZipFile(wheel) as z:
    (metadata,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    text = z.read(metadata).decode()
  requirements = [Requirement(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("Requires-Dist:")]
  # What `pip install .` brings: the requirements that no extra asks for.
  plain = {r.name for r in requirements if r.marker is None or "extra" not in str(r.marker)}
  assert plain == {"jax", "optax", "numpy"}
  train = {r.name for r in requirements if r.marker is not None and 'extra == "train"' in str(r.marker)}
  assert {"tensorflow-datasets", "grain", "orbax-checkpoint", "flax"} <= train


def test_import_beside_a_users_ops_train_and_configs(tmp_path):
  """Generic names in the working directory never shadow the library's own modules."""
  for name in ("ops.py", "train.py"):
    (tmp_path / name).write_text("raise SystemExit('the user file ' + __file__ + ' was imported')\n")
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "__init__.py").write_text("raise SystemExit('the user configs were imported')\n")
  program = (
      "import jax.numpy as jnp, signvote_jax as sv\n"
      "print(int(sv.ops.pack_signs(jnp.array([1.0, -1.0, 2.0]))[0]), sv.signum(0.1).init is not None)\n"
  )
  result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["5", "True"]


@pytest.mark.parametrize("module", ["signvote_jax.ops.packing", "signvote_jax.ops.voting"])
def test_kernel_doctests_by_their_installed_name(module):
  """The kernels' examples, run from the module users import (pytest would import ops/ as top-level ``ops``)."""
  result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


def test_citation_names_the_paper_and_this_version():
  yaml = pytest.importorskip("yaml")
  import signvote_jax as sv  # pylint: disable=import-outside-toplevel

  citation = yaml.safe_load(pathlib.Path(harness.ROOT, "CITATION.cff").read_text())
  pyproject = pathlib.Path(harness.ROOT, "pyproject.toml").read_text()
  assert citation["version"] == sv.__version__ and f'version = "{sv.__version__}"' in pyproject
  assert citation["preferred-citation"]["url"] == "https://arxiv.org/abs/1810.05291"
  assert citation["license"] == "Apache-2.0" and 'license = "Apache-2.0"' in pyproject
