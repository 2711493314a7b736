"""Reading the collectives of an HLO module: which ones, of what, between whom, and how many bytes.

Used by the wire-bytes benchmark and by the tests that pin a step's communication. Works on the
text of ``jitted.lower(...).compile().as_text()`` (what runs) and of
``jitted.lower(...).as_text(dialect="hlo")`` (what the program asked for: XLA:CPU, for one, widens a
bfloat16 all-reduce to float32 when it compiles, where NCCL would send bfloat16).

Bytes per device are those of the bandwidth-optimal algorithm of each collective over a group of
``G`` devices, with ``N`` the bytes of the collective's result: a ring all-reduce sends and
receives ``2 (G - 1) / G * N``; all-gather and all-to-all ``(G - 1) / G * N``; reduce-scatter
``(G - 1) * N``; a collective permute ``N``.
"""

import collections
import dataclasses
import re

import numpy as np

KINDS = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")
ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                 "f32": 4, "s64": 8, "u64": 8, "f64": 8}
# One instruction per line: `%name = u32[8,3]{1,0} all-gather(...)`; a combined one has a tuple type.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s(" + "|".join(KINDS) + r")(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_LISTED_GROUPS = re.compile(r"replica_groups=\{((?:\{[0-9,]*\},?)*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?")


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective instruction of an HLO module."""

  kind: str  # "all-reduce", "all-gather", ...
  dtype: str  # element type ("f32", "u32", ...); a combined collective of several types lists them "f32+u32".
  result_bytes: int  # bytes of the result on one device.
  groups: tuple[tuple[int, ...], ...]  # the device groups that communicate; () when every device does.

  def group_size(self, num_devices: int) -> int:
    return len(self.groups[0]) if self.groups else num_devices

  def bytes_per_device(self, num_devices: int) -> float:
    """Bytes each device sends (and, as many, receives) under the bandwidth-optimal algorithm."""
    g, n = self.group_size(num_devices), self.result_bytes
    factor = {"all-reduce": 2 * (g - 1) / g, "all-gather": (g - 1) / g, "all-to-all": (g - 1) / g,
              "reduce-scatter": g - 1, "collective-permute": 1}[self.kind]
    return factor * n if g > 1 or self.kind == "collective-permute" else 0.0

  def within(self, blocks: int, num_devices: int) -> bool:
    """Whether every group lies inside one block of ``num_devices // blocks`` consecutive devices (a host)."""
    size = num_devices // blocks
    groups = self.groups or (tuple(range(num_devices)),)
    return all(len({d // size for d in group}) == 1 for group in groups)


def _groups(line: str) -> tuple[tuple[int, ...], ...]:
  iota = _IOTA_GROUPS.search(line)
  if iota:
    shape = [int(n) for n in iota.group(1).split(",")]
    dims = [int(n) for n in iota.group(2).split(",")]
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    if iota.group(3):
      ids = ids.transpose([int(n) for n in iota.group(3).split(",")])
    return tuple(tuple(int(d) for d in row) for row in ids.reshape(shape))
  listed = _LISTED_GROUPS.search(line)
  if listed and listed.group(1):
    return tuple(tuple(int(d) for d in g.split(",") if d) for g in re.findall(r"\{([0-9,]*)\}", listed.group(1)))
  return ()


def collectives(hlo_text: str) -> list[Collective]:
  """The collectives of an HLO module's text, in order."""
  found = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    result_type, kind, is_start = match.groups()
    arrays = _ARRAY.findall(result_type)
    if is_start:  # An async start's result is (operands, results): count the results.
      arrays = arrays[len(arrays) // 2 :]
    dtypes = sorted({dtype for dtype, _ in arrays})
    nbytes = sum(ELEMENT_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d])) for dtype, dims in arrays)
    found.append(Collective(kind, "+".join(dtypes), nbytes, _groups(line)))
  return found


def bytes_per_device(hlo_text: str, num_devices: int, hosts: int) -> tuple[float, float]:
  """Bytes each of ``num_devices`` devices sends in the module's collectives: ``(network, local)``.

  The devices form ``hosts`` blocks of consecutive devices; a collective whose every group lies in
  one block stays inside a host (``local``), any other crosses the network.
  """
  network = local = 0.0
  for c in collectives(hlo_text):
    if c.within(hosts, num_devices):
      local += c.bytes_per_device(num_devices)
    else:
      network += c.bytes_per_device(num_devices)
  return network, local


def counts(hlo_text: str) -> collections.Counter:
  """How many collectives of each (kind, element type) an HLO module holds."""
  return collections.Counter((c.kind, c.dtype) for c in collectives(hlo_text))


_FUSION = re.compile(r"=\s*\S.*?\sfusion\(")
_COPY = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*([a-z]+[0-9]*)\[([0-9,]*)\]\S*\s+copy\(")


def _entry_and_called(hlo_text: str) -> list[str]:
  """The instruction lines of a module's computations, but those inside fusions (their bodies)."""
  lines, inside_fusion = [], False
  for line in hlo_text.splitlines():
    header = re.match(r"^\s*(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if header:
      inside_fusion = header.group(1) is None and "fused" in header.group(2) or "wrapped" in header.group(2)
      continue
    if not inside_fusion and " = " in line:
      lines.append(line)
  return lines


def fusion_count(hlo_text: str) -> int:
  """How many fusions a compiled module launches (each one pass over its operands)."""
  return sum(1 for line in _entry_and_called(hlo_text) if _FUSION.search(line))


def instruction_count(hlo_text: str) -> int:
  """Instructions of a module, those inside fusions included: a measure of what XLA compiles."""
  return sum(1 for line in hlo_text.splitlines() if " = " in line)


def large_float_copies(hlo_text: str, min_elements: int) -> list[tuple[str, int]]:
  """``(dtype, elements)`` of each floating copy of at least ``min_elements`` elements outside fusions:
  a copy as large as a leaf of momentum or parameters is a whole extra pass over it."""
  found = []
  for line in _entry_and_called(hlo_text):
    match = _COPY.match(line)
    if match and match.group(1).startswith(("f", "bf")):
      elements = int(np.prod([int(d) for d in match.group(2).split(",") if d]))
      if elements >= min_elements:
        found.append((match.group(1), elements))
  return found
