"""Measurement scripts (``python -m benchmarks.<name>``); their committed results are in ``results/``."""

import os

_FLAG = "--xla_force_host_platform_device_count"


def simulate_cpu_devices(count: int) -> None:
  """Asks for ``count`` simulated CPU devices unless XLA_FLAGS already sets a number.

  Must run before JAX starts its backends, so each script calls it before importing jax when it
  runs as ``__main__`` (an importing process, such as the test suite, keeps its own devices).
  """
  if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}={count}".strip()
