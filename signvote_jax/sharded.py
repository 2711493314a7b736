"""Per-worker state through ``jax.shard_map``: an optimizer whose ``init`` and ``update`` are already mapped.

Inside a map, a worker's momentum is its own (typed *varying* over the workers' axes) while counters
and the vote's statistics are equal on every worker (*invariant*). Outside, a varying leaf lives as
a global array stacked along a new leading dimension sharded over the axes it varies over, and an
invariant leaf as one replicated array. The types decide which, so nothing else has to be carried:

* :func:`init_per_worker` runs a function inside the map and returns its result in that layout;
* :func:`partition_specs` reads the ``PartitionSpec`` of each leaf back from the arrays, for the
  ``in_specs``/``out_specs`` of the user's ``shard_map``;
* :func:`unstack_per_worker` and :func:`stack_per_worker`, inside the map, drop and add the leading
  dimension of the varying leaves (of a train state's own per-worker variables, say);
* :func:`shard_optimizer` wraps an optax transformation with all of the above.

Inside the map, an optimizer's per-worker state stays in its stacked form, this device's block of
one worker (``[1, ...]``): :func:`signvote_jax.per_worker`, which types the state of a per-worker
transform, also takes it in that form. A Signum step then computes its new momentum in the shape
it is stored in, which is what lets XLA write it in place while the ballot reads it (a reshape
between the two made XLA recompute the momentum in the ballot from the old one, and keep a copy of
the old one for that).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from signvote_jax import axes


def _is_per_worker(x) -> bool:
  return bool(axes.varying_axes(x))


def unstack_per_worker(tree):
  """Inside a map: each varying leaf without its leading (local, size 1) worker dimension."""
  return jax.tree.map(lambda x: x[0] if _is_per_worker(x) else x, tree)


def stack_per_worker(tree):
  """Inside a map: each varying leaf with a leading worker dimension, to leave the map stacked."""
  return jax.tree.map(lambda x: x[None] if _is_per_worker(x) else x, tree)


def init_per_worker(fn: Callable, mesh: jax.sharding.Mesh, *args, in_specs=None):
  """``fn(*args)`` run on every worker of ``mesh`` inside a jitted ``shard_map``, as global arrays.

  A leaf that ``fn`` returns varying over some of the mesh's axes comes back stacked along a new
  leading dimension sharded over them (in mesh order); an invariant leaf comes back replicated.

  Args:
    fn: builds the tree, e.g. an optimizer's ``init``.
    mesh: the workers' mesh.
    *args: its arguments (global arrays, or host values that are replicated).
    in_specs: their specs; by default each argument leaf's own (:func:`partition_specs`).

  Returns:
    The global tree; :func:`partition_specs` gives the specs that carry it back into the map.
  """
  if in_specs is None:
    in_specs = partition_specs(args)
  names = tuple(mesh.axis_names)
  found = []

  def spec(x):
    varying = tuple(a for a in names if a in axes.varying_axes(x))
    return P(varying) if varying else P()

  def probe(*inner):
    out = fn(*inner)
    found.append(jax.tree.map(spec, out))
    return jax.tree.map(lambda x: x[None], out)  # Stacked over every axis: valid whatever the types.

  # Tracing once tells each leaf's type, which sets the out_specs of the map that builds it.
  jax.eval_shape(jax.shard_map(probe, mesh=mesh, in_specs=in_specs, out_specs=P(names)), *args)
  specs = found[0]
  build = jax.shard_map(lambda *inner: stack_per_worker(fn(*inner)), mesh=mesh, in_specs=in_specs, out_specs=specs)
  return jax.jit(build)(*args)


def partition_specs(tree):
  """The ``PartitionSpec`` of each leaf of a tree of global arrays (``P()`` for host values)."""

  def spec(x):
    sharding = getattr(x, "sharding", None)
    parts = list(sharding.spec) if isinstance(sharding, NamedSharding) else []
    while parts and parts[-1] is None:  # Trailing replicated dimensions, as in the specs one writes.
      parts.pop()
    return P(*parts)

  return jax.tree.map(spec, tree)


class ShardedOptimizer(NamedTuple):
  """An optax transformation for ``shard_map``, whose state lives outside the map as global arrays.

  Attributes:
    init: ``params -> state``, called outside the map on global (replicated) parameters; per-worker
      leaves of the state (momentum) are stacked over the workers, the rest replicated.
    update: ``(updates, state, params=None) -> (updates, state)``, called inside the user's
      ``shard_map`` with the state passed through ``in_specs``/``out_specs`` of
      :func:`partition_specs` (``state``), on this worker's ``updates``; the state goes in and out
      as the map carries it (per-worker leaves in blocks of one worker).
  """

  init: Callable[[Any], Any]
  update: Callable[..., tuple[Any, Any]]


def _worker_typing(tx: optax.GradientTransformation, mesh: jax.sharding.Mesh, params) -> Any:
  """Which leaves of ``tx``'s state must be typed varying over the workers from ``init`` on, beyond
  those ``init`` already types so, for ``update`` to trace inside ``jax.shard_map``: a tree of bools.

  A wrapper such as ``optax.MultiSteps`` or ``optax.apply_if_finite`` keeps state computed from each
  worker's own gradients (accumulated gradients, counts of non-finite steps), created equal on
  every worker; its ``lax.cond`` then joins a branch where that state varies with one where it does
  not, which JAX refuses. One update is traced (no compilation) with the state typed as ``init``
  gives it, and again with each leaf the update made varying typed varying from the start, until
  nothing changes; if a trace fails, it starts again from every floating leaf varying (what
  :func:`signvote_jax.per_worker` does).
  """
  names = tuple(mesh.axis_names)
  mine = P(names)

  def varying(tree):
    return jax.tree.map(lambda x: bool(axes.varying_axes(x)), tree)

  def traced(added):
    """The state's varying leaves before and after one update, with ``added`` leaves typed varying."""
    found = []

    def probe(params):
      state = _typed_varying(tx.init(params), added, names)
      grads = axes.as_varying(jax.tree.map(jax.numpy.zeros_like, params), names)
      _, new_state = tx.update(grads, state, params)
      found.append((varying(state), varying(new_state)))
      return jax.tree.map(lambda x: x[None], new_state)

    jax.eval_shape(jax.shard_map(probe, mesh=mesh, in_specs=P(), out_specs=mine), params)
    return found[0]

  initial = []

  def init_types(params):
    state = tx.init(params)
    initial.append(varying(state))
    return jax.tree.map(lambda x: x[None], state)

  structure = jax.eval_shape(jax.shard_map(init_types, mesh=mesh, in_specs=P(), out_specs=mine), params)
  initially = initial[0]
  starts = {
      "init": jax.tree.map(lambda _: False, structure),
      "floating": jax.tree.map(lambda x: jax.numpy.issubdtype(x.dtype, jax.numpy.floating), structure),
  }  # Not every leaf: typing a vote's step count varying would type the vote itself varying, a lie.
  failure = None
  for added in starts.values():
    try:
      for _ in range(len(jax.tree.leaves(structure)) + 1):
        before, after = traced(added)
        grown = jax.tree.map(lambda b, a: a and not b, before, after)
        if not any(jax.tree.leaves(grown)):
          break
        added = jax.tree.map(lambda x, g: x or g, added, grown)
      # Only what init does not type varying already is added (and carried in blocks by shard_optimizer).
      return jax.tree.map(lambda a, i: a and not i, added, initially)
    except (TypeError, ValueError) as e:
      if not _type_mismatch(e):  # Not ours to judge (an update that needs extra arguments, ...): its own trace will say.
        return jax.tree.map(lambda _: False, structure)
      failure = failure or e
  raise ValueError(
      f"shard_optimizer: the update's types differ from worker to worker inside jax.shard_map over {names} "
      f"({str(failure).splitlines()[0].strip()}): a transform that decides from each worker's own gradient "
      "(optax.apply_if_finite before the vote or the all-reduce) would let the workers' parameters drift apart; "
      "put it after the exchange, as optax.chain(sv.mean_allreduce(axis), optax.apply_if_finite(optax.adam(lr), 5)) "
      "(sv.signum and sv.lion abstain on non-finite gradients already)."
  ) from failure


def _typed_varying(state, added, names):
  """``state`` with the leaves marked in ``added`` typed varying over ``names``, whatever their dtype."""
  return jax.tree.map(lambda x, a: axes.as_varying(x, names, every_dtype=True) if a else x, state, added)


def _type_mismatch(error: Exception) -> bool:
  """Whether JAX refused ``error``'s trace for types that differ between branches or steps."""
  return "must have equal" in str(error) or "vma" in str(error)


def shard_optimizer(tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> ShardedOptimizer:
  """``tx`` with per-worker state carried in and out of ``jax.shard_map`` over ``mesh``.

  Any optax transformation works, wrappers with state of their own included (``optax.MultiSteps``,
  ``optax.apply_if_finite``): state that the workers' gradients make differ from worker to worker
  is typed varying from ``init`` on and carried stacked over the workers (found by tracing one
  update when ``init`` is called). ``update`` passes extra keyword arguments on (``value=`` for
  ``optax.contrib.reduce_on_plateau``), as ``optax.with_extra_args_support`` does.

  Example: Signum with majority vote on 2 workers, one jitted step.

  >>> import functools, jax, jax.numpy as jnp, optax, signvote_jax as sv
  >>> from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  >>> mesh = jax.make_mesh((2,), ("workers",), axis_types=(AxisType.Explicit,), devices=jax.devices()[:2])
  >>> opt = sv.shard_optimizer(sv.signum(0.1, axis_name="workers"), mesh)
  >>> params = jax.device_put({"w": jnp.zeros(3)}, NamedSharding(mesh, P()))
  >>> state = opt.init(params)
  >>> specs = sv.partition_specs(state)
  >>> specs[0].ema["w"], specs[1].kappa  # momentum stacked over the workers; the vote's statistics shared
  (P('workers',), P())
  >>> @jax.jit
  ... @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), specs, P("workers")), out_specs=(P(), specs))
  ... def step(params, state, grads):
  ...   updates, state = opt.update(jax.tree.map(lambda g: g[0], grads), state, params)
  ...   return optax.apply_updates(params, updates), state
  >>> grads = jax.device_put({"w": jnp.array([[1.0, -1.0, 2.0], [3.0, -1.0, -2.0]])}, NamedSharding(mesh, P("workers")))
  >>> params, state = step(params, state, grads)
  >>> print(params["w"])  # the vote: +1, -1 and a tie
  [-0.1  0.1  0. ]
  """
  tx = optax.with_extra_args_support(tx)
  names = tuple(mesh.axis_names)
  typing = []  # What init found: the leaves it types varying on top of tx.init's (see _worker_typing).

  def init(params):
    added = _worker_typing(tx, mesh, params)
    typing[:] = [added]

    return init_per_worker(lambda p: _typed_varying(tx.init(p), added, names), mesh, params)

  def update(updates, state, params=None, **extra_args):
    # Per-worker leaves arrive as blocks of one worker, which sv.per_worker takes as they are; the
    # leaves typed varying here for tx's sake go in without their block axis and come back with it.
    added = typing[0] if typing else jax.tree.map(lambda _: False, state)
    state = jax.tree.map(lambda x, a: x[0] if a else x, state, added)
    updates, state = tx.update(updates, state, params, **extra_args)
    return updates, jax.tree.map(lambda x, a: x[None] if a else x, state, added)

  return ShardedOptimizer(init, update)
