"""Where benchmark results go: JSON, a markdown table and plots, named by benchmark, device and date."""

import datetime
import json
import os
import pathlib
import platform
import re

import jax

RESULTS = pathlib.Path(__file__).parent / "results"


def machine() -> dict:
  """What the numbers were measured on."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
  except OSError:
    pass
  return {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "cpu": cpu,
          "cpu_cores": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
          "date": datetime.date.today().isoformat()}


def figure(nrows: int, ncols: int, figsize, **kwargs):
  """A figure and its ``[nrows, ncols]`` axes, outside pyplot's global state (nothing to close)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=figsize)
  return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def stem(name: str, out=RESULTS) -> pathlib.Path:
  """``<out>/<name>-<device>-<date>``: today's result files of ``name`` on this device, less their suffix."""
  device = re.sub(r"[^A-Za-z0-9]+", "-", jax.devices()[0].device_kind).strip("-").lower()
  return pathlib.Path(out) / f"{name}-{device}-{machine()['date']}"


def first_reaching(values, accuracies, target: float):
  """The first of ``values`` (steps, seconds) whose accuracy is at least ``target``; None if none is."""
  return next((v for v, a in zip(values, accuracies) if a is not None and a >= target), None)


def write(name: str, meta: dict, rows: list, markdown: str, plot=None, out=RESULTS, command=None) -> list:
  """Writes ``<out>/<name>-<device>-<date>.{json,md}``, and ``.png`` of the figure ``plot(rows)``.

  ``command`` is what wrote them (default ``python -m benchmarks.<name>``).
  """
  info, path = machine(), stem(name, out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.with_suffix(".json").write_text(json.dumps({**info, **meta, "rows": rows}, indent=1))
  where = f"{info['device']} ({info['cpu']}, {info['cpu_cores']} cores), jax {info['jax']}, {info['date']}"
  text = f"# {name}\n\nMeasured on {where}. Written by `{command or f'python -m benchmarks.{name}'}`.\n\n{markdown}\n"
  if plot is not None:
    fig = plot(rows)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    text += f"\n![{name}]({path.name}.png)\n"
  path.with_suffix(".md").write_text(text)
  print(text, flush=True)
  return rows
