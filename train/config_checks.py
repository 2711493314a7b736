"""Checks a config before anything runs: one ``ConfigError`` that says what is wrong and what to do."""

import json

import ml_collections

from configs import default
from train.errors import ConfigError
from train.optimizers import OPTIMIZERS

# Reading threads per process: beyond this many, threads only contend for the host's cores.
MAX_DATA_THREADS = 64

# Fields that may change when a run resumes from its workdir: how long and how often, not what.
# The worker count too (elastic resume, see train/checkpoints.py): what a worker computes does not
# depend on how many there are, and their per-worker state is remapped.
RESUMABLE_FIELDS = frozenset({
    "num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every", "checkpoints_to_keep",
    "progress_bar", "num_data_threads", "data_dir", "manual_dir",
    "num_workers", "workers_per_host", "eval_batch_size",
})


def flatten(config, prefix="") -> dict:
  out = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_keys(config) -> None:
  """Every field of ``config`` must be one of ``configs/default.py``."""
  known = flatten(default.get_config())
  unknown = sorted(set(flatten(config)) - set(known))
  if unknown:
    raise ConfigError(
        f"unknown config key(s) {unknown}; every field must be one of configs/default.py "
        f"(e.g. {sorted(known)[:6]}...)."
    )


def check_values(config) -> None:
  """The trainer's own values that no device layout could run (the vote's, ``config.vote`` and
  ``config.faults``, are the library's to check: :func:`train.optimizers.create_vote`)."""
  def require(ok, message):
    if not ok:
      raise ConfigError(message)

  require(config.optimizer in OPTIMIZERS, f"unknown optimizer {config.optimizer!r}; valid optimizers are {OPTIMIZERS}.")
  for field in ("num_workers", "per_worker_batch_size", "eval_batch_size", "log_every", "eval_every",
                "checkpoints_to_keep", "num_data_threads", "width", "qrnn_hidden", "qrnn_layers", "image_size", "bptt"):
    require(config[field] >= 1, f"{field}={config[field]} must be a positive integer.")
  require(config.num_data_threads <= MAX_DATA_THREADS,
          f"num_data_threads={config.num_data_threads} is more than {MAX_DATA_THREADS}; threads beyond the "
          "host's cores only contend for them (a few per core is plenty): lower it.")
  require(0 <= config.seed < 2**31, f"seed={config.seed} must be in [0, 2**31): it seeds numpy, grain and jax alike.")
  require(config.checkpoint_every >= 0,
          f"checkpoint_every={config.checkpoint_every} must be a positive integer, or 0 for no checkpoints.")
  require(config.num_steps > 0 or config.num_epochs > 0, "set num_steps > 0 or num_epochs > 0: the run has no steps.")
  late = config.late_from_epochs > 0
  for field, ok, valid in (
      ("learning_rate", config.learning_rate > 0, "> 0"),
      ("late_learning_rate", not late or config.late_learning_rate > 0, "> 0 (with late_from_epochs > 0)"),
      ("b1", 0 <= config.b1 < 1, "in [0, 1)"),
      ("late_b1", not late or 0 <= config.late_b1 < 1, "in [0, 1) (with late_from_epochs > 0)"),
      ("b2", 0 <= config.b2 < 1, "in [0, 1)"),
      ("weight_decay", config.weight_decay >= 0, ">= 0"),
      ("lr_decay_factor", 0 < config.lr_decay_factor <= 1, "in (0, 1]"),
      ("warmup_epochs", config.warmup_epochs >= 0, ">= 0 (0 turns warm-up off)"),
      ("dropout_rate", 0 <= config.dropout_rate < 1, "in [0, 1)"),
  ):
    require(ok, f"{field}={config[field]!r} must be {valid}.")


def is_fault_experiment(config) -> bool:
  """Whether ``config`` makes some workers (or voters) faulty: such a run may produce non-finite
  losses and parameters (which stop any other run) and save them in its checkpoints."""
  return bool(config.faults.kind or config.faults.voter_kind)


def check_devices(config, process_count: int, local_device_count: int) -> None:
  """The workers must spread evenly over the processes, one device each."""
  if config.num_workers % process_count:
    raise ConfigError(
        f"num_workers={config.num_workers} does not spread evenly over {process_count} processes; "
        f"use a multiple of {process_count}."
    )
  per_process = config.num_workers // process_count
  if per_process > local_device_count:
    raise ConfigError(
        f"num_workers={config.num_workers} needs {per_process} devices per process, but this process "
        f"has {local_device_count}; lower num_workers, add processes, or on the CPU let "
        "`python -m train` simulate the devices (in-process callers set "
        "XLA_FLAGS=--xla_force_host_platform_device_count before JAX starts)."
    )


def check_resume(saved: dict, config, what: str = "checkpoint") -> None:
  """A workdir's ``what`` (its checkpoint, or its results) must come from ``config``, up to ``RESUMABLE_FIELDS``."""
  here = flatten(ml_collections.ConfigDict(config_to_json(config)))
  there = flatten(ml_collections.ConfigDict(saved))
  newer = sorted(set(here) - set(there))
  if newer:  # Its state has another structure too: refuse it, rather than read it as damaged.
    raise ConfigError(
        f"the workdir's {what} came from an older version of the trainer (its config has no "
        f"{', '.join(newer)}); resume it with that version, or use a new --workdir."
    )
  changed = sorted(k for k in set(here) | set(there) if k not in RESUMABLE_FIELDS and here.get(k) != there.get(k))
  if changed:
    diffs = ", ".join(f"{k}: {there.get(k)!r} there, {here.get(k)!r} here" for k in changed)
    raise ConfigError(
        f"the workdir's {what} came from a different config ({diffs}); use a new --workdir, "
        "or that config to resume it."
    )


def config_to_json(config) -> dict:
  """``config`` as plain JSON values (tuples become lists), as a checkpoint stores it."""
  return json.loads(config.to_json())
