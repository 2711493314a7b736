"""Pytest set-up shared by the tests and the doctests.

XLA and Triton read these variables once, when JAX initialises and when a kernel is decorated, so
they are set here, before any test module imports either:

* 8 simulated CPU devices (tests that need fewer workers use a mesh over a prefix of them);
* JAX on the CPU unless ``JAX_PLATFORMS`` says otherwise (``JAX_PLATFORMS=cuda`` runs the GPU
  tests in ``tests/test_kernels_gpu.py``);
* on the CPU, Triton kernels run under its interpreter (``TRITON_INTERPRET=1``) on torch CPU tensors;
* JAX's persistent compilation cache in a folder of this session, inherited by the processes the
  tests start: many tests compile the same train step (the same model, config and mesh), and
  reading it back instead cuts the trainer tests' time by a third. The folder starts empty, so
  every session compiles each program once; it is removed at the end.
"""

import atexit
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
