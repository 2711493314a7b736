"""Process 0's desk beside JAX's coordinator: who may join the job, and who is still in it.

JAX's coordinator has two blind spots a training job meets. It takes a process whose id is already
in a running job for that process restarted, and ends the whole job. And when a process dies or
stops answering, JAX's runtime notices it only at its heartbeat timeout, then aborts every survivor
from C++ with a stack dump that names nobody. So process 0 keeps a desk on the port after the
coordinator's (the one before it at 65535), served by one thread:

* Admission. Before it joins, a process with a non-zero id asks: the desk answers ``joining`` while
  the job waits for its processes, ``running N`` once all N have joined. A process told ``running``
  stops in one line and never reaches the coordinator. No answer (process 0 not up yet, the port
  held by another program) lets it join as before: the check refuses only on a clear answer.
* Roll call. Once joined, every other process stays connected, and the desk and each process send
  each other a beat several times per heartbeat timeout. A closed connection (a process killed or
  crashed, its host down) is noticed at once, silence at the timeout. The desk tells every other
  process which one was lost and how before it reports the loss itself, so each survivor can say
  in one line which process it lost. A process that ends on its own says so first: ``done`` (it is
  not reported lost for leaving), or ``failed`` (after its own error line; the others stop too).

The messages are lines of ASCII text. The desk greets each connection with its state; a process
joining the roll call answers ``member K``, then sends ``beat`` and at its end ``leave K done`` or
``leave K failed``; the desk sends ``beat``, ``lost K HOW``, and at process 0's end ``leave 0 ...``.
"""

import dataclasses
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable

GREETING = "signvote-jax desk:"
CLOSED = "its connection closed (killed or crashed, or its host went down)"
FAILED = "it stopped with an error (its own error line says which)"

OnLost = Callable[[int, str], None]  # (the process lost, how): called once, from the desk's or member's thread.


def side_port(port: int) -> int:
  """The port of the desk beside a coordinator on ``port``."""
  return port + 1 if port < 65535 else port - 1


def beat_interval(heartbeat_timeout: float) -> float:
  """Seconds between beats: several per timeout, so that one late beat is never a loss."""
  return min(1.0, heartbeat_timeout / 4)


def silent(heartbeat_timeout: float) -> str:
  return f"it stopped answering for {heartbeat_timeout:g} s (stopped or hung, or cut off from the network)"


def _receive(connection: socket.socket, buffer: bytes) -> tuple[list[list[str]] | None, bytes]:
  """The whole messages that arrived on ``connection`` as lists of words (None once it has closed),
  and what is left of a message still arriving."""
  try:
    data = connection.recv(4096)
  except OSError:
    data = b""
  if not data:
    return None, buffer
  *lines, buffer = (buffer + data).split(b"\n")
  return [line.decode(errors="replace").split(maxsplit=2) for line in lines], buffer


def _send(connection: socket.socket, message: str) -> bool:
  try:
    connection.sendall(f"{message}\n".encode())
    return True
  except OSError:
    return False


@dataclasses.dataclass
class _Caller:
  """A connection to the desk: an asker until it says ``member K``."""
  connection: socket.socket
  heard: float
  process_id: int | None = None
  left: bool = False  # A member that has ended its run.
  buffer: bytes = b""


class Desk:
  """Process 0's side: admission for askers, roll call for the job's other processes.

  ``on_lost(process, how)`` is called once, on the desk's thread, when a member is lost; every
  other member has been told by then. The desk stops serving after it.
  """

  def __init__(self, port: int, num_processes: int, heartbeat_timeout: float, on_lost: OnLost):
    self._num_processes, self._timeout, self._on_lost = num_processes, heartbeat_timeout, on_lost
    self._state = "joining"
    self._lock = threading.Lock()  # Guards the callers against leave() from the main thread.
    self._callers: dict[socket.socket, _Caller] = {}
    self._closed = False
    try:  # One socket for IPv6 and IPv4 callers, where the host has IPv6.
      self._socket = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
      self._socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
      self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      self._socket.bind(("", side_port(port)))
      self._socket.listen(64)
    except OSError:
      self._socket.close()
      raise
    self._selector = selectors.DefaultSelector()
    self._selector.register(self._socket, selectors.EVENT_READ)
    threading.Thread(target=self._serve, name="desk", daemon=True).start()

  @classmethod
  def open(cls, port: int, num_processes: int, heartbeat_timeout: float, on_lost: OnLost) -> "Desk | None":
    """The desk, or None where its port is taken (the job then runs without it)."""
    try:
      return cls(port, num_processes, heartbeat_timeout, on_lost)
    except OSError:
      return None

  def running(self) -> None:
    """Every process has joined: from now on, askers are refused."""
    self._state = f"running {self._num_processes}"

  def leave(self, status: str, wait: float = 5.0) -> None:
    """Process 0 ends (``done`` or ``failed``): every member is told, and the desk closes. After a
    failure it waits (up to ``wait`` seconds) for the members to end first: they should learn it
    from the desk, not from losing JAX's coordinator with process 0."""
    with self._lock:
      members = [c.connection for c in self._callers.values() if c.process_id is not None]
      for connection in members:
        _send(connection, f"leave 0 {status}")
      deadline = time.monotonic() + wait
      for connection in members if status == "failed" else []:
        try:
          connection.settimeout(max(0.0, deadline - time.monotonic()))
          while connection.recv(4096):
            pass
        except OSError:
          pass
      self._close()

  def _close(self) -> None:
    if not self._closed:
      self._closed = True
      for connection in [self._socket, *self._callers]:
        connection.close()
      self._callers.clear()

  def _serve(self) -> None:
    interval, beat_at = beat_interval(self._timeout), 0.0
    while True:
      try:
        events = self._selector.select(timeout=interval)
      except (OSError, ValueError):  # Closed by leave().
        events = []
      with self._lock:
        if self._closed:
          self._selector.close()
          return
        now, lost = time.monotonic(), None
        for key, _ in events:
          if key.fileobj is self._socket:
            self._admit(now)
          elif key.fileobj in self._callers:
            lost = lost or self._hear(self._callers[key.fileobj], now)
        lost = lost or self._silent(now)
        if lost is None and now >= beat_at:
          beat_at = now + interval
          lost = next(((c.process_id, CLOSED) for c in list(self._callers.values())
                       if c.process_id is not None and not _send(c.connection, "beat") and not c.left), None)
        if lost is not None:
          for caller in self._callers.values():
            if caller.process_id not in (None, lost[0]):
              _send(caller.connection, f"lost {lost[0]} {lost[1]}")
          self._close()
      if lost is not None:
        self._on_lost(*lost)
        return

  def _admit(self, now: float) -> None:
    try:
      connection, _ = self._socket.accept()
    except OSError:
      return
    connection.settimeout(1.0)  # A send never blocks the desk for long, whoever is at the other end.
    if _send(connection, f"{GREETING} {self._state}"):
      self._callers[connection] = _Caller(connection, heard=now)
      self._selector.register(connection, selectors.EVENT_READ)
    else:
      connection.close()

  def _hear(self, caller: _Caller, now: float) -> tuple[int, str] | None:
    """Reads what ``caller`` sent; the loss it means, if any."""
    messages, caller.buffer = _receive(caller.connection, caller.buffer)
    if messages is None:  # An asker that read its answer, a member that left, or one gone without leaving.
      self._forget(caller)
      return None if caller.process_id is None or caller.left else (caller.process_id, CLOSED)
    caller.heard = now
    for words in messages:
      if words[:1] == ["member"] and len(words) == 2 and words[1].isdigit():
        caller.process_id = int(words[1])
      elif words[:1] == ["leave"] and caller.process_id is not None:
        if words[2:] == ["failed"]:
          self._forget(caller)
          return caller.process_id, FAILED
        caller.left = True  # Not watched from now on, but still told of losses until it exits.
    return None

  def _silent(self, now: float) -> tuple[int, str] | None:
    """The first member not heard from for the heartbeat timeout; askers that never hang up are dropped."""
    for caller in list(self._callers.values()):
      if now - caller.heard > self._timeout and not caller.left:
        if caller.process_id is not None:
          return caller.process_id, silent(self._timeout)
        self._forget(caller)
    return None

  def _forget(self, caller: _Caller) -> None:
    self._selector.unregister(caller.connection)
    del self._callers[caller.connection]
    caller.connection.close()


class Member:
  """A process's side of the roll call: it beats to the desk and hears of losses from it.

  ``on_lost(process, how)`` is called once, on the member's thread, when process 0 is lost (gone,
  failed or silent for the heartbeat timeout) or when the desk says that another process was.
  """

  def __init__(self, host: str, port: int, process_id: int, heartbeat_timeout: float, on_lost: OnLost):
    self._process_id, self._timeout, self._on_lost = process_id, heartbeat_timeout, on_lost
    self._socket = socket.create_connection((host.strip("[]"), side_port(port)), timeout=heartbeat_timeout)
    try:
      greeting = self._socket.recv(256).decode(errors="replace")
      if not greeting.startswith(GREETING) or not _send(self._socket, f"member {process_id}"):
        raise OSError(f"no desk at {host}:{side_port(port)}")
    except OSError:
      self._socket.close()
      raise
    self._socket.settimeout(1.0)
    threading.Thread(target=self._serve, name="roll call", daemon=True).start()

  @classmethod
  def join(cls, host: str, port: int, process_id: int, heartbeat_timeout: float, on_lost: OnLost) -> "Member | None":
    """The roll call, or None where process 0 keeps no desk (the job then runs without it)."""
    try:
      return cls(host, port, process_id, heartbeat_timeout, on_lost)
    except OSError:
      return None

  def leave(self, status: str) -> None:
    """This process ends (``done`` or ``failed``). It still hears of losses until it exits."""
    _send(self._socket, f"leave {self._process_id} {status}")

  def _serve(self) -> None:
    interval, buffer = beat_interval(self._timeout), b""
    heard = beat_at = time.monotonic()
    lost = None
    while lost is None:
      now = time.monotonic()
      try:
        readable = select.select([self._socket], [], [], max(0.0, min(beat_at, heard + self._timeout) - now))[0]
      except (OSError, ValueError):
        readable = [self._socket]
      now = time.monotonic()
      if readable:
        messages, buffer = _receive(self._socket, buffer)
        if messages is None:
          lost = (0, CLOSED)
          break
        heard = now
        for words in messages:
          if words[:1] == ["lost"] and len(words) == 3 and words[1].isdigit():
            lost = (int(words[1]), words[2])
          elif words[:2] == ["leave", "0"]:
            if words[2:] != ["done"]:
              lost = (0, FAILED)
            elif lost is None:
              self._socket.close()
              return  # Process 0 ended its run: nothing is left to watch.
      if lost is None and now - heard > self._timeout:
        lost = (0, silent(self._timeout))
      if lost is None and now >= beat_at:
        beat_at = now + interval
        if not _send(self._socket, "beat"):
          lost = (0, CLOSED)
    self._socket.close()
    self._on_lost(*lost)


def running_job(host: str, port: int, timeout: float = 2.0) -> int | None:
  """The number of processes of the job already running at ``host:port`` (its desk says so), or
  None if it admits processes or nobody answers as process 0's desk would."""
  try:
    with socket.create_connection((host.strip("[]"), side_port(port)), timeout=timeout) as connection:
      connection.settimeout(timeout)
      answer = connection.recv(256).decode(errors="replace").strip()
  except OSError:
    return None
  state = answer.removeprefix(GREETING).split() if answer.startswith(GREETING) else []
  return int(state[1]) if len(state) == 2 and state[0] == "running" and state[1].isdigit() else None
