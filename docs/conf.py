"""Sphinx configuration of the API reference: `make docs` builds it from the docstrings into docs/_build/html."""

project = "signvote-jax"
author = "The signvote-jax developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
# Types the docstrings name from other projects, which this build does not resolve.
nitpicky = False
napoleon_use_ivar = True  # Attributes as fields: a NamedTuple documents its fields once.
