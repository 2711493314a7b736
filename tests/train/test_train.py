"""The trainer end to end on digits: each optimizer, faults, resuming, and its output files."""

import hashlib
import itertools
import json
import os
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from signvote_jax import hlo
from tests import harness
from tests.train.conftest import checkpointed_config
from configs import default, digits
from train import checkpoints, config_checks, elastic, input_pipeline, train
from train.errors import ConfigError


def test_main_config_reaches_95_percent_and_writes_its_files(main_run):
  """The README's main job, exactly as configured (only the data dir moved)."""
  config, summary, tmp_path = main_run
  assert summary["test_accuracy"] >= 0.95
  assert summary["steps"] == config.num_steps and len(summary["devices"]) == 8
  assert summary["suspected_workers"] == []
  with open(tmp_path / "summary.json") as f:
    written = json.load(f)
  assert written["test_accuracy"] == summary["test_accuracy"] and written["config"]["optimizer"] == "signum"
  assert written["wall_seconds"] > 0
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  records = harness.lines(tmp_path, timed=True)
  train_lines = [l for l in records if l["split"] == "train"]
  assert [l["step"] for l in train_lines] == list(range(config.log_every, config.num_steps + 1, config.log_every))
  assert set(train_lines[-1]) == {"step", "split", "loss", "nonfinite_losses", "accuracy", "learning_rate",
                                  "agreement", "kappa", "nonfinite", "voter_kappa", "suspected_workers",
                                  "suspected_voters", "train_seconds"}
  assert len(summary["voter_kappa"]) == 8 and np.all(np.isnan(summary["voter_kappa"]))  # allgather: no voters.
  assert train_lines[-1]["nonfinite"] == [0] * 8 and train_lines[-1]["nonfinite_losses"] == 0
  assert len(written["kappa"]) == 8 and min(written["kappa"]) > 0  # Averaged over the run.
  assert "compile_seconds" not in train_lines[1] and 0 < train_lines[0]["compile_seconds"] < train_lines[0]["train_seconds"]
  seconds = [l["train_seconds"] for l in train_lines]
  assert 0 < seconds[0] and all(a < b for a, b in zip(seconds, seconds[1:])) and seconds[-1] < written["wall_seconds"]
  assert len(train_lines[-1]["agreement"]) == 8 and min(train_lines[-1]["agreement"]) > 0.5
  assert len(train_lines[-1]["kappa"]) == 8 and min(train_lines[-1]["kappa"]) > 0
  test_lines = [l for l in records if l["split"] == "test"]
  assert [l["step"] for l in test_lines] == list(range(config.eval_every, config.num_steps + 1, config.eval_every))
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == str(config.num_steps)


def test_train_seconds_leave_out_evaluating_and_saving(digits_config, tmp_path, monkeypatch):
  """With periods that are not multiples of each other (as in the ResNet configs), an evaluation or
  a save in the middle of a log period is not training time. The clock is faked: every evaluation
  and save takes 1000 s of it, everything else 1 ms a reading."""
  digits_config.num_steps, digits_config.log_every, digits_config.eval_every, digits_config.checkpoint_every = 12, 5, 3, 4
  readings, slow = itertools.count(), [0.0]
  monkeypatch.setattr(time, "perf_counter", lambda: next(readings) * 1e-3 + slow[0])
  real_evaluate, real_save = train.evaluate, checkpoints.Checkpointer.save

  def evaluate(*args):
    slow[0] += 1000.0
    return real_evaluate(*args)

  def save(*args):
    slow[0] += 1000.0
    return real_save(*args)

  monkeypatch.setattr(train, "evaluate", evaluate)
  monkeypatch.setattr(checkpoints.Checkpointer, "save", save)
  train.train_and_evaluate(digits_config, str(tmp_path))
  seconds = [r["train_seconds"] for r in harness.lines(tmp_path, timed=True)]
  assert slow[0] == 1000.0 * (4 + 3) and max(seconds) < 1000.0, seconds  # 4 evaluations, 3 saves.


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "signum", "vote.strategy": "alltoall"},
        {"optimizer": "signum", "vote.strategy": "hierarchical", "workers_per_host": 2},
        {"optimizer": "signum", "vote.strategy": "hierarchical"},  # One host: this process's 4 workers.
        {"optimizer": "signum", "b1": 0.0},  # signSGD
        {"optimizer": "lion", "b2": 0.99},  # Lion's signs voted.
        {"optimizer": "sgd", "learning_rate": 0.1, "b1": 0.9},
        {"optimizer": "adam", "learning_rate": 3e-3},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_each_optimizer_learns_digits(digits_config, tmp_path, overrides):
  digits_config.update_from_flattened_dict(overrides)
  summary = train.train_and_evaluate(digits_config, str(tmp_path))
  assert summary["test_accuracy"] > 0.8
  last = [l for l in harness.lines(tmp_path) if l["split"] == "train"][-1]
  if digits_config.optimizer in ("signum", "lion"):
    # Hierarchical votes are of hosts; by default a host is the process's 4 workers.
    voters = 4 // (digits_config.workers_per_host or 4) if digits_config.vote.strategy == "hierarchical" else 4
    assert len(last["agreement"]) == len(last["kappa"]) == voters
  else:
    assert "agreement" not in last and "kappa" not in last


def test_negating_minority_is_outvoted_and_named(digits_config, tmp_path):
  digits_config.num_workers, digits_config.num_steps = 7, 45
  digits_config.eval_batch_size = 7 * 16
  digits_config.faults.kind, digits_config.faults.num_faulty = "negate", 3
  summary = train.train_and_evaluate(digits_config, str(tmp_path))
  assert summary["test_accuracy"] > 0.8
  assert summary["suspected_workers"] == [4, 5, 6]


def test_worker_lying_in_every_role_is_outvoted_and_named_with_replicas(digits_config, tmp_path):
  """alltoall with 3 voters a shard: worker 6 negates its ballot, negates the votes it returns and
  blames the honest workers in its counts; the run learns and names it, as a sender and as a voter."""
  digits_config.num_workers, digits_config.num_steps = 7, 45
  digits_config.eval_batch_size = 7 * 16
  digits_config.vote.strategy, digits_config.vote.replicas = "alltoall", 3
  digits_config.faults.kind, digits_config.faults.num_faulty = "negate", 1
  digits_config.faults.voter_kind, digits_config.faults.num_faulty_voters = "negate+blame", 1
  summary = train.train_and_evaluate(digits_config, str(tmp_path))
  assert summary["test_accuracy"] > 0.8
  assert summary["suspected_workers"] == [6] and summary["suspected_voters"] == [6]
  last = [l for l in harness.lines(tmp_path) if l["split"] == "train"][-1]
  assert last["suspected_voters"] == [6] and len(last["voter_kappa"]) == 7


def test_nan_worker_breaks_the_mean_but_the_run_goes_on_when_asked(digits_config, tmp_path):
  digits_config.optimizer, digits_config.learning_rate = "sgd", 0.1
  digits_config.faults.kind, digits_config.faults.num_faulty = "nan", 1
  summary = train.train_and_evaluate(digits_config, str(tmp_path))
  assert summary["test_loss"] is None  # NaN, written as null.
  logged = [l for l in harness.lines(tmp_path) if l["split"] == "train"]
  assert all(l["nonfinite_losses"] > 0 for l in logged)
  assert all(l["loss"] is None for l in logged[1:])  # Only the first step had finite parameters.


def test_a_workers_non_finite_loss_is_reported_and_absorbed():
  """Under a vote a worker with a non-finite loss abstains; the run goes on and the metrics say so.
  Only non-finite parameters stop it."""
  per_worker = {"loss": np.array([0.5, np.nan]), "accuracy": np.array([1.0, 0.0]), "params_finite": np.array([True, True])}
  shared = {"agreement": np.array([0.8, np.nan]), "kappa": np.array([0.6, np.nan]), "nonfinite": np.array([0, 10]),
            "voter_kappa": np.array([np.nan, np.nan])}
  out = train.summarize_train([(per_worker, shared)], 7, lambda step: 0.1, allow_nonfinite=False)
  assert out["loss"] == 0.5 and out["nonfinite_losses"] == 1 and out["nonfinite"] == [0.0, 10.0]
  assert np.isnan(out["kappa"][1]) and out["suspected_workers"] == []
  diverged = dict(per_worker, params_finite=np.array([True, False]))
  with pytest.raises(FloatingPointError, match="non-finite parameters at step 7"):
    train.summarize_train([(diverged, shared)], 7, lambda step: 0.1, allow_nonfinite=False)


def test_diverging_run_stops_naming_the_step(digits_config, tmp_path):
  digits_config.optimizer, digits_config.learning_rate = "sgd", 1e30
  with pytest.raises(FloatingPointError, match=r"non-finite \w+ at step \d+"):
    train.train_and_evaluate(digits_config, str(tmp_path))


def _largest_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _damage(path, how):
  if how == "flip":  # 64 bytes in the middle inverted.
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
  elif how == "truncate":
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  else:
    path.unlink()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_a_damaged_checkpoint_is_reported_and_the_run_resumes_from_the_one_before(data_dir, checkpointed_workdir,
                                                                                   capsys, how):
  tmp_path = checkpointed_workdir
  whole = harness.final_state(tmp_path, 30)
  _damage(_largest_file(tmp_path / "checkpoints" / "30" / "state"), how)
  capsys.readouterr()

  summary = train.train_and_evaluate(checkpointed_config(data_dir), str(tmp_path))
  reported = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
  assert len(reported) == 1 and "checkpoint of step 30" in reported[0], reported
  assert summary["resumed_from_step"] == 20
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(harness.final_state(tmp_path, 30)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_whose_stored_config_is_unreadable_is_kept_when_its_state_is_intact(
    data_dir, checkpointed_workdir, capsys):
  (checkpointed_workdir / "checkpoints" / "30" / "config" / "metadata").write_text("{not json")
  config = checkpointed_config(data_dir)
  config.num_steps = 31
  summary = train.train_and_evaluate(config, str(checkpointed_workdir))
  assert summary["resumed_from_step"] == 30
  assert "the config stored with the checkpoint of step 30 is unreadable" in capsys.readouterr().err


def test_no_intact_checkpoint_is_one_error_naming_the_folder(data_dir, checkpointed_workdir):
  for step in ("10", "20", "30"):
    _damage(_largest_file(checkpointed_workdir / "checkpoints" / step / "state"), "flip")
  with pytest.raises(ConfigError, match=f"no intact checkpoint in {checkpointed_workdir}/checkpoints"):
    train.train_and_evaluate(checkpointed_config(data_dir), str(checkpointed_workdir))


class Interrupted(Exception):
  pass


def test_interrupted_run_resumes_to_bit_identical_state(data_dir, checkpointed_run, tmp_path, monkeypatch):
  digits_config = checkpointed_config(data_dir)

  real_batches = train.input_pipeline.train_batches

  def dying_after_25_steps(*args, **kwargs):
    batches = real_batches(*args, **kwargs)
    for _ in range(25 - kwargs["start_step"]):
      yield next(batches)
    raise Interrupted

  monkeypatch.setattr(train.input_pipeline, "train_batches", dying_after_25_steps)
  with pytest.raises(Interrupted):
    train.train_and_evaluate(digits_config, str(tmp_path / "resumed"))
  assert max(l["step"] for l in harness.lines(tmp_path / "resumed")) == 25
  monkeypatch.setattr(train.input_pipeline, "train_batches", real_batches)
  summary = train.train_and_evaluate(digits_config, str(tmp_path / "resumed"))

  assert summary["resumed_from_step"] == 20
  whole, resumed = harness.final_state(checkpointed_run, 30), harness.final_state(tmp_path / "resumed", 30)
  assert jax.tree.structure(whole) == jax.tree.structure(resumed)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert harness.lines(checkpointed_run) == harness.lines(tmp_path / "resumed")  # Lines after step 20 rewritten.
  timed = ("train_seconds", "compile_seconds", "wire_bytes_per_host")  # Of one launch, not of the training.
  def tensorboard(workdir):
    return {k: v for k, v in harness.tensorboard_scalars(workdir).items() if not k[0].endswith(timed)}
  assert tensorboard(checkpointed_run) == tensorboard(tmp_path / "resumed")
  purges = [e.step for e in harness.tensorboard_events(tmp_path / "resumed") if e.HasField("session_log")]
  assert purges == [21]  # The resumed run's events drop what the first said of steps 21-25.


def test_workdir_of_another_config_is_refused(data_dir, checkpointed_workdir):
  config = checkpointed_config(data_dir)
  config.learning_rate = 1e-2
  with pytest.raises(ConfigError, match=r"different config \(learning_rate: 0.003 there, 0.01 here\)"):
    train.train_and_evaluate(config, str(checkpointed_workdir))


def test_checkpoint_of_an_older_trainer_is_refused_not_removed():
  """A config without fields added since (its state has another structure) is another version's."""
  config = default.get_config()
  saved = config_checks.config_to_json(config)
  del saved["vote"]["replicas"], saved["faults"]["voter_kind"]
  with pytest.raises(ConfigError, match=r"an older version of the trainer \(its config has no "
                                         r"faults.voter_kind, vote.replicas\); resume it with that version"):
    config_checks.check_resume(saved, config)


def test_longer_run_continues_from_the_checkpoint(data_dir, checkpointed_workdir):
  config = checkpointed_config(data_dir)
  config.num_steps = 40
  summary = train.train_and_evaluate(config, str(checkpointed_workdir))
  assert summary["resumed_from_step"] == 30 and summary["steps_trained"] == 10


def test_checkpoint_every_zero_saves_nothing_and_a_rerun_starts_over(digits_config, tmp_path):
  digits_config.num_steps, digits_config.checkpoint_every = 10, 0
  first = train.train_and_evaluate(digits_config, str(tmp_path))
  assert first["steps"] == 10 and not list((tmp_path / "checkpoints").glob("*"))
  assert [r["step"] for r in harness.lines(tmp_path) if r["split"] == "test"] == [10]
  again = train.train_and_evaluate(digits_config, str(tmp_path))
  assert again["resumed_from_step"] == 0 and again["test_accuracy"] == first["test_accuracy"]

  # Without checkpoints too, the workdir's results are its config's: another config is refused.
  written = (tmp_path / "metrics.jsonl").read_bytes()
  digits_config.optimizer = "adam"
  with pytest.raises(ConfigError, match=r"the workdir's results came from a different config \(optimizer: "
                                         r"'signum' there, 'adam' here\); use a new --workdir"):
    train.train_and_evaluate(digits_config, str(tmp_path))
  assert (tmp_path / "metrics.jsonl").read_bytes() == written


@pytest.mark.parametrize(
    "optimizer, expected",
    [("signum", {("all-gather", "u32")}), ("sgd", {("all-reduce", "f32")}), ("adam", {("all-reduce", "f32")})],
)
def test_train_step_sends_only_what_the_optimizer_exchanges(digits_config, optimizer, expected):
  """Gradients stay per worker until the optimizer: a signum step moves sign words and nothing else."""
  digits_config.optimizer = optimizer
  exp, state, step, batches = _compiled_step(digits_config)
  found = hlo.counts(step.lower(state, next(batches)).compile().as_text())
  assert set(found) == expected, found


def test_train_step_compiles_once_and_keeps_types(digits_config):
  exp, state, step, batches = _compiled_step(digits_config)
  dtypes = jax.tree.map(lambda x: x.dtype, state)
  for _ in range(3):
    state, _ = step(state, next(batches))
  assert step._cache_size() == 1
  assert jax.tree.map(lambda x: x.dtype, state) == dtypes
  assert int(np.asarray(state.step)) == 3


def _compiled_step(config):
  exp = train.Experiment.create(config)
  state, specs = train.create_train_state(exp)
  local = input_pipeline.train_batches(exp.data, global_batch_size=exp.global_batch_size, seed=0,
                                       process_index=0, process_count=1)
  batches = (train.global_batch(b, exp.mesh) for b in local)
  return exp, state, train.make_train_step(exp, specs), batches


@pytest.mark.parametrize("num_workers", [3, 5, 6, 7])
def test_the_main_config_runs_on_any_number_of_workers(data_dir, tmp_path, num_workers):
  """configs/digits.py as shipped with only the worker count changed (and two steps): evaluation pads
  its last batch to a multiple of the workers and still counts every test example once."""
  config = digits.get_config()
  config.data_dir, config.progress_bar, config.num_workers, config.num_steps = data_dir, False, num_workers, 2
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 2 and 0 <= summary["test_accuracy"] <= 1
  assert summary["test_accuracy"] * 360 == pytest.approx(round(summary["test_accuracy"] * 360))  # 360 test digits.


def test_remapping_the_state_of_three_workers_onto_five():
  """New worker i takes worker i mod M's momentum; batch statistics are averaged; the vote's
  statistics of M workers start afresh; everything else is kept."""
  momentum = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
  saved = {"params": np.ones(2), "model_state": {"mean": np.array([[1.0], [2.0], [6.0]])},
           "opt_state": {"ema": momentum, "kappa": np.array([0.1, 0.2, 0.3]), "count": np.array(7)}}
  fresh = {"params": np.zeros(2), "model_state": {"mean": np.zeros((5, 1))},
           "opt_state": {"ema": np.zeros((5, 2), np.float32), "kappa": np.full(5, np.nan), "count": np.array(0)}}
  stacked = {"params": False, "model_state": {"mean": True}, "opt_state": {"ema": True, "kappa": False, "count": False}}
  averaged = {"params": False, "model_state": {"mean": True}, "opt_state": {"ema": False, "kappa": False, "count": False}}
  out = elastic.remap_workers(saved, fresh, stacked, averaged)
  np.testing.assert_array_equal(out["opt_state"]["ema"], momentum[[0, 1, 2, 0, 1]])
  np.testing.assert_array_equal(out["model_state"]["mean"], np.full((5, 1), 3.0))
  assert np.isnan(out["opt_state"]["kappa"]).all() and out["opt_state"]["kappa"].shape == (5,)
  assert int(out["opt_state"]["count"]) == 7 and (out["params"] == 1).all()


def test_the_checksum_is_summed_from_where_the_state_lives_whatever_its_layout():
  """SHA-256 of each worker's row of a per-worker leaf and of each other leaf, summed modulo 2**256
  (computed here with hashlib alone); the same whether the rows are spread over 4 devices or
  replicated, and another for a changed bit or two swapped rows."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("workers",),
                           axis_types=(jax.sharding.AxisType.Explicit,))
  momentum, params = np.arange(4 * 3, dtype=np.float32).reshape(4, 3), np.array([0.5, -2.0], np.float32)
  stacked = {"momentum": True, "params": False}

  def placed(m, spec):
    return {"momentum": jax.device_put(m, jax.sharding.NamedSharding(mesh, P(spec))),
            "params": jax.device_put(params, jax.sharding.NamedSharding(mesh, P()))}

  def unit(name, array):
    digest = hashlib.sha256(f"{name}:{array.dtype}:{array.shape};".encode() + array.tobytes())
    return int.from_bytes(digest.digest(), "big")

  expected = (sum(unit(f"['momentum'][{i}]", row) for i, row in enumerate(momentum)) + unit("['params']", params)) % 2**256
  assert checkpoints.fingerprint(placed(momentum, "workers"), stacked) == f"{expected:064x}"
  assert checkpoints.fingerprint(placed(momentum, None), stacked) == f"{expected:064x}"
  flipped = momentum.copy()
  flipped.view(np.uint32)[2, 1] ^= 1
  assert checkpoints.fingerprint(placed(flipped, "workers"), stacked) != f"{expected:064x}"
  assert checkpoints.fingerprint(placed(momentum[[1, 0, 2, 3]], "workers"), stacked) != f"{expected:064x}"


def test_a_non_finite_leaf_is_damage_unless_it_is_an_unmeasured_statistic():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("workers",),
                           axis_types=(jax.sharding.AxisType.Explicit,))

  def state(momentum_value):
    momentum = np.full((4, 3), momentum_value, np.float32)
    return {"momentum": jax.device_put(momentum, jax.sharding.NamedSharding(mesh, P("workers"))),
            "kappa": jax.device_put(np.full(4, np.nan, np.float32), jax.sharding.NamedSharding(mesh, P())),
            "count": jax.device_put(np.int32(3), jax.sharding.NamedSharding(mesh, P()))}

  may_be_nan = {"momentum": False, "kappa": True, "count": False}
  assert checkpoints._nonfinite_leaf(state(0.5), may_be_nan) is None  # pylint: disable=protected-access
  assert checkpoints._nonfinite_leaf(state(np.inf), may_be_nan) == "['momentum']"  # pylint: disable=protected-access
  assert checkpoints._nonfinite_leaf(state(0.5), {**may_be_nan, "kappa": False}) == "['kappa']"  # pylint: disable=protected-access


def test_elastic_resume_on_four_then_six_workers(data_dir, main_run, tmp_path, capsys):
  """8 workers, then the same run resumed on 4, then on 6: it goes on, and ends as accurate (within
  1 point) as the uninterrupted run on 8 (the main job, whose checkpoints are every 100 steps too)."""
  def run(num_workers, num_steps, workdir):
    config = digits.get_config()
    config.data_dir, config.progress_bar, config.num_workers, config.num_steps = data_dir, False, num_workers, num_steps
    config.checkpoint_every = 100
    return train.train_and_evaluate(config, str(workdir))

  main_config, whole, _ = main_run
  assert (main_config.num_steps, main_config.checkpoint_every) == (300, 100)
  run(8, 100, tmp_path / "elastic")
  run(4, 200, tmp_path / "elastic")
  assert "saved by 8 workers, on 4: new worker i takes the momentum of worker i mod 8" in capsys.readouterr().err
  # The worker count comes from the saved state itself, not from the config stored beside it.
  stored = tmp_path / "elastic" / "checkpoints" / "200" / "config" / "metadata"
  stored.write_text(json.dumps({**json.loads(stored.read_text()), "num_workers": 5}))
  resumed = run(6, 300, tmp_path / "elastic")
  assert "saved by 4 workers, on 6" in capsys.readouterr().err
  assert resumed["resumed_from_step"] == 200 and len(resumed["devices"]) == 6
  assert abs(resumed["test_accuracy"] - whole["test_accuracy"]) <= 0.01, (resumed["test_accuracy"], whole["test_accuracy"])
  state = harness.final_state(tmp_path / "elastic", 300)
  assert all(m.shape[0] == 6 for m in jax.tree.leaves(state["opt_state"][0]["ema"]))
