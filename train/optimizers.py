"""The optimizer a config asks for: Signum with majority vote, or SGD / Adam over an all-reduce.

Both sides of a comparison are the same program: the baselines differ only in the exchange
(``mean_allreduce`` of float gradients instead of a vote of sign bits), and faulty workers are
injected right before the exchange in either case.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import signvote_jax as sv
from configs import default
from train.errors import ConfigError, library_errors

OPTIMIZERS = ("signum", "lion", "sgd", "adam")
VOTING = ("signum", "lion")  # Their per-worker signs are majority-voted; the others average floats.


class Schedules(NamedTuple):
  learning_rate: optax.Schedule
  b1: optax.Schedule | None  # None: b1 is constant.


def create_schedules(config, steps_per_epoch: int) -> Schedules:
  r"""Linear warm-up, then step decay, both counted from the first step (the paper's recipe).

  .. math::  \eta_t = \eta \cdot \min\Big(1, \frac{t + 1}{T_w}\Big) \cdot
                      \gamma^{\lfloor t / T_d \rfloor}

  with :math:`T_w` = ``warmup_epochs`` and :math:`T_d` = ``lr_decay_every_epochs`` in steps
  (either 0 switches its factor off) and :math:`\gamma` = ``lr_decay_factor``. From
  ``late_from_epochs`` on (if > 0), :math:`\eta` becomes ``late_learning_rate`` and ``b1``
  becomes ``late_b1``: the two phases of the paper's QRNN runs.
  """
  steps = {
      field: round(config[field] * steps_per_epoch)
      for field in ("warmup_epochs", "lr_decay_every_epochs", "late_from_epochs")
  }
  for field, count in steps.items():
    if config[field] > 0 and count < 1:
      raise ConfigError(
          f"{field}={config[field]} is less than one step ({steps_per_epoch} steps per epoch); use a "
          "longer period or 0 to turn it off."
      )
  warmup, decay, late = steps["warmup_epochs"], steps["lr_decay_every_epochs"], steps["late_from_epochs"]

  def phase(step, early, later):
    return jnp.where(step >= late, later, early) if late > 0 else jnp.asarray(early, jnp.float32)

  def learning_rate(step):
    step = jnp.asarray(step, jnp.float32)
    lr = phase(step, config.learning_rate, config.late_learning_rate)
    if warmup > 0:
      lr = lr * jnp.minimum(1.0, (step + 1) / warmup)
    if decay > 0:
      lr = lr * config.lr_decay_factor ** jnp.floor(step / decay)
    return lr

  def b1(step):
    return phase(jnp.asarray(step, jnp.float32), config.b1, config.late_b1)

  return Schedules(learning_rate, b1 if late > 0 else None)


def create_vote(config) -> sv.Vote | None:
  """``config.vote`` as the library's :class:`signvote_jax.Vote`, passed straight through and checked
  there; None for the optimizers that average (which refuse a ``config.vote`` of their own)."""
  if config.optimizer not in VOTING:
    defaults = default.get_config().vote
    changed = sorted(k for k, v in config.vote.items() if v != defaults[k])
    if changed or config.faults.voter_kind or config.faults.kind == "equivocate":
      raise ConfigError(
          f"config.vote ({', '.join(changed) or 'unchanged'}), faults.voter_kind and faults.kind='equivocate' "
          f"need a vote (optimizer in {VOTING}); optimizer={config.optimizer!r} averages over an all-reduce."
      )
    return None
  with library_errors("vote"):
    return sv.Vote(**config.vote)


def faulty_workers(config, num_ballots: int, voters: bool = False) -> tuple[int, ...]:
  """The ballots (or with ``voters``, the voters) ``config.faults`` makes faulty: the last
  ``num_faulty`` (``num_faulty_voters``) of ``num_ballots``."""
  kind_field, count_field = ("voter_kind", "num_faulty_voters") if voters else ("kind", "num_faulty")
  kind, num_faulty = config.faults[kind_field], config.faults[count_field]
  if not kind and not num_faulty:
    return ()
  if not kind:
    kinds = sv.faults.VOTER_KINDS if voters else sv.faults.KINDS
    raise ConfigError(f"faults.{count_field}={num_faulty} needs faults.{kind_field}, one of {kinds}.")
  if not 0 < num_faulty < num_ballots:
    raise ConfigError(
        f"faults.{count_field}={num_faulty} with faults.{kind_field}={kind!r}: it must be between 1 and "
        f"{num_ballots - 1} (the vote has {num_ballots} ballots)."
    )
  return tuple(range(num_ballots - num_faulty, num_ballots))


def create_optimizer(config, schedules: Schedules, mesh: jax.sharding.Mesh,
                     vote: sv.Vote | None) -> optax.GradientTransformation:
  """``config.optimizer`` for the workers of ``mesh`` (axis ``workers``, or ``(hosts, devices)`` if
  ``vote`` is hierarchical), voting with ``vote`` (:func:`create_vote`) or averaging if it is None.

  With a late phase (``late_from_epochs``), the momentum ``b1`` changes mid-run too, so the
  optimizer is built under ``optax.inject_hyperparams`` with ``b1`` as a schedule.
  """
  axis_names = mesh.axis_names
  # The mesh's first axis holds the ballots: single workers, or whole hosts if hierarchical.
  ballots, num_ballots = axis_names[0], mesh.shape[axis_names[0]]
  with library_errors("faults"):
    workers = faulty_workers(config, num_ballots)
    fault = sv.faults.byzantine(config.faults.kind, workers, ballots, seed=config.seed) if workers else None
    voters = faulty_workers(config, num_ballots, voters=True)
    voter_fault = sv.faults.voter(config.faults.voter_kind, voters, seed=config.seed) if voters else None
  if vote is not None:
    hierarchical = vote.plan.hierarchical
    with library_errors("vote with faults.voter_kind" if voter_fault else "vote"):
      vote = vote.replace(axis_name=ballots if hierarchical else axis_names,
                          inner_axis_name=axis_names[1] if hierarchical else None,
                          num_workers=num_ballots, voter_fault=voter_fault)
    if config.faults.kind == "equivocate" and not vote.plan.exchange.sharded:
      raise ConfigError(
          "faults.kind='equivocate' against an allgather vote leaves every worker with its own vote "
          "(DESIGN.md, threat model), but the trainer keeps one replicated model; use vote.strategy='alltoall' "
          "(or vote.outer_strategy='alltoall'), where vote.replicas >= 3 keeps the workers in step."
      )

  def build(learning_rate, b1):
    if config.optimizer == "lion":
      return sv.lion(learning_rate, b1, config.b2, config.weight_decay, vote=vote, fault=fault)
    if config.optimizer == "signum":
      return sv.signum(learning_rate, b1, config.weight_decay, vote=vote, fault=fault)
    if config.optimizer == "sgd":
      update = optax.chain(
          optax.add_decayed_weights(config.weight_decay),
          # A late phase may turn the momentum on: keep it whenever either phase has one.
          optax.sgd(learning_rate, momentum=b1 if (config.b1 or schedules.b1 is not None) else None),
      )
    else:
      update = optax.adamw(learning_rate, b1=b1, b2=config.b2, weight_decay=config.weight_decay)
    return optax.chain(*([fault] if fault else []), sv.mean_allreduce(axis_names), update)

  if schedules.b1 is None:
    return build(schedules.learning_rate, config.b1)
  return optax.inject_hyperparams(build)(learning_rate=schedules.learning_rate, b1=schedules.b1)
