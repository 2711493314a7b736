"""Pytest set-up shared by the tests and the doctests.

XLA and Triton read these variables once, when JAX initialises and when a kernel is decorated, so
they are set here, before any test module imports either:

* 8 simulated CPU devices (tests that need fewer workers use a mesh over a prefix of them);
* JAX on the CPU unless ``JAX_PLATFORMS`` says otherwise (``JAX_PLATFORMS=cuda`` runs the GPU
  tests in ``tests/test_kernels_gpu.py``);
* on the CPU, Triton kernels run under its interpreter (``TRITON_INTERPRET=1``) on torch CPU tensors.
"""

import os

NUM_DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ["JAX_PLATFORMS"] == "cpu":
  os.environ.setdefault("TRITON_INTERPRET", "1")
