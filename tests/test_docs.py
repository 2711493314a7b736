"""The API reference: every public name documented, and the Sphinx build (make docs) clean."""

import inspect
import pathlib
import re
import subprocess
import sys
import types

import pytest

import signvote_jax as sv
from signvote_jax import faults, ops, sharded, statistics, strategies
from tests import harness


def _public(module, names=None):
  names = names if names is not None else [n for n in vars(module) if not n.startswith("_")]
  for name in names:
    obj = getattr(module, name)
    if isinstance(obj, types.ModuleType) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
      continue
    if getattr(obj, "__module__", "").startswith("signvote_jax"):
      yield f"{module.__name__}.{name}", obj


def test_every_public_name_has_a_docstring():
  documented = dict(_public(sv, sv.__all__))
  for module in (ops, faults, statistics, strategies, sharded):
    documented.update(_public(module, getattr(module, "__all__", None)))
  missing = sorted(name for name, obj in documented.items() if not (inspect.getdoc(obj) or "").strip())
  assert len(documented) > 40 and not missing, missing


def test_api_reference_builds_without_warnings_and_covers_the_package(tmp_path):
  pytest.importorskip("sphinx")
  done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path)],
                        cwd=harness.ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  page = (tmp_path / "api.html").read_text()
  anchors = set(re.findall(r'id="signvote_jax\.(?:[\w.]+\.)?(\w+)"', page))
  names = {name for name in sv.__all__ if not isinstance(getattr(sv, name), types.ModuleType)} - {"STRATEGIES"}
  assert names <= anchors, sorted(names - anchors)
  constants = {"BITS", "IMPLS", "Impl"}  # Values and a type alias, described in the module's text.
  assert set(ops.__all__) - constants <= anchors, sorted(set(ops.__all__) - constants - anchors)
  assert pathlib.Path(tmp_path, "index.html").exists()
