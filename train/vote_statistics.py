"""What the vote's statistics say about the workers: averaged over a log period's steps, and over a
whole run, with the workers they name (``signvote_jax.suspected_workers``)."""

import warnings

import numpy as np

import signvote_jax as sv

# Logged per worker when the optimizer votes: the statistics in the vote's state.
LOGGED = ("agreement", "kappa", "nonfinite", "voter_kappa")
# Those of the vote's state (sv.MajorityVoteState) that are NaN where there was nothing to measure.
MAY_BE_UNMEASURED = ("agreement", "kappa", "voter_agreement", "voter_kappa")


def mean_over_periods(rows) -> np.ndarray:
  """Per worker, the mean of a statistic over steps or log periods ``[T, M]``, NaNs left out
  (a worker that never voted stays NaN)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # The mean of an all-NaN column: NaN, as it should be.
    return np.nanmean(np.asarray(rows, np.float64), axis=0)


def over_run(records) -> dict:
  """Each worker's kappa as a sender and as a voter averaged over every logged train period of the
  run, and the workers they name (``suspected_workers``, ``suspected_voters``).

  A whole run's average: one period's kappa is noisy once the gradients are small (an honest worker
  can dip below the threshold for a period near convergence), while a faulty worker stays low
  throughout. After an elastic resume only the periods since the worker count last changed count.
  ``None`` where the optimizer does not vote; voters are measured only with ``replicas`` >= 3.
  """
  out = {}
  for statistic, named in (("kappa", "suspected_workers"), ("voter_kappa", "suspected_voters")):
    rows = [r[statistic] for r in records if r["split"] == "train" and r.get(statistic) is not None]
    if not rows:
      out.update({statistic: None, named: None})
      continue
    first = len(rows)
    while first > 0 and len(rows[first - 1]) == len(rows[-1]):
      first -= 1
    mean = mean_over_periods([[np.nan if k is None else k for k in row] for row in rows[first:]])
    out.update({statistic: mean.tolist(), named: sv.suspected_workers(mean)})
  return out


def over_steps(steps) -> dict:
  """:data:`LOGGED` averaged over a log period's steps (each a dict of ``[M]`` arrays), and the
  workers and voters their kappas name.

  One step's statistics are noisy once the gradients are small; the mean over the period names
  faulty workers without naming honest ones by chance. A worker's agreement and kappa are averaged
  over the steps where it voted (NaN if it never did).
  """
  out = {name: mean_over_periods([step[name] for step in steps]).tolist() for name in LOGGED}
  out["suspected_workers"] = sv.suspected_workers(out["kappa"])
  out["suspected_voters"] = sv.suspected_workers(out["voter_kappa"])
  return out
