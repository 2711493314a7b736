"""The guard of a process's standard error: everything passes but JAX's fatal report, which becomes
one line naming the lost process unless the process said its own."""

import os
import subprocess
import sys
import threading
import time

import pytest

from train import guard

# What JAX's runtime wrote on a survivor when process 0 was killed (jaxlib 0.10, shortened).
LOST_THE_LEADER = b"""\
W1204 08:11:29.937146    1232 preemption_sync_manager.cc:147] Failed to retrieve preemption notice from coordination service: UNAVAILABLE: Socket closed
E1204 08:11:29.937347    1232 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1204 08:11:29.937353    1232 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
*** Check failure stack trace: ***
    @     0x7fddcea20634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
    @     0x7fddcaae40ee  xla::CoordinationServiceAgent::SetError()
"""
# What process 0 wrote when process 1 stopped answering (JAX's heartbeat timeout).
LOST_A_TASK = b"""\
E1204 07:57:47.255099   24501 coordination_service.cc:1549] Use error polling to propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
/job:jax_worker/replica:0/task:1
F1204 07:57:47.255663   24512 client.h:80] Terminating process because the JAX distributed service detected fatal errors.
*** Check failure stack trace: ***
"""
BEFORE = (b"[Gloo] Rank 1 is connected to 1 peer ranks.\nW1204 08:00:00.000000    1 xla.cc:1] a warning\n"
          b"E1204 08:00:00.000000    1 xla.cc:1] an error\nmore of it\n")


def guarded(*chunks: bytes, process_id=1) -> bytes:
  """What the guard of process ``process_id`` of 2 passes on of ``chunks``, written a moment apart."""
  source, into = os.pipe()
  out, sink = os.pipe()

  def write():
    for i, chunk in enumerate(chunks):
      time.sleep(1.5 * guard.QUIET if i else 0)
      os.write(into, chunk)
    os.close(into)

  writer = threading.Thread(target=write)
  writer.start()
  guard.guard(process_id, 2, source, sink)
  writer.join()
  os.close(source)
  os.close(sink)
  with os.fdopen(out, "rb") as passed:
    return passed.read()


def test_everything_but_a_fatal_report_passes_unchanged():
  assert guarded(BEFORE, b"a last line without its newline") == BEFORE + b"a last line without its newline"
  assert guarded(BEFORE + b"a last line") == BEFORE + b"a last line"  # Held lines pass at the end too.


@pytest.mark.parametrize("report, lost, process_id", [(LOST_THE_LEADER, 0, 1), (LOST_A_TASK, 1, 0)])
def test_a_fatal_report_becomes_one_line_naming_the_lost_process(report, lost, process_id):
  lines = guarded(BEFORE, report, process_id=process_id).decode().splitlines()
  assert lines[:-1] == BEFORE.decode().splitlines()
  assert lines[-1].startswith(f"error: process {process_id} of 2 lost process {lost}: JAX's runtime ended this process "
                              "(Terminating process because the JAX distributed service detected fatal errors.")
  assert lines[-1].endswith("; rerun the job to resume from its last checkpoint.")


def test_a_process_that_said_its_line_gets_no_second_one():
  assert guarded(BEFORE, guard.SAID + LOST_THE_LEADER) == BEFORE


def test_a_guarded_process_writes_python_lines_straight_and_low_level_ones_through_the_guard(tmp_path):
  program = ("import os, sys; from train import guard; guard.install(1, 2); print('python line', file=sys.stderr); "
             "os.write(2, b'low-level line\\n'); os.write(2, " + repr(LOST_THE_LEADER) + "); os.abort()")
  run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  lines = run.stderr.splitlines()
  assert run.returncode == -6 and sorted(lines[:2]) == ["low-level line", "python line"], run.stderr
  assert len(lines) == 3 and lines[2].startswith("error: process 1 of 2 lost process 0: "), run.stderr
