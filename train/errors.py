"""The trainer's error types for what it reports in one line instead of a traceback."""


class ConfigError(ValueError):
  """A config, dataset, device count or workdir the trainer cannot run with; the message says why and what to do."""


class StorageError(RuntimeError):
  """The workdir could not be written (a full disk, a file in the way); what was written before it is intact."""
