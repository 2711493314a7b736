"""Pytest set-up shared by the tests and the doctests.

XLA and Triton read these variables once, when JAX initialises and when a kernel is decorated, so
they are set here, before any test module imports either:

* 8 simulated CPU devices (tests that need fewer workers use a mesh over a prefix of them);
* JAX on the CPU unless ``JAX_PLATFORMS`` says otherwise (``JAX_PLATFORMS=cuda`` runs the GPU
  tests in ``tests/test_kernels_gpu.py``);
* on the CPU, Triton kernels run under its interpreter (``TRITON_INTERPRET=1``) on torch CPU tensors;
* without the trainer's extra (``pip install -e .[test]`` alone: jax, optax, numpy and the test
  tools), the library's tests in ``tests/`` run and the trainer's (``tests/train/``, the
  benchmarks' doctests) are left out;
* JAX's persistent compilation cache in a folder of this session, inherited by the processes the
  tests start: many tests compile the same train step (the same model, config and mesh), and
  reading it back instead cuts the trainer tests' time by a third. The folder starts empty, so
  every session compiles each program once; it is removed at the end.
"""

import atexit
import importlib.util
import os
import shutil
import tempfile

NUM_DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ["JAX_PLATFORMS"] == "cpu":
  os.environ.setdefault("TRITON_INTERPRET", "1")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="signvote-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # Even the small steps of the tests.

# What the trainer imports beyond the library (pyproject.toml's "train" extra).
TRAINER_INSTALLED = all(importlib.util.find_spec(name) is not None
                        for name in ("flax", "tensorflow_datasets", "grain", "orbax", "ml_collections"))
TRAINER_PATHS = ["tests/train", "benchmarks", "train", "configs"]
collect_ignore = [] if TRAINER_INSTALLED else TRAINER_PATHS
# Globs too, so that they apply below the folders pyproject.toml names as test paths.
collect_ignore_glob = [] if TRAINER_INSTALLED else [f"{path}/*" for path in TRAINER_PATHS]
