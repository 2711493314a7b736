"""The trainer's error types for what it reports in one line instead of a traceback, and the
words it takes from the errors of the libraries below it."""

import contextlib
import os
import re


class ConfigError(ValueError):
  """A config, dataset, device count or workdir the trainer cannot run with; the message says why and what to do."""


class StorageError(RuntimeError):
  """The workdir could not be written (a full disk, a file in the way); what was written before it is intact."""


@contextlib.contextmanager
def library_errors(section: str):
  """Turns what the library refuses in ``config.<section>`` (its ValueError, which names the bad
  value and the valid ones) into the trainer's one-line ``ConfigError``: the one place where the
  library's checks of the config's values reach the user."""
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"config.{section}: {e}") from None


def first_line(error: BaseException) -> str:
  """The first line of ``error``'s text that says something (runtime errors run to many lines), else its type."""
  return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def reason(error: BaseException) -> str:
  """The operating system's reason behind ``error`` or an error it was raised from (e.g. "No space
  left on device"), else its type and first line."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror
    code = re.search(r"os_error_code='(\d+)'", str(seen))  # Tensorstore's errors carry the errno in their text.
    if code:
      return os.strerror(int(code.group(1)))
    seen = seen.__cause__ or seen.__context__
  return f"{type(error).__name__}: {first_line(error)[:200]}"
