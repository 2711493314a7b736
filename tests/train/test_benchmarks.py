"""Smoke tests: each benchmark runs end to end at its --quick size and writes JSON, markdown and a plot.

They also check what the numbers must be where that is known independently: the wire bytes of
each exchange follow from DESIGN.md's layout and the algorithm cost of each collective.
"""

import json
import math

import jax
import numpy as np
import pytest

from benchmarks import cluster, convergence, ddp_peer, kernels, robustness, step, time_to_accuracy, wire_bytes


def _written(tmp_path, name):
  (result,) = tmp_path.glob(f"{name}-*.json")
  assert result.with_suffix(".md").read_text().startswith(f"# {name}")
  saved = json.loads(result.read_text())
  assert saved["device"] and saved["date"] and saved["cpu_cores"]
  return saved, result


def test_kernel_benchmark_quick(tmp_path):
  rows = kernels.main(["--quick", "--log2-sizes", "12", "--repeats", "1", "--out", str(tmp_path)])
  ops_measured = {r["op"] for r in rows}
  assert ops_measured == {"copy", "pack", "vote_planes", "signum_update", "sgd_momentum_update"}
  assert all(r["seconds"] > 0 and r["bytes"] > 0 for r in rows)
  saved, _ = _written(tmp_path, "kernels")
  assert saved["rows"] == rows


def test_step_benchmark_quick(tmp_path):
  """Every variant of both tables timed, with its compile time and what its compiled step holds."""
  rows = step.main(["--quick", "--per-round", "1", "--out", str(tmp_path)])
  saved, _ = _written(tmp_path, "step")
  assert saved["rows"] == rows
  one = [r for r in rows if r["table"] == "one device"]
  assert {(r["tree"], r["method"]) for r in one} == {(t, m) for t in step.trees(True) for m in step.ONE_DEVICE}
  assert [r["method"] for r in rows if r["table"] == "voting"] == list(step.VOTING)
  for r in rows:
    assert r["seconds"] > 0 and r["compile_seconds"] > 0 and r["bytes_per_coordinate"] > 0 and r["fusions"] > 0
  reference = [r for r in rows if r["method"] in ("optax_signum", "sgd_allreduce")]
  assert all(r["ratio"] == 1.0 for r in reference)
  # No copy of a leaf in Signum's steps (Lion's, like optax.lion's, keeps one: tests/test_step_structure.py).
  assert all(r["float_copies"] == [] for r in rows if r["method"] == "sv_signum" or r["method"].startswith("signum_"))


def _expected_bytes(sizes, method, m):
  """Bytes each worker sends per step, from DESIGN.md's layout (each leaf in whole words)."""
  d, words = sum(sizes), sum(math.ceil(n / 32) for n in sizes)
  if method == "allreduce_f32":
    return 2 * (m - 1) / m * 4 * d
  if method == "allgather":  # The words, one abstention flag a word, and the non-finite count.
    return (m - 1) * 4 * (words + math.ceil(words / 32) + 1)
  return _alltoall_bytes(words, m, wire_bytes.replicas(method))


def _alltoall_bytes(words, m, r=1):
  """Bytes a worker sends per step to vote a buffer of ``words`` words with ``alltoall``, r voters a shard.

  The padded words with their abstention flags to their r voters each, then each voter's r shards
  of votes (sign words and one flag a word for odd M, base-3 words of 20 votes for even M), 4 M
  agreement counts a shard and the sender's non-finite count back to everyone.
  """
  shard = math.ceil(words / m)
  flags = math.ceil(shard / 32)
  back = r * shard + math.ceil(r * shard / 32) if m % 2 else math.ceil(32 * r * shard / 20)
  return (m - 1) / m * 4 * m * r * (shard + flags) + (m - 1) / m * 4 * m * (back + r * 4 * m + 1)


def test_wire_bytes_quick_match_the_layout(tmp_path):
  rows = wire_bytes.main(["--quick", "--out", str(tmp_path)])
  _written(tmp_path, "wire_bytes")
  assert (tmp_path / next(tmp_path.glob("wire_bytes-*.json")).name.replace(".json", ".png")).exists()
  sizes = [int(np.prod(p.shape)) for p in jax.tree.leaves(wire_bytes.param_shapes("digits_cnn"))]
  found = {(r["method"], r["workers"]): r for r in rows}
  assert {m for _, m in found} == {2, 3, 4} and ("alltoall_r3", 2) not in found
  for m in (2, 3, 4):
    for method in ("allreduce_f32", "allgather", "alltoall") + (("alltoall_r3",) if m >= 3 else ()):
      assert found[(method, m)]["network_bytes_per_worker"] == pytest.approx(_expected_bytes(sizes, method, m)), (method, m)
    # bfloat16 halves the all-reduce (counted from the program as lowered; XLA:CPU widens it).
    assert found[("allreduce_bf16", m)]["fraction_of_allreduce_f32"] == pytest.approx(0.5)
  assert found[("alltoall", 3)]["collectives"] == ["all-gather u32 x1", "all-to-all u32 x1"]
  # Hierarchical, 2 hosts of 2: a float32 reduce-scatter and a gather of the two vote planes stay
  # inside a host; each device votes half of the words, so a host sends what one alltoall worker of
  # a 2-worker job sends (up to the agreement counts).
  words = -(-sum(math.ceil(n / 32) for n in sizes) // 4) * 4
  hosts_of_two = found[("hierarchical", 4)]
  assert hosts_of_two["hosts"] == 2
  assert hosts_of_two["local_bytes_per_worker"] == pytest.approx(1 * 4 * 32 * words / 2 + 1 / 2 * 2 * 4 * words)
  # Each of a host's 2 devices votes its half of the words with the device of the same rank on the
  # other host, as a 2-worker alltoall of half the words.
  assert hosts_of_two["network_bytes_per_host"] == pytest.approx(2 * _alltoall_bytes(words // 2, 2))
  assert found[("hierarchical", 2)]["network_bytes_per_host"] == 0  # One host.
  assert ("hierarchical", 3) not in found


def test_robustness_quick(data_dir, tmp_path):
  rows = robustness.main(["--quick", "--data-dir", data_dir, "--out", str(tmp_path)])
  saved, _ = _written(tmp_path, "robustness")
  rows, by_role = [r for r in rows if r.get("section") != "roles"], [r for r in rows if r.get("section") == "roles"]
  # Worker 2 of 3 lying in every role: alltoall with 3 voters names it as a sender and as a voter;
  # allgather has no voters (its ballot only); alltoall alone cannot compare its vote with anyone's.
  assert [(r["attack"], r["voting"]) for r in by_role] == [
      (a, v) for a in ("none", "every role") for v in ("allgather", "alltoall r=1", "alltoall r=3")]
  replicated = by_role[-1]
  assert replicated["suspected_voters"] == [2] and replicated["named_faulty"] is True
  assert by_role[-2]["suspected_voters"] == [] and by_role[3]["suspected_voters"] == []
  assert "| every role |" in (tmp_path / next(tmp_path.glob("robustness-*.md")).name).read_text()
  assert [(r["optimizer"], r["kind"], r["num_faulty"]) for r in rows] == [
      ("signum", "none", 0), ("sgd", "none", 0), ("signum", "negate", 1), ("sgd", "negate", 1)]
  assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
  # The vote names the negating worker (the last of 3), and no one without faults; SGD has no vote.
  assert [r["named_faulty"] for r in rows] == [True, None, True, None]
  assert rows[2]["suspected_workers"] == [2]
  kappa = rows[2]["kappa"]  # The statistic behind the naming, for each of the 3 workers.
  assert len(kappa) == 3 and kappa[2] < 0 < min(kappa[:2]) and rows[1]["kappa"] is None
  assert {(s["optimizer"], s["kind"]) for s in saved["summary"]} == {(o, k) for o in ("signum", "sgd") for k in ("none", "negate")}


def test_robustness_refuses_a_faulty_majority():
  with pytest.raises(SystemExit):
    robustness.main(["--workers", "4", "--max-faulty", "2"])


def test_convergence_quick(data_dir, tmp_path):
  rows = convergence.main(["--quick", "--data-dir", data_dir, "--out", str(tmp_path)])
  saved, _ = _written(tmp_path, "convergence")
  assert [r["method"] for r in rows] == ["signum_vote", "signum_single", "sgd_momentum", "adam"]
  for r in rows:
    assert r["steps"] == [10, 20] and r["test_accuracy"][-1] == r["final_test_accuracy"]
    assert 0 < r["train_seconds"][0] < r["train_seconds"][1]
  assert saved["cifar10"].startswith("absent")


def test_cluster_quick(tmp_path):
  """Two host processes over gloo behind capped links (or the best this machine allows): each method timed,
  the hierarchical one with 2 devices in each host's process."""
  cluster.main(["--quick", "--timeout", "300", "--out", str(tmp_path)])
  saved, _ = _written(tmp_path, "cluster")
  assert saved["network"] in ("netns", "capped-loopback", "uncapped-loopback")
  rows = {r["method"]: r for r in saved["rows"]}
  assert sorted(rows) == sorted((*cluster.FLAT_METHODS, cluster.HIERARCHICAL)) and len(saved["rows"]) == len(rows)
  for r in rows.values():
    assert r["hosts"] == 2 and r["rate"] == "1gbit" and r["seconds"] > 0 and 0 <= r["communication_share"] <= 1
    assert r["communication_seconds"] == pytest.approx(max(0.0, r["seconds"] - r["local_seconds"]))
    assert r["wire_seconds"] == pytest.approx(8 * r["network_bytes_per_host"] / 1e9)
  assert rows["signum_hierarchical"]["workers"] == 4 and rows["signum_alltoall"]["workers"] == 2
  # 1M float32 coordinates: a 2-host all-reduce sends half of 4 MB twice; the votes send bits.
  assert rows["sgd_allreduce"]["network_bytes_per_host"] == 4_000_000
  for method in ("signum_allgather", "signum_alltoall", "signum_hierarchical"):
    assert 0 < rows[method]["network_bytes_per_host"] <= 4_000_000 / 20


def test_cluster_rejects_a_bad_rate():
  with pytest.raises(SystemExit):
    cluster.main(["--rates", "fast"])


def test_time_to_accuracy_quick(data_dir, tmp_path):
  """Two host processes of ``python -m train`` behind capped links, Signum's vote against SGD's all-reduce,
  and the PyTorch peer (DDP with PowerSGD) on the same links."""
  time_to_accuracy.main(["--quick", "--data-dir", data_dir, "--timeout", "300", "--out", str(tmp_path)])
  saved, result = _written(tmp_path, "time_to_accuracy")
  assert result.with_suffix(".png").exists() and saved["network"] in ("netns", "capped-loopback", "uncapped-loopback")
  assert [(r["method"], r["link"], r["hosts"], r["seed"]) for r in saved["rows"]] == [
      ("signum_alltoall", "1gbit", 2, 0), ("sgd_allreduce", "1gbit", 2, 0), ("ddp_powersgd_r4", "1gbit", 2, 0)]
  wire = {r["method"]: r["wire_bytes_per_host"] for r in saved["rows"]}
  # The digits_wide MLP at M = 2: a float32 ring all-reduce sends 2 (M-1)/M x 4 bytes a parameter.
  assert wire["sgd_allreduce"] == pytest.approx(4 * 10_483_210)
  assert wire["ddp_powersgd_r4"] == pytest.approx(4 * (4 * (64 + 3200) + 4 * (3200 + 3200) + 4 * (3200 + 10) + 3200 * 2 + 10))
  assert 0 < wire["signum_alltoall"] < wire["sgd_allreduce"] / 20
  for r in saved["rows"]:
    curve = r["curve"]
    assert r["steps"] == 20 and curve["step"] == [5, 10, 15, 20] and r["final_accuracy"] == curve["accuracy"][-1]
    # PyTorch's eager steps compile nothing.
    assert (r["compile_seconds"] == 0 if r["method"] in time_to_accuracy.PEERS else r["compile_seconds"] > 0)
    assert r["compile_seconds"] < curve["train_seconds"][0] and np.all(np.diff(curve["train_seconds"]) > 0)
    for name in ("95", "97"):  # Null, or the first evaluation at the target.
      first = next((i for i, a in enumerate(curve["accuracy"]) if a >= int(name) / 100), None)
      assert r[f"steps_to_{name}"] == (None if first is None else curve["step"][first])
      assert r[f"seconds_to_{name}"] == (None if first is None else curve["train_seconds"][first])


def test_ddp_peer_wire_bytes_follow_powersgd():
  """PowerSGD sends the rank-r factors of the matrices it compresses (n x m -> (n + m) r floats, where
  that is less than half) and the rest as it is; a ring all-reduce costs 2 (M - 1) / M of it."""
  shapes = [(3200, 64), (3200,), (10, 3200), (10,), (3, 3)]
  assert ddp_peer.wire_bytes(shapes, 4, "allreduce", 4) == 1.5 * 4 * (3200 * 64 + 3200 + 32000 + 10 + 9)
  assert ddp_peer.wire_bytes(shapes, 4, "powersgd", 4) == 1.5 * 4 * ((3200 + 64) * 4 + 3200 + (10 + 3200) * 4 + 10 + 9)


def _records(steps, seconds, accuracies, compile_seconds=1.0):
  out = []
  for i, (step, s, a) in enumerate(zip(steps, seconds, accuracies)):
    out.append({"step": step, "split": "train", "train_seconds": s, **({"compile_seconds": compile_seconds} if i == 0 else {})})
    out.append({"step": step, "split": "test", "train_seconds": s, "accuracy": a})
  return out


def test_time_to_accuracy_summary_projection_and_speedup():
  """Hand-computed: first crossings, the steady step time, a projection from another link, speed-ups."""
  targets = (0.95, 0.97)
  fast = time_to_accuracy.summarize(_records([5, 10, 15, 20], [3.0, 4.0, 5.0, 6.0], [0.9, 0.96, 0.97, 0.98]), targets)
  assert (fast["seconds_to_95"], fast["steps_to_95"], fast["seconds_to_97"], fast["steps_to_97"]) == (4.0, 10, 5.0, 15)
  assert fast["step_seconds"] == pytest.approx(0.2) and fast["compile_seconds"] == 1.0 and fast["final_accuracy"] == 0.98
  # The same method and seed on a slow link: stopped at step 10, 2 s a step.
  slow = time_to_accuracy.summarize(_records([5, 10], [12.0, 22.0], [0.9, 0.96]), targets)
  assert slow["seconds_to_97"] is None and slow["steps_to_95"] == 10
  rows = [{"method": "sgd_allreduce", "hosts": 4, "seed": 0, "link": link, **r} for link, r in (("10gbit", fast), ("100mbit", slow))]
  vote = {"method": "signum_alltoall", "hosts": 4, "seed": 0, "link": "100mbit",
          **time_to_accuracy.summarize(_records([5, 10, 15], [1.0, 2.0, 2.5], [0.95, 0.96, 0.975]), targets)}
  rows.append(vote)
  time_to_accuracy.add_projections(rows, targets)
  slow = rows[1]
  assert slow["projected_seconds_to_97"] == pytest.approx(22.0 + (15 - 10) * 2.0) and "projected_seconds_to_95" not in slow
  (factor,) = [f for f in time_to_accuracy.speedups(rows, "97") if f["link"] == "100mbit"]
  assert factor["baseline"] == "sgd_allreduce" and factor["projected"] and factor["best_signum"] == "signum_alltoall"
  assert factor["speedup"] == pytest.approx(32.0 / 2.5)
