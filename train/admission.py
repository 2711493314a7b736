"""Whether a job still admits processes: process 0 answers on a side port, beside JAX's coordinator.

JAX's coordinator takes a process whose id is already in a running job for that process restarted,
and ends the whole job. So before it joins, a process with a non-zero id asks process 0, on the
port after the coordinator's (the one before it at 65535): ``joining`` while the job waits for its
processes, ``running N`` once all N have joined. A process told ``running`` stops in one line and
never reaches the coordinator. No answer (process 0 not up yet, the side port held by another
program, an older trainer) lets it join as before: the check only ever refuses on a clear answer.
"""

import socket
import threading

GREETING = "signvote-jax admission:"


def side_port(port: int) -> int:
  """The port of the admission service beside a coordinator on ``port``."""
  return port + 1 if port < 65535 else port - 1


class Admission:
  """Process 0's side of the check: a thread that answers every asker with the job's state."""

  def __init__(self, port: int, num_processes: int):
    self._num_processes = num_processes
    self._state = "joining"
    try:  # One socket for IPv6 and IPv4 askers, where the host has IPv6.
      self._socket = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
      self._socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
      self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      self._socket.bind(("", side_port(port)))
      self._socket.listen(16)
    except OSError:
      self._socket.close()
      raise
    threading.Thread(target=self._serve, daemon=True).start()

  @classmethod
  def open(cls, port: int, num_processes: int) -> "Admission | None":
    """The service, or None where its port is taken (the job then runs without the check)."""
    try:
      return cls(port, num_processes)
    except OSError:
      return None

  def running(self) -> None:
    """Every process has joined: from now on, askers are refused."""
    self._state = f"running {self._num_processes}"

  def _serve(self) -> None:
    while True:
      try:
        connection, _ = self._socket.accept()
      except OSError:
        return
      with connection:
        try:
          connection.sendall(f"{GREETING} {self._state}\n".encode())
        except OSError:
          pass


def running_job(host: str, port: int, timeout: float = 2.0) -> int | None:
  """The number of processes of the job already running at ``host:port`` (its process 0 says so),
  or None if it admits processes or nobody answers as process 0 would."""
  try:
    with socket.create_connection((host.strip("[]"), side_port(port)), timeout=timeout) as connection:
      connection.settimeout(timeout)
      answer = connection.recv(256).decode(errors="replace").strip()
  except OSError:
    return None
  state = answer.removeprefix(GREETING).split() if answer.startswith(GREETING) else []
  if len(state) == 2 and state[0] == "running" and state[1].isdigit():
    return int(state[1])
  return None
