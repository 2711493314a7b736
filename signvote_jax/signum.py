"""Sign methods with majority vote as optax chains: Signum (Algorithm 1 of Bernstein et al., ICLR
2019) and its sibling Lion (Chen et al., 2023), whose per-worker signs are voted the same way."""

import math

import jax
import jax.numpy as jnp
import optax

from signvote_jax import axes
from signvote_jax.axes import AxisName
from signvote_jax.vote import Vote, as_vote, scale_by_majority_vote


def _check(name: str, value, ok, valid: str) -> None:
  """Raises a ValueError where ``value`` is a known number (Python, numpy or a concrete jax scalar)
  outside its range. Schedules and traced values (under ``optax.inject_hyperparams``) pass."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return
  try:
    number = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a number or a schedule, got {value!r}.") from e
  if not (math.isfinite(number) and ok(number)):
    raise ValueError(f"{name} must be {valid}, got {value!r}.")


def momentum(b1, accumulator_dtype=None) -> optax.GradientTransformation:
  r"""``optax.ema(b1, debias=False)`` that a non-finite gradient never enters.

  .. math::  v \leftarrow (1 - \beta) g + \beta v \quad \text{where } g \text{ is finite; else } v
             \text{ is kept and the update is NaN}

  Per coordinate: a NaN or Inf gradient leaves that coordinate's momentum as it was, and the update
  passed on is NaN there, so that the vote after it abstains and counts the event (``nonfinite``
  in :class:`signvote_jax.MajorityVoteState`). Elsewhere the momentum is bit-identical to
  ``optax.ema``'s, and the update passed on is that momentum (a zero of it possibly of the other sign).
  The momentum is kept in ``accumulator_dtype`` (None: the gradients' dtype), as ``optax.ema`` does.
  """
  return _finite_gradients_only(optax.ema(b1, debias=False, accumulator_dtype=accumulator_dtype), "ema",
                                sends_state=True)


def _finite_gradients_only(inner: optax.GradientTransformation, field: str, *,
                           sends_state: bool) -> optax.GradientTransformation:
  """``inner`` whose state ``field`` (its momentum) a non-finite gradient never enters.

  Where a gradient coordinate is NaN or Inf, ``field`` keeps its old value there and the update
  passed on is NaN (the vote abstains); elsewhere ``inner`` is unchanged.

  How the update is formed decides what the ballot after it costs, since XLA fuses it into the
  ballot's pass:

  * with ``sends_state`` (Signum: the update is the new momentum) it is read from the kept
    momentum, which the step writes out anyway, rather than from a second expression that the
    ballot would recompute from the old momentum;
  * NaN is put where the gradient is not finite by adding ``0 * g`` (NaN exactly there, a zero
    elsewhere), not by a select: XLA:CPU does not vectorize a pass in which a select feeds
    comparisons, and the ballot or, for a lone worker, the update ran 3.5x slower.
  """

  def update_fn(updates, state, params=None):
    out, new_state = inner.update(updates, state, params)
    kept = jax.tree.map(lambda g, new, old: jnp.where(jnp.isfinite(g), new, old), updates,
                        getattr(new_state, field), getattr(state, field))
    sent = jax.tree.map(lambda g, u: u + (g * 0).astype(u.dtype), updates, kept if sends_state else out)
    return sent, new_state._replace(**{field: kept})

  return optax.GradientTransformation(inner.init, update_fn)


def signum(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    *,
    mask: optax.MaskOrFn = None,
    accumulator_dtype: jax.typing.DTypeLike | None = None,
    axis_name: AxisName = None,
    vote: Vote | None = None,
    fault: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
  r"""Signum with majority vote (Algorithm 1 of Bernstein et al., ICLR 2019).

  Each of M workers keeps its own momentum and sends only its sign; all workers apply the vote:

  .. math::
    v_m &\leftarrow (1 - \beta) g_m + \beta v_m \\
    V &= \mathrm{sign}\Big(\sum_{m=1}^{M} \mathrm{sign}(v_m)\Big) \\
    x &\leftarrow x - \eta \, (V + \lambda x)

  with learning rate :math:`\eta`, momentum :math:`\beta` (``b1``; 0 gives signSGD with majority
  vote) and decoupled weight decay :math:`\lambda`. A worker abstains where its momentum is zero or
  non-finite (per word of 32 coordinates on the wire, see :func:`signvote_jax.scale_by_majority_vote`),
  a coordinate no one votes on does not move (but for weight decay), and a non-finite gradient never
  enters the momentum (:func:`momentum`). It is the chain ``momentum(b1) -> [fault] -> scale_by_majority_vote ->
  add_decayed_weights(weight_decay) -> scale_by_learning_rate(learning_rate)``, so it works under
  ``optax.inject_hyperparams``, ``optax.MultiSteps`` and ``optax.masked``. The paper's defaults are
  ``learning_rate=1e-4, b1=0.9``.

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    b1: momentum :math:`\beta` in [0, 1).
    weight_decay: :math:`\lambda`, decoupled (not scaled by the vote). Pass ``params`` to update.
    mask: which parameters weight decay applies to: a tree of bools like the parameters, or a
      function of the parameters that returns one (``optax.add_decayed_weights``'s ``mask``).
    accumulator_dtype: the momentum's dtype (None: the gradients'); ``jnp.float32`` keeps a
      float32 momentum for bfloat16 parameters, as ``optax.signum``'s does.
    axis_name: the workers' mapped axis, for the default vote over it (``Vote(axis_name)``,
      ``"allgather"``); None for one worker with no collective (plain Signum).
    vote: how the workers vote, a :class:`signvote_jax.Vote` (strategy, replicas, kernels, ...),
      for any other vote than the default (``axis_name`` then left out).
    fault: a transform applied to each worker's momentum just before the vote, such as
      :func:`signvote_jax.faults.byzantine`; the worker's own momentum stays honest.

  Returns:
    An ``optax.GradientTransformation``.

  Example (a single worker):

  >>> import jax.numpy as jnp, optax
  >>> import signvote_jax as sv
  >>> opt = sv.signum(learning_rate=0.1, b1=0.0)
  >>> params = {"w": jnp.array([1.0, -1.0])}
  >>> updates, state = opt.update({"w": jnp.array([0.5, -3.0])}, opt.init(params), params)
  >>> print(optax.apply_updates(params, updates)["w"])  # x - 0.1 * sign(g)
  [ 0.9 -0.9]

  References:
    Bernstein et al., `signSGD with Majority Vote is Communication Efficient and Fault Tolerant
    <https://arxiv.org/abs/1810.05291>`_, ICLR 2019.
  """
  _check("learning_rate", learning_rate, lambda v: v > 0, "> 0")
  _check("b1", b1, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  return _voted(momentum(b1, accumulator_dtype), learning_rate, weight_decay, mask, fault,
                as_vote(axis_name, vote, "signum"))


def lion_direction(b1: float = 0.9, b2: float = 0.99, mu_dtype=None) -> optax.GradientTransformation:
  r"""``optax.scale_by_lion(b1, b2)`` that a non-finite gradient never enters.

  .. math::  d = \mathrm{sign}(\beta_1 m + (1 - \beta_1) g), \quad m \leftarrow \beta_2 m + (1 - \beta_2) g

  Per coordinate where ``g`` is NaN or Inf, ``m`` keeps its value and the direction passed on is
  NaN, so that the vote after it abstains there (as :func:`momentum` does for Signum).
  """
  return _finite_gradients_only(optax.scale_by_lion(b1, b2, mu_dtype), "mu", sends_state=False)


def lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 0.0,
    *,
    mask: optax.MaskOrFn = None,
    mu_dtype: jax.typing.DTypeLike | None = None,
    axis_name: AxisName = None,
    vote: Vote | None = None,
    fault: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
  r"""Distributed Lion: each worker's Lion direction, majority-voted (Chen et al., 2023).

  .. math::
    d_m &= \mathrm{sign}(\beta_1 \mu_m + (1 - \beta_1) g_m), \quad
    \mu_m \leftarrow \beta_2 \mu_m + (1 - \beta_2) g_m \\
    x &\leftarrow x - \eta \, (\mathrm{sign}(\textstyle\sum_m d_m) + \lambda x)

  Lion's update is already a sign, so it travels as one bit a coordinate like Signum's; the chain
  is ``lion_direction(b1, b2) -> [fault] -> scale_by_majority_vote -> add_decayed_weights ->
  scale_by_learning_rate``. Lion wants a smaller learning rate than Signum (about 3-10x, as against
  AdamW) and a larger weight decay. ``mask``, ``axis_name``, ``vote`` and ``fault`` are those of
  :func:`signum`; ``mu_dtype`` is the momentum's dtype, as in ``optax.lion``.

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_,
    NeurIPS 2023.
  """
  _check("learning_rate", learning_rate, lambda v: v > 0, "> 0")
  _check("b1", b1, lambda v: 0 <= v <= 1, "in [0, 1]")
  _check("b2", b2, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  return _voted(lion_direction(b1, b2, mu_dtype), learning_rate, weight_decay, mask, fault,
                as_vote(axis_name, vote, "lion"))


def _voted(direction, learning_rate, weight_decay, mask, fault, vote: Vote):
  """``direction`` per worker (state typed varying), ``[fault]``, the vote, decoupled weight decay, η."""
  return optax.chain(
      axes.per_worker(direction, axes.axis_tuple(vote.axis_name, vote.inner_axis_name), elementwise=True),
      *([fault] if fault is not None else []),
      scale_by_majority_vote(vote=vote),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )
