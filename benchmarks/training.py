"""Training runs for the benchmarks: a config with overrides, run in-process, its summary and metrics."""

import contextlib
import json
import os
import tempfile

import jax
from jax.experimental.compilation_cache import compilation_cache

from train import train


@contextlib.contextmanager
def compile_cache():
  """Runs that differ only in seeds or fault lists compile the same programs: compile each once.

  A persistent compilation cache in a temporary folder for the duration; the previous settings are
  restored after (an importing process, such as the test suite, keeps its own).
  """
  options = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
  saved = {name: getattr(jax.config, name) for name in options}
  with tempfile.TemporaryDirectory() as folder:
    try:
      for name, value in {**options, "jax_compilation_cache_dir": folder}.items():
        jax.config.update(name, value)
      compilation_cache.reset_cache()  # JAX reads the settings when it first compiles after this.
      yield
    finally:
      for name, value in saved.items():
        jax.config.update(name, value)
      compilation_cache.reset_cache()  # Nothing may write into the folder once it is gone.


def run(config, overrides: dict) -> tuple[dict, list[dict]]:
  """Trains ``config`` with ``overrides`` (dotted keys as in ``--config.a.b``) in a fresh workdir.

  Returns the run's summary and the records of its metrics.jsonl.
  """
  config = config.copy_and_resolve_references()
  config.update_from_flattened_dict(overrides)
  config.progress_bar = False
  with tempfile.TemporaryDirectory() as workdir:
    summary = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
  return summary, records
