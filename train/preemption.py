"""Preemption: SIGTERM (a scheduler's notice) or SIGINT stops every process of a job after one step.

SLURM, Kubernetes and spot VMs announce a preemption with SIGTERM and kill the process a grace
period later; Ctrl-C is SIGINT. Either makes the job finish the step every process agrees on, save a
checkpoint there and exit with 128 + the signal (143, 130), so that rerunning the same command
resumes bit-identically.

In a job of several processes JAX's preemption service catches SIGTERM: it passes the notice to
every process through the coordinator, and ``multihost_utils.reached_preemption_sync_point`` turns
true on all of them at the same step (one past the furthest any had reached). SIGINT is handed to
it as a SIGTERM to this process. A lone process notes either signal itself. A second signal of the
same kind ends the process at once.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """Installed (as a context manager) around a training loop that asks :meth:`reached` every step."""

  def __init__(self):
    self.received: int | None = None  # The first signal this process received.
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # Python handles signals there only.
      shared = jax.process_count() > 1  # SIGTERM belongs to JAX's preemption service then.
      for signum in (signal.SIGINT,) if shared else SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    signal.signal(signum, signal.SIG_DFL)  # The second one is not waited for.
    if self.received is None:
      self.received = signum
    if jax.process_count() > 1:
      os.kill(os.getpid(), signal.SIGTERM)  # To JAX's preemption service, which tells the other processes.

  def reached(self, step: int) -> bool:
    """Whether the job stops after ``step``: called by every process at every step, in order."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None

  @property
  def exit_status(self) -> int:
    """128 + the signal, as a shell reports a process it ended (SIGTERM where another process got it)."""
    return 128 + (self.received or signal.SIGTERM)


class Preempted(Exception):
  """The job stopped after ``step`` for a preemption, its checkpoint saved (if the run saves any)."""

  def __init__(self, step: int, exit_status: int, saved: bool):
    super().__init__(step, exit_status, saved)
    self.step, self.exit_status, self.saved = step, exit_status, saved

  def __str__(self):
    name = signal.Signals(self.exit_status - 128).name
    if self.saved:
      return f"stopped by {name} after step {self.step}, its checkpoint saved; rerun the same command to resume."
    return (f"stopped by {name} after step {self.step}; nothing saved (checkpoint_every=0), so a rerun starts over.")
