"""One job per workdir: a lock held for the life of the run, and the config that wrote its results.

A workdir's ``metrics.jsonl``, ``summary.json``, ``curves.png`` and checkpoints are one run's (or
one run's and its resumptions'). Two jobs writing into one workdir would interleave their lines and
overwrite each other's checkpoints, and a rerun with another config would replace the results
without a word. So process 0 holds ``flock`` on ``workdir/lock`` while the job runs (the kernel
releases it when the process ends, however it ends) and keeps the run's config in
``workdir/config.json``; a run whose config differs from the recorded one in anything but the
fields a resume may change (:data:`train.config_checks.RESUMABLE_FIELDS`) is refused, checkpoints
or not.
"""

import contextlib
import fcntl
import json
import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from train import config_checks, distributed
from train.errors import ConfigError

LOCK_FILE, CONFIG_FILE = "lock", "config.json"
# What a run writes into its workdir besides those (train/reporting.py, train/checkpoints.py).
RESULT_FILES, CHECKPOINTS = ("metrics.jsonl", "summary.json", "curves.png"), "checkpoints"


def check_workdir(workdir: str) -> None:
  """The workdir must be a directory this process can create and write; a ConfigError if not.

  Nothing is created: a run that stops on bad input leaves no empty workdir behind.
  """
  if not workdir:
    raise ConfigError("the workdir is empty; pass --workdir=DIR, a directory for checkpoints and metrics.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"the workdir {workdir!r} is a file; pass a directory.")
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if existing == os.path.abspath(workdir) and not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"the workdir {workdir!r} is not writable; pass a directory you can write.")
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"cannot create the workdir {workdir!r}: {existing!r} is not a directory you can write; "
                      "pass a directory you can write.")


@contextlib.contextmanager
def claim_workdir(workdir: str, config):
  """Holds ``workdir`` for one job: creates it, locks it and checks and records the config.

  Process 0 does the file work; the job's other processes learn its outcome, so that every
  process stops with its own one-line ``ConfigError`` when the workdir is refused.
  """
  problem, lock = "", None
  if distributed.is_leader():
    try:
      os.makedirs(workdir, exist_ok=True)
      lock = _lock(workdir)
      _check_and_record(workdir, config)
    except ConfigError as e:
      problem = str(e)
    except OSError as e:
      problem = f"cannot write the workdir {workdir!r}: {e.strerror}; pass a directory you can write."
  if jax.process_count() > 1:  # Every process must stop, not process 0 alone.
    refused = multihost_utils.broadcast_one_to_all(np.int32(bool(problem)))
    if refused and not problem:
      problem = f"process 0 refused the workdir {workdir!r} (its error line says why)."
  if problem:
    if lock is not None:
      os.close(lock)
    raise ConfigError(problem)
  try:
    yield
  finally:
    if lock is not None:
      os.close(lock)  # Releases the flock.


def _lock(workdir: str) -> int:
  """An exclusive ``flock`` on ``workdir/lock``, with who holds it written inside; a ConfigError naming
  the holder if another process has it."""
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that has not said who it is"
    os.close(fd)
    raise ConfigError(  # pylint: disable=raise-missing-from
        f"the workdir {workdir!r} is in use by another run ({holder}); wait for it to end, stop it, "
        "or pass another --workdir.")
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            .encode(), 0)
  return fd


def recorded_config(workdir: str) -> dict | None:
  """The config ``workdir/config.json`` records (None if there is none); a ConfigError if it is unreadable."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(
        f"the workdir's {path!r} is unreadable ({type(e).__name__}); it records the config of the results "
        "there: restore it, or pass another --workdir.") from e
  if not isinstance(saved, dict):
    raise ConfigError(f"the workdir's {path!r} holds no config (a JSON object); restore it, or pass another --workdir.")
  return saved


def _check_and_record(workdir: str, config) -> None:
  for name in (*RESULT_FILES, CONFIG_FILE):
    if os.path.isdir(os.path.join(workdir, name)):
      raise ConfigError(f"{os.path.join(workdir, name)!r} is a directory where the run writes a file; "
                        "move it away, or pass another --workdir.")
  folder = os.path.join(workdir, CHECKPOINTS)
  if os.path.lexists(folder) and not os.path.isdir(folder):
    raise ConfigError(f"{folder!r} is a file where the run keeps its checkpoints; move it away, or pass another --workdir.")
  saved = recorded_config(workdir)
  if saved is not None:
    config_checks.check_resume(saved, config, what="results")
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:  # Renamed into place: never a torn record.
    json.dump(config_checks.config_to_json(config), f, indent=2)
  os.replace(path + ".tmp", path)
