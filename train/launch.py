"""Starts a multi-process training job on this machine: ``python -m train.launch --num_processes N -- ARGS``.

Each process runs ``python -m train ARGS`` with the coordinator at 127.0.0.1 on a free port, so N
CPU processes form one JAX job over gloo: a local stand-in for N hosts, for tests and demos. If one
process fails, the others are stopped; the exit status is the first failure's (0 if none; 128 + the
signal for a process killed by one).

SIGTERM, SIGINT and SIGHUP are forwarded to every worker (which stop after one agreed step and save
a checkpoint, see train/preemption.py); workers still running ``--grace`` seconds later are killed
with their process groups, and the launcher exits with 128 + the signal. No worker outlives the
launcher: on Linux each worker gets SIGTERM when the launcher dies, even by SIGKILL. When a worker
fails, the launcher gives the others ``--grace`` seconds to stop on their own, and its last line
names the process and how it ended (a stopped process, SIGSTOP, is named as the one that failed).
"""

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

from train import distributed


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def exit_status(returncode: int) -> int:
  """A child's status as a shell reports it: 128 + the signal that killed it."""
  return 128 - returncode if returncode < 0 else returncode


def _signal_group(process: subprocess.Popen, signum: int) -> None:
  try:
    os.killpg(process.pid, signum)  # Each worker leads its own process group.
  except ProcessLookupError:
    pass


def _signal_all(processes, signum: int) -> None:
  for p in processes:
    _signal_group(p, signum)


def _die_with(parent: int) -> None:
  """Run in each worker before it starts: SIGTERM to it when the launcher (``parent``) dies, however
  it dies (Linux's parent-death signal), so that no worker trains on under PID 1."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  if os.getppid() != parent:  # The launcher died before the signal was set.
    os.kill(os.getpid(), signal.SIGTERM)


def _wait(processes, seconds: float) -> None:
  """Until every process has ended, or ``seconds``."""
  deadline = time.monotonic() + seconds
  while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
    time.sleep(0.1)


def _is_stopped(pid: int) -> bool:
  """Whether the process is stopped (state T in Linux's /proc; False where that cannot be read)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
  except (OSError, IndexError):
    return False


def how_it_ended(returncode: int) -> str:
  return f"was killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with status {returncode}"


def launch(num_processes: int, train_args: list[str], timeout: float | None = None, grace: float = 10.0) -> int:
  """Runs the N processes to the end (or until ``timeout`` seconds) and returns the exit status."""
  address = f"127.0.0.1:{free_port()}"
  processes, received, launcher = [], [], os.getpid()

  def forward(signum, frame):
    del frame
    received.append(signum)
    _signal_all(processes, signum)

  previous = {s: signal.signal(s, forward) for s in FORWARDED}
  try:
    for process_id in range(num_processes):
      env = dict(os.environ)
      env.update({
          distributed.ENV_COORDINATOR: address,
          distributed.ENV_NUM_PROCESSES: str(num_processes),
          distributed.ENV_PROCESS_ID: str(process_id),
      })
      processes.append(subprocess.Popen([sys.executable, "-m", "train", *train_args], env=env,
                                        start_new_session=True, preexec_fn=lambda: _die_with(launcher)))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in processes]
      if received:
        _wait(processes, grace)
        print(f"launch: {signal.Signals(received[0]).name} forwarded to the workers; stopped", file=sys.stderr)
        return 128 + received[0]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:  # The others lose a peer and stop on their own; those that do not are killed.
        _wait(processes, grace)
        # The cause: of those seen ended at once, one that a signal killed (its peers exit after it),
        # else one stopped (SIGSTOP: its peers end at the heartbeat timeout), else the first.
        process, code = min(failed, key=lambda ended: ended[1] >= 0)
        running = [i for i, p in enumerate(processes) if p.poll() is None]
        stopped = [i for i in running if _is_stopped(processes[i].pid)]
        lingering = {i: "is stopped (SIGSTOP)" if i in stopped else "did not end" for i in running}
        if code >= 0 and stopped:
          process, code = stopped[0], -signal.SIGKILL
          cause = f"process {process} of {num_processes} {lingering.pop(process)}, killed"
        elif all(p.poll() == code for p in processes):  # A preemption, say.
          cause = f"all {num_processes} processes {how_it_ended(code)}"
        else:
          cause = f"process {process} of {num_processes} {how_it_ended(code)}"
        killed = "".join(f"; process {i} {fate}, killed" for i, fate in lingering.items())
        print(f"launch: {cause}{killed}; the job stopped", file=sys.stderr)
        return exit_status(code)
      if all(c == 0 for c in codes):
        return 0
      if deadline is not None and time.monotonic() > deadline:  # Stopped as if preempted: they save first.
        _signal_all(processes, signal.SIGTERM)
        _wait(processes, grace)
        print(f"launch: stopped after {timeout} s", file=sys.stderr)
        return 124
      time.sleep(0.05)
  finally:
    for p in processes:
      if p.poll() is None:
        _signal_group(p, signal.SIGKILL)
      p.wait()
    for s, handler in previous.items():
      signal.signal(s, handler)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m train.launch", description=__doc__.splitlines()[0])
  parser.add_argument("--num_processes", type=int, required=True, help="processes to start on this machine")
  parser.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
  parser.add_argument("--grace", type=float, default=10.0,
                      help="seconds the workers get to stop after a forwarded signal before they are killed")
  parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m train")
  args = parser.parse_args(argv)
  train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
  if args.num_processes < 1:
    parser.error(f"--num_processes must be at least 1, got {args.num_processes}")
  return launch(args.num_processes, train_args, args.timeout, args.grace)


if __name__ == "__main__":
  sys.exit(main())
