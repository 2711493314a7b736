"""Training runs for the benchmarks: a config with overrides, run in-process, its summary and metrics."""

import json
import os
import tempfile

import jax

from train import config_checks, train


def enable_compile_cache(path: str) -> None:
  """Runs that differ only in seeds or fault lists compile the same program: compile it once."""
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(config, overrides: dict) -> tuple[dict, list[dict]]:
  """Trains ``config`` with ``overrides`` (dotted keys as in ``--config.a.b``) in a fresh workdir.

  Returns the run's summary and the records of its metrics.jsonl.
  """
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    config_checks.set_field(config, key, value)
  config.progress_bar = False
  with tempfile.TemporaryDirectory() as workdir:
    summary = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
  return summary, records
