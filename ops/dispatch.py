"""Chooses between the pure-JAX and the Triton implementation of a kernel."""

import functools

IMPLS = ("auto", "jax", "triton")


def check_impl(impl: str) -> None:
  """Raises ValueError for an unknown ``impl``; called where a transform is built."""
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} is not one of {IMPLS}.")


@functools.cache
def _triton_available() -> bool:
  import jax  # pylint: disable=import-outside-toplevel

  if jax.default_backend() != "gpu":
    return False
  try:
    import jax_triton  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def resolve_impl(impl: str) -> str:
  """Maps ``impl`` to the implementation that will run: ``"jax"`` or ``"triton"``.

  ``"auto"`` gives ``"triton"`` on a GPU backend where ``jax_triton`` imports, else ``"jax"``.
  ``"triton"`` without a GPU (or without ``jax_triton``) raises a ValueError that says so.
  """
  check_impl(impl)
  if impl == "jax":
    return "jax"
  available = _triton_available()
  if impl == "triton" and not available:
    raise ValueError(
        "impl='triton' needs a GPU backend and the jax-triton package "
        "(pip install 'signvote-jax[gpu]'); use impl='jax' or impl='auto' on this machine."
    )
  return "triton" if available else "jax"
