"""Keeps JAX's runtime from ending a process of a job with a stack dump: ``python -m train.guard``.

When a job loses process 0, which hosts JAX's coordinator, JAX's runtime aborts every other process
from C++: error lines, a fatal line and a stack dump of some 90 lines, naming no process. The roll
call (:mod:`train.desk`) usually says it first, in one line, and ends the process; but it races the
runtime, which learns of the loss from the same closed connection. So each process of a job of
several sends what is written below Python to its standard error (file descriptor 2: the logs of
JAX's runtime and of gloo) through this guard, a small process that passes it on line by line,
except the runtime's fatal report. It holds the runtime's error lines (and its warnings of a lost
connection) back for a moment and drops them if a fatal line follows; and when the process ends
after a fatal line without having said its own error line, the guard says in one line what the
runtime saw. Python's own writes (``sys.stderr``: the trainer's lines, the progress bar) go
straight to the terminal.
"""

import atexit
import os
import re
import select
import signal
import subprocess
import sys
import time

SAID = b"\x1esignvote-jax: said its line\n"  # Written by the process before it ends with its own error line.
_RUNTIME_LOG = re.compile(rb"([WE])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ ]+\.(cc|h):\d+\] ")  # JAX's C++ runtime's prefix.
_FATAL = re.compile(rb"F\d{4} ")
QUIET = 0.5  # Seconds after which held-back lines that no fatal line followed are passed on.

_guard: "tuple[subprocess.Popen, int] | None" = None  # This process's guard and the terminal's descriptor.


def install(process_id: int, num_processes: int) -> None:
  """Sends this process's file descriptor 2 through a guard, and ``sys.stderr`` straight to where fd 2 went."""
  global _guard  # pylint: disable=global-statement  (one per process, like file descriptor 2 itself)
  terminal = os.dup(2)
  read, write = os.pipe()
  try:
    process = subprocess.Popen([sys.executable, "-m", "train.guard", str(process_id), str(num_processes)],  # pylint: disable=consider-using-with
                               stdin=read, stdout=terminal, stderr=terminal, close_fds=True)
  except OSError:  # No guard (no processes left to this user, say): the process runs with fd 2 as it was.
    for descriptor in (terminal, read, write):
      os.close(descriptor)
    return
  os.close(read)
  sys.stderr.flush()
  os.dup2(write, 2)
  os.close(write)
  sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, errors="backslashreplace")
  _guard = process, terminal
  atexit.register(release)  # Runs before JAX's shutdown (registered earlier): what it logs goes straight out.


def release(wait: float = 2.0, *, ending: bool = False) -> None:
  """Lets the guard pass on the rest and end, so that nothing this process wrote comes after its
  end (after a launcher's last line, say). File descriptor 2 goes back to the terminal, or where
  the process is ``ending`` (it said its line) to /dev/null: the runtime's report of the same loss
  may still be on its way."""
  global _guard  # pylint: disable=global-statement
  if _guard is not None:
    process, terminal = _guard
    _guard = None
    if ending:
      terminal = os.open(os.devnull, os.O_WRONLY)
    os.dup2(terminal, 2)
    try:
      process.wait(wait)
    except subprocess.TimeoutExpired:
      pass


def said() -> None:
  """Tells the guard that this process has said its own error line (so the guard says none)."""
  if _guard is not None:
    try:
      os.write(2, SAID)
    except OSError:
      pass


def _may_precede_a_fatal(line: bytes) -> bool:
  """An error of JAX's C++ runtime, or a warning that it lost a connection (held back a moment)."""
  logged = _RUNTIME_LOG.match(line)
  return bool(logged) and (logged.group(1) == b"E" or b"UNAVAILABLE" in line)


def lost_process(report: bytes) -> int | None:
  """The process that JAX's fatal report says was lost: a task it names, or process 0 (the leader)."""
  named = re.search(rb"task:(\d+)", report)
  if named:
    return int(named.group(1))
  return 0 if re.search(rb"leader|coordination service|Socket closed", report) else None


def guard(process_id: int, num_processes: int, source: int = 0, sink: int = 1) -> None:
  """Passes ``source`` to ``sink`` until the end of ``source``, as the module's docstring says."""
  held, report, said_its_line, buffer, heard = [], b"", False, b"", time.monotonic()
  while True:
    ready = select.select([source], [], [], QUIET if held else None)[0]
    if not ready:
      if time.monotonic() - heard >= QUIET:
        os.write(sink, b"".join(held))
        held = []
      continue
    data = os.read(source, 65536)
    if not data:
      break
    heard = time.monotonic()
    *lines, buffer = (buffer + data).split(b"\n")
    for line in (line + b"\n" for line in lines):
      if line == SAID:
        said_its_line = True
      elif report or _FATAL.match(line):
        report += b"".join(held) + line  # The fatal line, the lines held before it and all after: the stack dump.
        held = []
      elif held or _may_precede_a_fatal(line):
        held.append(line)
      else:
        os.write(sink, line)
  if not report:
    os.write(sink, (b"" if said_its_line else b"".join(held)) + buffer)
  elif not said_its_line:
    lost = lost_process(report)
    who = "another process" if lost is None else f"process {lost}"
    fatal = next(line for line in report.splitlines() if _FATAL.match(line))
    cause = fatal.split(b"] ", 1)[-1].decode(errors="replace")[:160]
    os.write(sink, (f"error: process {process_id} of {num_processes} lost {who}: JAX's runtime ended this process "
                    f"({cause}); rerun the job to resume from its last checkpoint.\n").encode())


if __name__ == "__main__":
  for _signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signal, signal.SIG_IGN)  # It ends when the process it guards does, with all it wrote.
  guard(int(sys.argv[1]), int(sys.argv[2]))
