"""Process 0's desk, without JAX: admission answers, and the roll call naming each loss once, on
every process, however the lost process ended (closed, silent, failed), and nothing for one that left."""

import queue
import socket
import threading
import time

import pytest

from train import desk

TIMEOUT = 0.6  # Heartbeat timeout of these tests, in seconds: beats every 0.15 s.


def coordinator_port() -> int:
  """A port whose desk port (the next one) is free."""
  with socket.socket() as s:
    s.bind(("", 0))
    return s.getsockname()[1] - 1


class Losses:
  """What one process's roll call reported, in order."""

  def __init__(self):
    self._reports = queue.Queue()

  def __call__(self, process, how):
    self._reports.put((process, how))

  def next(self, within=5.0):
    return self._reports.get(timeout=within)

  def none(self):
    return self._reports.empty()


@pytest.fixture(name="job")
def job_fixture():
  """A desk for 3 processes and its two members: ``(port, desk, {process: losses})``."""
  port, losses = coordinator_port(), {0: Losses(), 1: Losses(), 2: Losses()}
  office = desk.Desk(port, 3, TIMEOUT, losses[0])
  office.running()
  members = {i: desk.Member("127.0.0.1", port, i, TIMEOUT, losses[i]) for i in (1, 2)}
  time.sleep(0.2)  # Both have said who they are.
  yield port, office, members, losses
  office.leave("done")


def test_admission_says_joining_then_running_and_nobody_is_no_answer():
  port = coordinator_port()
  assert desk.running_job("127.0.0.1", port) is None  # Nothing listens.
  office = desk.Desk(port, 4, TIMEOUT, Losses())
  assert desk.running_job("127.0.0.1", port) is None  # Joining: admitted.
  office.running()
  assert desk.running_job("127.0.0.1", port) == 4
  office.leave("done")
  with socket.socket() as other:  # Another program on the port: no clear answer, no refusal.
    other.bind(("127.0.0.1", desk.side_port(port)))
    other.listen()
    assert desk.running_job("127.0.0.1", port, timeout=0.5) is None


def test_a_live_job_reports_nothing(job):
  _, _, _, losses = job
  time.sleep(3 * TIMEOUT)
  assert all(process.none() for process in losses.values())  # Beats keep every process known to be alive.


def test_a_member_whose_connection_closes_is_named_on_every_process(job):
  _, _, members, losses = job
  members[1]._socket.close()  # pylint: disable=protected-access  (as the kernel does for a killed process)
  assert losses[0].next() == (1, desk.CLOSED)
  assert losses[2].next() == (1, desk.CLOSED)


def test_a_silent_member_is_named_at_the_timeout(job):
  port, _, _, losses = job
  with socket.create_connection(("127.0.0.1", desk.side_port(port))) as hung:  # Joins, then never beats.
    hung.recv(256)
    hung.sendall(b"member 3\n")
    started = time.monotonic()
    assert losses[0].next() == (3, desk.silent(TIMEOUT))
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 1
    assert losses[1].next() == (3, desk.silent(TIMEOUT)) and losses[2].next() == (3, desk.silent(TIMEOUT))


def test_a_member_that_leaves_is_not_lost_and_one_that_failed_is(job):
  _, _, members, losses = job
  members[2].leave("done")
  members[2]._socket.close()  # pylint: disable=protected-access
  time.sleep(2 * TIMEOUT)
  assert losses[0].none() and losses[1].none()
  members[1].leave("failed")
  assert losses[0].next() == (1, desk.FAILED)


@pytest.mark.parametrize("end", ["died", "silent", "failed", "done"])
def test_members_hear_how_process_0_ended(end):
  port, losses = coordinator_port(), Losses()
  with socket.socket() as office:  # A desk that can be made to die or hang, as a process 0 would.
    office.bind(("", desk.side_port(port)))
    office.listen()
    greeted = queue.Queue()

    def greet():
      connection, _ = office.accept()
      connection.sendall(f"{desk.GREETING} running 2\n".encode())
      greeted.put(connection)

    threading.Thread(target=greet, daemon=True).start()
    desk.Member("127.0.0.1", port, 1, TIMEOUT, losses)
    with greeted.get(timeout=5) as connection:
      if end == "died":
        connection.close()
        assert losses.next() == (0, desk.CLOSED)
      elif end == "silent":
        assert losses.next() == (0, desk.silent(TIMEOUT))
      else:
        connection.sendall(f"leave 0 {end}\n".encode())
        if end == "failed":
          assert losses.next() == (0, desk.FAILED)
        else:
          time.sleep(2 * TIMEOUT)
          assert losses.none()
