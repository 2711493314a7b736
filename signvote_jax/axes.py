"""Named mapped axes: their size, with a clear error when unbound, and varying-ness in types."""

from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import optax

AxisName = Hashable | Sequence[Hashable]


def axis_tuple(*axis_names) -> tuple:
  """The axis names as one flat tuple: ``axis_tuple("a", ("b", "c"), None) == ("a", "b", "c")``."""
  out = []
  for name in axis_names:
    if name is None:
      continue
    out.extend(name if isinstance(name, (tuple, list)) else (name,))
  return tuple(out)


def bound_axis_size(axis_name: AxisName) -> int | None:
  """Size of ``axis_name`` in the surrounding ``shard_map``/``pmap``, or None if it is not bound."""
  try:
    return jax.lax.axis_size(axis_name)
  except NameError:
    return None


def axis_size(axis_name: AxisName, who: str) -> int:
  """Size of ``axis_name``; a ValueError naming ``who`` and the fix if no map binds it."""
  size = bound_axis_size(axis_name)
  if size is None:
    raise ValueError(
        f"{who}: axis_name {axis_name!r} is not bound; call it inside jax.shard_map or jax.pmap "
        f"over a mesh axis named {axis_name!r} (or use axis_name=None for a single worker)."
    )
  return size


def varying_axes(x) -> frozenset:
  """The mapped axes that ``x`` is typed varying over (empty outside a map, or for an invariant value)."""
  aval = jax.typeof(x)
  vma = getattr(aval, "vma", None)
  if vma is None:
    vma = getattr(getattr(aval, "manual_axis_type", None), "varying", frozenset())
  return frozenset(vma)


def _cast_varying(x, axis_names):
  """``x`` typed as varying over ``axis_names``, casting only the axes it does not vary over yet."""
  missing = tuple(a for a in axis_names if a not in varying_axes(x))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def as_varying(tree, axis_names: Sequence[Hashable], *, every_dtype: bool = False):
  """Marks the floating leaves of ``tree`` as varying over ``axis_names`` (a no-op outside a map).

  Per-worker state such as momentum is created equal on every worker but diverges after one step;
  saying so at ``init`` keeps carry types stable under ``lax.scan`` inside ``shard_map``. Integer
  leaves are step counters, which stay equal on every worker and keep their type (unless
  ``every_dtype``: counts of a worker's own events, such as ``optax.apply_if_finite``'s).
  """
  axis_names = tuple(a for a in axis_names if bound_axis_size(a) is not None)

  def cast(x):
    if not every_dtype and not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      return x
    return _cast_varying(x, axis_names)

  return jax.tree.map(cast, tree) if axis_names else tree


def match_varying(value, reference):
  """``value`` typed as varying over every axis that ``reference`` varies over.

  Keeps a transform's state type stable when a wrapper such as :func:`per_worker` made it varying.
  """
  return _cast_varying(value, varying_axes(reference))


def per_worker(inner: optax.GradientTransformation, axis_names, *,
               elementwise: bool = False) -> optax.GradientTransformation:
  """``inner`` with its floating state typed as varying over ``axis_names`` from ``init`` on.

  A worker's momentum is created equal everywhere but is its own after one step. Inside
  ``jax.shard_map``, a ``lax.scan`` carry must keep its type, so state that will vary has to be
  typed varying from the start. ``signum`` does this for its momentum; wrap other stateful
  transforms that run on per-worker gradients (``optax.scale_by_lion``, ``optax.MultiSteps``) in it:

  >>> import optax, signvote_jax as sv
  >>> lion = sv.per_worker(optax.scale_by_lion(b1=0.9, b2=0.99), "workers")

  Outside a map it changes nothing.

  Its ``update`` takes the state as ``init`` made it, or as :func:`signvote_jax.shard_optimizer`
  carries it through ``shard_map``: each varying leaf as this device's block of the workers'
  stacked state, with a leading axis of one worker. A block is handed to ``inner`` without that
  axis and given it back after; with ``elementwise`` (``inner`` computes each coordinate of its
  state and update from the same coordinate of the updates alone, as an EMA does) it is handed
  over as it is, and broadcasting against the updates keeps the new state in block form, so that
  nothing is reshaped between the state XLA writes in place and the update it passes on.

  Args:
    inner: the transform.
    axis_names: the workers' axes.
    elementwise: whether ``inner`` is elementwise in the sense above.
  """
  axis_names = axis_tuple(axis_names)

  def init_fn(params):
    return as_varying(inner.init(params), axis_names)

  def update_fn(updates, state, params=None):
    plain = jax.eval_shape(inner.init, updates)
    blocks = jax.tree.map(lambda x, p: bool(varying_axes(x)) and x.shape == (1, *p.shape), state, plain)
    if not any(jax.tree.leaves(blocks)):
      return inner.update(updates, state, params)
    if elementwise:
      out, new_state = inner.update(updates, state, params)
      return jax.tree.map(lambda o, u: o.reshape(u.shape), out, updates), new_state
    unstacked = jax.tree.map(lambda x, b: x[0] if b else x, state, blocks)
    out, new_state = inner.update(updates, unstacked, params)
    return out, jax.tree.map(lambda x, b: x[None] if b else x, new_state, blocks)

  return optax.GradientTransformation(init_fn, update_fn)
