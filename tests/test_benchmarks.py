"""Smoke test: the kernel benchmark runs end to end at a tiny size and writes its results."""

import json

from benchmarks import kernels


def test_kernel_benchmark_quick(tmp_path):
  rows = kernels.main(["--quick", "--log2-sizes", "12", "--repeats", "1", "--out", str(tmp_path)])
  ops_measured = {r["op"] for r in rows}
  assert ops_measured == {"copy", "pack", "vote_planes", "vote", "ema_pack", "signum_update", "sgd_momentum_update"}
  assert all(r["seconds"] > 0 and r["bytes"] > 0 for r in rows)
  (result,) = tmp_path.glob("kernels-*.json")
  saved = json.loads(result.read_text())
  assert saved["rows"] == rows and saved["device"]
  assert [r["fraction_of_copy"] for r in rows if r["op"] == "copy"] == [1.0]
  assert (tmp_path / result.name.replace(".json", ".md")).exists()
