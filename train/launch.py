"""Starts a multi-process training job on this machine: ``python -m train.launch --num_processes N -- ARGS``.

Each process runs ``python -m train ARGS`` with the coordinator at 127.0.0.1 on a free port, so N
CPU processes form one JAX job over gloo: a local stand-in for N hosts, for tests and demos. If one
process fails, the others are stopped; the exit status is the first failure's (0 if none).
"""

import argparse
import os
import socket
import subprocess
import sys
import time

from train import distributed


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(num_processes: int, train_args: list[str], timeout: float | None = None) -> int:
  """Runs the N processes to the end (or until ``timeout`` seconds) and returns the exit status."""
  address = f"127.0.0.1:{free_port()}"
  processes = []
  for process_id in range(num_processes):
    env = dict(os.environ)
    env.update({
        distributed.ENV_COORDINATOR: address,
        distributed.ENV_NUM_PROCESSES: str(num_processes),
        distributed.ENV_PROCESS_ID: str(process_id),
    })
    processes.append(subprocess.Popen([sys.executable, "-m", "train", *train_args], env=env))
  deadline = None if timeout is None else time.monotonic() + timeout
  try:
    while True:
      codes = [p.poll() for p in processes]
      failed = [c for c in codes if c not in (None, 0)]
      if failed:
        return failed[0]
      if all(c == 0 for c in codes):
        return 0
      if deadline is not None and time.monotonic() > deadline:
        print(f"launch: stopped after {timeout} s", file=sys.stderr)
        return 124
      time.sleep(0.2)
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m train.launch", description=__doc__.splitlines()[0])
  parser.add_argument("--num_processes", type=int, required=True, help="processes to start on this machine")
  parser.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
  parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of python -m train")
  args = parser.parse_args(argv)
  train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
  if args.num_processes < 1:
    parser.error(f"--num_processes must be at least 1, got {args.num_processes}")
  return launch(args.num_processes, train_args, args.timeout)


if __name__ == "__main__":
  sys.exit(main())
