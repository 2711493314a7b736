"""Chooses between the pure-JAX and the Triton implementation of a kernel.

``impl="auto"`` is decided when the computation is lowered, for the platform it is lowered for
(``jax.lax.platform_dependent``): a jit placed on the CPU devices of a GPU host takes the pure-JAX
path, the same jit on its GPUs the Triton one. Nothing is decided from the process's default backend.
"""

import functools
from typing import Literal, get_args

import jax

Impl = Literal["auto", "jax", "triton"]  # Which implementation of a kernel: see the module's docstring.
IMPLS = get_args(Impl)


def check_impl(impl: Impl) -> None:
  """Raises ValueError for an unknown ``impl``, or ``"triton"`` where jax-triton cannot import;
  called where a transform is built (and by every kernel that takes ``impl``)."""
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} is not one of {IMPLS}.")
  if impl == "triton" and not triton_importable():
    raise ValueError(
        "impl='triton' needs a GPU build of jax and the jax-triton package "
        "(pip install 'signvote-jax[gpu]'); use impl='jax' or impl='auto' on this machine."
    )


@functools.cache
def triton_importable() -> bool:
  """Whether ``jax_triton`` imports, which needs a GPU build of jaxlib (cached: it cannot change)."""
  try:
    import jax_triton  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def triton_impls() -> tuple[str, ...]:
  """The implementations this install can run: ``("jax", "triton")`` with jax-triton, else ``("jax",)``."""
  return ("jax", "triton") if triton_importable() else ("jax",)


def call(impl: Impl, jax_fn, triton_fn, *args):
  """``jax_fn(*args)`` or ``triton_fn(*args)`` as ``impl`` says.

  ``"auto"`` lowers ``triton_fn`` for CUDA and ``jax_fn`` for every other platform when jax-triton
  is installed (only the branch of the platform being lowered is compiled), and ``jax_fn`` otherwise.
  ``"triton"`` without jax-triton raises a ValueError that says what to do (:func:`check_impl`).
  """
  check_impl(impl)
  if impl == "jax":
    return jax_fn(*args)
  if impl == "triton":
    return triton_fn(*args)
  if not triton_importable():
    return jax_fn(*args)
  return jax.lax.platform_dependent(*args, cuda=triton_fn, default=jax_fn)
