"""``python -m train --config=configs/<name>.py --workdir=DIR [--config.key=value ...]``.

Multi-host: start one process per host with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or the environment, or JAX's cluster detection); ``python -m train.launch``
starts N local processes for tests and demos.
"""

import sys

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from train import distributed
from train.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, summary.json and curves.png.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 of a multi-process job.")
flags.DEFINE_integer("num_processes", None, "Processes in the job (default: 1, or the environment).")
flags.DEFINE_integer("process_id", None, "This process's index in the job.")
flags.DEFINE_integer("join_timeout", 300, "Seconds a process waits for the others to join before it gives up.")
flags.DEFINE_integer("heartbeat_timeout", 30, "Seconds without a heartbeat after which a process fails the job.")
flags.mark_flags_as_required(["config", "workdir"])


def cannot_load(path) -> str:
  return f"error: cannot load the config file {path!r}; pass --config=configs/<name>.py from the repository root."


def parse_flags(argv):
  """absl's parsing, with a bad config file or ``--config.key=value`` reported in one line."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except SyntaxError as e:
    sys.exit(f"error: the config file {path!r} has a syntax error at line {e.lineno}: {e.msg}.")
  except OSError:  # A missing file, found once an override is applied to it.
    sys.exit(cannot_load(path))
  except (AttributeError, KeyError) as e:
    if "get_config" in str(e):
      sys.exit(f"error: the config file {path!r} has no get_config(); a config defines get_config() returning "
               "an ml_collections.ConfigDict (see configs/default.py).")
    key = str(e).strip("'\"")
    sys.exit(f"error: unknown config key {key!r}; every field must be one of configs/default.py.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; config fields are set as --config.key=value.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
  config = FLAGS.config
  if not isinstance(config, ml_collections.ConfigDict):  # A stand-in that raises once it is used.
    sys.exit(cannot_load(config_flags.get_config_filename(FLAGS["config"])))
  try:
    distributed.initialize(
        num_workers=config.num_workers,
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
        join_timeout=FLAGS.join_timeout,
        heartbeat_timeout=FLAGS.heartbeat_timeout,
    )
    from train.train import train_and_evaluate  # Imports JAX's users only after the devices are set.

    summary = train_and_evaluate(config, FLAGS.workdir)
  except (ConfigError, FloatingPointError, distributed.JoinError) as e:  # Bad input, a diverged run, a lone process.
    sys.exit(f"error: {e}")
  if summary["process_index"] == 0:
    print(done_message(summary, FLAGS.workdir))


def done_message(summary: dict, workdir: str) -> str:
  """What the run did, in one line: steps trained, where it resumed from, and the test accuracy."""
  resumed = summary["resumed_from_step"]
  trained = f"{summary['steps_trained']} steps trained" + (f" after resuming from step {resumed}" if resumed else "")
  accuracy = summary["test_accuracy"]
  result = "no test accuracy (non-finite)" if accuracy is None else f"test accuracy {accuracy:.4f}"
  return f"{result} at step {summary['steps']} ({trained}); see {workdir}"


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
