"""Where XLA computes a value: once, in a pass of its own, rather than inside each pass that reads it."""

import jax
import jax.numpy as jnp

from . import packing


def computed_once(*words):
  """The integer arrays ``words`` unchanged, each computed in one pass and read from memory after.

  XLA fuses a cheap elementwise expression into every pass that consumes it and recomputes it
  there. That is usually right, and wrong for the vote's sign and non-zero planes: each leaf's
  decoding reads them once per coordinate, 32 times per word, and recomputing the count's
  comparison there made the step at M = 4 1.35x slower on the CPU.

  XLA never recomputes a reduction (it counts as expensive) and does not simplify away the OR of
  an array with zeros over a leading axis of two, so that is what this is: the same bits, as the
  output of a reduction. ``jax.lax.optimization_barrier`` does not do this, as XLA removes barriers
  before it fuses. (A floating array would go through XLA:CPU's library reduction, which writes its
  input out first: integers only.) Returns one array for one argument, else a tuple.
  """
  for w in words:
    if not jnp.issubdtype(w.dtype, jnp.integer):
      raise ValueError(f"computed_once takes integer arrays (bit planes), got dtype {w.dtype}.")
  stacked = tuple(jnp.stack([w, jnp.zeros_like(w)]) for w in words)
  out = jax.lax.reduce(stacked, tuple(jnp.zeros((), w.dtype) for w in words), packing.or_each, (0,))
  return out if len(out) > 1 else out[0]
