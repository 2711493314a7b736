"""Timing the benchmarks' steps: medians after warm-up, and steps that carry their state along."""

import statistics
import time

import jax


def median_seconds(call, repeats: int, warmup: int = 2) -> float:
  """Median wall time of ``call()``, blocked until its result is ready, after ``warmup`` untimed calls."""
  times = []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


class Stepping:
  """``step()`` runs ``step_fn(params, state, *data)`` and keeps the (donated) parameters and state
  it returns for the next call; ``step.compile()`` only compiles (a step with collectives runs only
  when every process calls it)."""

  def __init__(self, step_fn, params, state, data=()):
    self._step, self._carry, self._data = step_fn, [params, state], tuple(data)

  def compile(self):
    """The compiled step (its ``as_text()`` is the HLO that runs)."""
    return self._step.lower(*self._carry, *self._data).compile()

  def __call__(self):
    self._carry[:] = self._step(*self._carry, *self._data)
    return self._carry
