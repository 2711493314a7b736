"""``python -m train --config=configs/<name>.py --workdir=DIR [--config.key=value ...]``.

Multi-host: start one process per host with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or the environment, or JAX's cluster detection); ``python -m train.launch``
starts N local processes for tests and demos.
"""

import importlib.util
import os
import re
import sys

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from train import distributed
from train.errors import ConfigError, StorageError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, summary.json and curves.png.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 of a multi-process job.")
flags.DEFINE_integer("num_processes", None, "Processes in the job (default: 1, or the environment).")
flags.DEFINE_integer("process_id", None, "This process's index in the job.")
flags.DEFINE_integer("join_timeout", 300, "Seconds a process waits for the others to join before it gives up.")
flags.DEFINE_integer("heartbeat_timeout", 30, "Seconds without a heartbeat after which a process fails the job.")
flags.DEFINE_bool("show_config", False, "Print every config field with its value and meaning (from configs/default.py), "
                  "the overrides applied, and exit.")
flags.mark_flags_as_required(["config"])


def cannot_load(path) -> str:
  return f"error: cannot load the config file {path!r}; pass --config=configs/<name>.py from the repository root."


def check_config_file(spec: str) -> str | None:
  """What is wrong with the config file ``spec`` (``path`` or ``path:argument``, as ml_collections
  reads it), as one ``error:`` line; None if its ``get_config`` returns a ConfigDict.

  The file is run here once before absl loads it, so that what its own code raises is reported as
  the file's fault, and what absl raises afterwards can only be about the overrides.
  """
  path, _, argument = spec.partition(":")
  if not os.path.isfile(path):
    return cannot_load(spec)
  try:
    module_spec = importlib.util.spec_from_file_location("_checked_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    return f"error: the config file {path!r} has a syntax error at line {e.lineno}: {e.msg}."
  except Exception as e:  # pylint: disable=broad-exception-caught  (whatever the file's own code raises)
    return f"error: the config file {path!r} raised {type(e).__name__} when loaded: {e}."
  if not callable(getattr(module, "get_config", None)):
    return (f"error: the config file {path!r} has no get_config(); a config defines get_config() returning "
            "an ml_collections.ConfigDict (see configs/default.py).")
  call = f"get_config({argument!r})" if argument else "get_config()"
  try:
    config = module.get_config(argument) if argument else module.get_config()
  except Exception as e:  # pylint: disable=broad-exception-caught
    return f"error: {call} of the config file {path!r} raised {type(e).__name__}: {e}."
  if not isinstance(config, ml_collections.ConfigDict):
    return (f"error: {call} of the config file {path!r} returned a {type(config).__name__}, not an "
            "ml_collections.ConfigDict (see configs/default.py).")
  return None


def unknown_key(error: Exception, argv) -> str:
  """ml_collections' message for an override of a missing field (``'key'`` and perhaps a line
  ``Did you mean "k"...``), as one line naming the whole override."""
  while error.args and isinstance(error.args[0], BaseException):  # An AttributeError wrapping a KeyError.
    error = error.args[0]
  name, _, hint = str(error.args[0] if error.args else error).partition("\n")
  name = name.strip("'\"")
  key = next((a[len("--config."):].split("=", 1)[0] for a in argv
              if a.startswith("--config.") and a.split("=", 1)[0].split(".")[-1] == name), name)
  suggestion = re.search(r'Did you mean "([^"]+)"', hint)
  parent = key[: -len(name)]  # "faults." for faults.kin
  suggested = parent + suggestion.group(1) if suggestion else moved_field(key)
  did_you_mean = f" (did you mean {suggested!r}?)" if suggested else ""
  return f"error: unknown config key {key!r}{did_you_mean}; every field must be one of configs/default.py."


def moved_field(key: str) -> str | None:
  """The field of configs/default.py that ends like ``key`` in another section (``strategy`` is
  ``vote.strategy`` since the vote's options have their own section), if there is one."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from train import config_checks  # pylint: disable=import-outside-toplevel  (it imports JAX: only on this error)

  leaf = key.rsplit(".", 1)[-1]
  return next((k for k in config_checks.flatten(default.get_config()) if k.rsplit(".", 1)[-1] == leaf), None)


def parse_flags(argv):
  """absl's parsing, with a bad config file or ``--config.key=value`` reported in one line."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  problem = spec and check_config_file(spec)
  if problem:
    sys.exit(problem)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except (AttributeError, KeyError) as e:  # The file loads (checked above): an override names no field.
    sys.exit(unknown_key(e, argv))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; config fields are set as --config.key=value.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
    quiet_the_fallout_of_failed_saves()
  config = FLAGS.config
  if FLAGS.show_config:
    from train import show_config  # pylint: disable=import-outside-toplevel

    print(show_config.describe(config))
    return
  if FLAGS.workdir is None:
    sys.exit("error: pass --workdir=DIR, a directory for checkpoints and metrics (or --show_config to list the config).")
  job = distributed.Job()  # Until this process has joined its job, it ends alone.
  try:
    job = distributed.initialize(
        num_workers=config.num_workers,
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
        join_timeout=FLAGS.join_timeout,
        heartbeat_timeout=FLAGS.heartbeat_timeout,
    )
    # Imported only once the devices are set: JAX's users.
    from train.preemption import Preempted, Preemption  # pylint: disable=import-outside-toplevel
    from train.train import train_and_evaluate  # pylint: disable=import-outside-toplevel

    try:
      summary = train_and_evaluate(config, FLAGS.workdir, Preemption())
    except Preempted as e:
      job.leave()
      if distributed.is_leader():
        print(e, file=sys.stderr, flush=True)
      sys.exit(e.exit_status)
    job.leave()
  except (ConfigError, StorageError, FloatingPointError, distributed.JoinError) as e:
    job.fail(f"error: {e}")  # Bad input, a full disk, a diverged run, a lone process.
  except Exception as e:  # pylint: disable=broad-exception-caught
    if distributed.lost_a_peer(e):
      job.lost_a_peer(e)
    job.fail(None)  # A defect of ours: its traceback is what a bug report needs.
  if summary["process_index"] == 0:
    print(done_message(summary, FLAGS.workdir))


def quiet_the_fallout_of_failed_saves() -> None:
  """Keeps what a failed checkpoint write sprays from background threads off the terminal.

  Orbax's threads log the failure with its traceback at every layer, and tensorstore's callbacks
  then meet asyncio's closed event loop; the trainer reports the failure itself, in one line
  (:class:`train.errors.StorageError`). ``--verbosity`` shows them all again.
  """
  logging.get_absl_handler().addFilter(
      lambda record: not (record.levelno >= logging.converter.STANDARD_ERROR and "/orbax/" in record.pathname))
  printed = sys.unraisablehook

  def unraisablehook(unraisable):
    if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
      printed(unraisable)

  sys.unraisablehook = unraisablehook


def done_message(summary: dict, workdir: str) -> str:
  """What the run did, in one line: steps trained, where it resumed from, and the test accuracy."""
  resumed = summary["resumed_from_step"]
  trained = f"{summary['steps_trained']} steps trained" + (f" after resuming from step {resumed}" if resumed else "")
  accuracy = summary["test_accuracy"]
  result = "no test accuracy (non-finite)" if accuracy is None else f"test accuracy {accuracy:.4f}"
  return f"{result} at step {summary['steps']} ({trained}); see {workdir}"


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
