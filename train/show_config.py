"""Every field of a config with its value and what configs/default.py says of it (``--show_config``)."""

import ast
import io
import tokenize

from configs import default
from train.config_checks import flatten


def field_comments(source: str) -> dict[str, str]:
  """``{"vote.replicas": "..."}``: the comment of each ``config.<field> = ...`` assignment in
  ``source`` (default.py's text), from the comment block above it and the one at the end of its line."""
  comments_at = {}  # Line number -> comment text.
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments_at[token.start[0]] = token.string.lstrip("#").strip()
  lines = source.splitlines()
  out = {}
  assignments = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)]
  for node in sorted(assignments, key=lambda node: node.lineno):
    if not (len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)):
      continue
    name = ast.unparse(node.targets[0]).removeprefix("config.")
    if isinstance(node.value, ast.Call):  # Not a field, or a section (ConfigDict()).
      continue
    above, line = [], node.lineno - 1
    while line >= 1 and lines[line - 1].strip().startswith("#"):
      above.insert(0, comments_at[line])
      line -= 1
    text = " ".join(above + ([comments_at[node.end_lineno]] if node.end_lineno in comments_at else []))
    out[name] = text
  return out


def describe(config) -> str:
  """One line a field of ``config``: ``name = value``, what default.py
  says of it, and ``(default: ...)`` where the value is not the default."""
  with open(default.__file__) as f:
    comments = field_comments(f.read())
  defaults = flatten(default.get_config())
  values = flatten(config)
  order = list(comments) + sorted(set(values) - set(comments))  # default.py's order.
  width = max(len(f"{k} = {v!r}") for k, v in values.items())
  out = []
  for name in order:
    value = values[name]
    note = " ".join(filter(None, [comments.get(name, ""), "" if defaults.get(name) == value else f"(default: {defaults.get(name)!r})"]))
    head = f"{name} = {value!r}"
    out.append(f"{head:<{width}}  # {note}" if note else head)
  return "\n".join(out)
