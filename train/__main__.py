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
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's parsing, with a bad config file or ``--config.key=value`` reported in one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except (AttributeError, KeyError) as e:
    key = str(e).strip("'\"")
    sys.exit(f"error: unknown config key {key!r}; every field must be one of configs/default.py.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; config fields are set as --config.key=value.")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
  config = FLAGS.config
  if not isinstance(config, ml_collections.ConfigDict):  # A stand-in that raises once it is used.
    path = config_flags.get_config_filename(FLAGS["config"])
    sys.exit(f"error: cannot load the config file {path!r}; pass --config=configs/<name>.py from the repository root.")
  try:
    distributed.initialize(
        num_workers=config.num_workers,
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    from train.train import train_and_evaluate  # Imports JAX's users only after the devices are set.

    summary = train_and_evaluate(config, FLAGS.workdir)
  except (ConfigError, FloatingPointError) as e:  # Bad input, or a run that diverged.
    sys.exit(f"error: {e}")
  if summary["test_accuracy"] is not None and summary["process_index"] == 0:
    print(f"test accuracy {summary['test_accuracy']:.4f} after {summary['steps']} steps; see {FLAGS.workdir}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
