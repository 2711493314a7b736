"""The trainer's one error type for bad input."""


class ConfigError(ValueError):
  """A config, dataset, device count or workdir the trainer cannot run with; the message says why and what to do."""
