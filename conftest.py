"""Pytest set-up shared by the tests and the doctests: 8 simulated CPU devices.

XLA reads the flag once, when JAX first initialises, so it is set here, before any test module
imports JAX. Tests that need fewer workers use a mesh over a prefix of the devices.
"""

import os

NUM_DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
