"""Training and evaluation with M workers, one per device, in one ``jax.shard_map`` over a mesh.

Parameters are replicated: every worker applies the same vote (or mean), so they stay equal and
are typed invariant. Each worker differentiates its own batch with a per-worker (varying) copy of
the parameters, so no gradient is summed behind the optimizer's back: the optimizer's exchange is
the only collective in a training step. Per-worker optimizer state (Signum's momentum) leaves the
map stacked along a leading worker dimension; everything else leaves replicated.
"""

import contextlib
import dataclasses
import math
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax import hlo
from train import checkpoints, config_checks, distributed, input_pipeline, models, optimizers, reporting, vote_statistics
from train.errors import ConfigError
from train.preemption import Preempted, Preemption
from train.workdir import check_workdir, claim_workdir



@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; what a checkpoint holds."""

  step: jax.Array  # i32[], replicated: optimizer steps taken.
  params: Any  # Replicated model parameters.
  model_state: Any  # Per-worker model variables (batch statistics), stacked over the workers.
  opt_state: Any  # Per-worker leaves stacked over the workers, the rest replicated.


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a run is made of, built and checked from its config before anything is trained."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  data: input_pipeline.ImageDataset | input_pipeline.LanguageDataset
  model: Any  # flax.linen.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  global_batch_size: int
  steps_per_epoch: int
  num_steps: int

  @classmethod
  def create(cls, config) -> "Experiment":
    config_checks.check_keys(config)
    config_checks.check_values(config)
    vote = optimizers.create_vote(config)
    mesh = create_mesh(config, hierarchical=vote is not None and vote.plan.hierarchical)
    data = input_pipeline.load_dataset(config)
    global_batch_size = config.num_workers * config.per_worker_batch_size
    steps_per_epoch = len(data.train) // global_batch_size
    if steps_per_epoch < 1:
      raise ConfigError(
          f"the global batch of {global_batch_size} (num_workers={config.num_workers} x "
          f"per_worker_batch_size={config.per_worker_batch_size}) is larger than the "
          f"{len(data.train)} training examples; lower per_worker_batch_size."
      )
    num_steps = config.num_steps if config.num_steps > 0 else math.ceil(config.num_epochs * steps_per_epoch)
    schedules = optimizers.create_schedules(config, steps_per_epoch)
    return cls(
        config=config,
        mesh=mesh,
        data=data,
        model=models.create_model(config, data.num_classes),
        tx=optimizers.create_optimizer(config, schedules, mesh, vote),
        schedule=schedules.learning_rate,
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch,
        num_steps=num_steps,
    )


def create_mesh(config, hierarchical: bool = False) -> jax.sharding.Mesh:
  """``num_workers`` devices, the same number from each process, in process order.

  The axis is ``"workers"``; a ``hierarchical`` vote splits it into ``("hosts", "devices")``, with
  ``workers_per_host`` devices (default: one process's) summing their momentum before voting.
  """
  config_checks.check_devices(config, jax.process_count(), jax.local_device_count())
  per_process = config.num_workers // jax.process_count()

  def first_devices_of(process):
    return [d for d in jax.devices() if d.process_index == process][:per_process]

  devices = [d for process in range(jax.process_count()) for d in first_devices_of(process)]
  if hierarchical:
    per_host = config.workers_per_host or per_process
    if config.num_workers % per_host:
      raise ConfigError(f"workers_per_host={per_host} must divide num_workers={config.num_workers}.")
    shape, names = (config.num_workers // per_host, per_host), ("hosts", "devices")
  else:
    shape, names = (config.num_workers,), ("workers",)
  axis_types = (jax.sharding.AxisType.Explicit,) * len(names)
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), names, axis_types=axis_types)


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy and whether the top class is right."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return losses, correct


def batch_statistics(state: TrainState) -> TrainState:
  """True for each leaf of ``model_state`` (a worker's batch statistics), False elsewhere: what an
  elastic resume averages over the old workers instead of handing it from worker to worker."""
  return jax.tree.map(lambda _: False, state).replace(model_state=jax.tree.map(lambda _: True, state.model_state))


def unmeasured_statistics(state: TrainState) -> TrainState:
  """True for each leaf of the vote's agreement statistics in ``opt_state``, which are NaN where
  nothing was measured (a worker that abstained everywhere, shards with one voter); False elsewhere."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "name", None) in vote_statistics.MAY_BE_UNMEASURED, state)


def create_train_state(exp: Experiment) -> tuple[TrainState, TrainState]:
  """The initial state on the mesh and the specs that carry it through ``shard_map``.

  It is built by a ``shard_map`` like the one of the train step, so that the first step's input
  has exactly the shardings of every later one and the step compiles once.
  """
  axes = exp.mesh.axis_names

  def init():
    dummy = jnp.zeros((1, *exp.data.input_shape), exp.data.input_dtype)
    variables = dict(exp.model.init(jax.random.key(exp.config.seed), dummy))
    params = variables.pop("params")
    # Batch statistics are each worker's own (from its own batches): typed varying, stacked.
    model_state = jax.tree.map(lambda x: jax.lax.pcast(x, axes, to="varying"), variables)
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, model_state=model_state, opt_state=exp.tx.init(params))

  state = sv.init_per_worker(init, exp.mesh)
  return state, sv.partition_specs(state)


def make_train_step(exp: Experiment, specs: TrainState):
  """A jitted step: each worker's loss and gradients on its batch, then the optimizer's exchange.

  Returns ``(state, metrics)``. Loss and accuracy are per worker (``[M]``, averaged on the host, so
  that the step holds no collective beyond the optimizer's); ``agreement`` and ``kappa`` are the
  vote's statistics of this step (``f32[M]`` each, equal on every worker), if the optimizer votes.
  """
  model, tx, axes = exp.model, exp.tx, exp.mesh.axis_names
  dropout_key = jax.random.key(exp.config.seed + 1)

  def step(state, batch):
    # The optimizer takes its state as the map carries it (per-worker leaves in blocks of one worker).
    state = state.replace(model_state=sv.unstack_per_worker(state.model_state))
    # Each worker and step draws its own dropout mask, the same again when a run resumes.
    worker = jax.lax.axis_index(axes)
    rngs = {"dropout": jax.random.fold_in(jax.random.fold_in(dropout_key, state.step), worker)}

    def loss_fn(params):
      logits, model_state = model.apply(
          {"params": params, **state.model_state}, batch["inputs"], train=True, rngs=rngs,
          mutable=list(state.model_state))
      losses, correct = cross_entropy(logits, batch["targets"])
      return losses.mean(), (correct.mean(), model_state)

    # Differentiating a varying copy keeps the gradients per worker: through replicated (invariant)
    # parameters, autodiff would psum them over the workers.
    own_params = jax.lax.pcast(state.params, axes, to="varying")
    (loss, (accuracy, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(own_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    per_worker = {"loss": loss[None], "accuracy": accuracy[None], "params_finite": finite[None]}
    statistics = {name: optax.tree.get(opt_state, name) for name in vote_statistics.LOGGED}
    shared = {} if statistics["kappa"] is None else statistics
    return new_state.replace(model_state=sv.stack_per_worker(model_state)), (per_worker, shared)

  mapped = jax.shard_map(step, mesh=exp.mesh, in_specs=(specs, P(axes)), out_specs=(specs, (P(axes), P())))
  return jax.jit(mapped, donate_argnums=0)


def make_eval_step(exp: Experiment, specs: TrainState):
  """A jitted step: per worker, the summed loss, top-1 and top-5 hits and count of its masked rows
  (of their tokens, for a language model).

  The model runs with the workers' mean batch statistics (an all-reduce of a few floats per
  channel, at evaluation only).
  """
  model, axes = exp.model, exp.mesh.axis_names

  def step(params, model_state, batch):
    model_state = jax.lax.pmean(sv.unstack_per_worker(model_state), axes)
    logits = model.apply({"params": params, **model_state}, batch["inputs"], train=False)
    losses, correct = cross_entropy(logits, batch["targets"])
    top5 = top_k_correct(logits, batch["targets"], 5)
    # One weight per example, spread over its tokens for a language model.
    weights = jnp.broadcast_to(batch["mask"].reshape(batch["mask"].shape + (1,) * (losses.ndim - 1)), losses.shape)
    sums = jnp.stack([jnp.sum(v * weights) for v in (losses, correct, top5, jnp.ones_like(weights))])
    return sums[None]

  in_specs = (P(), specs.model_state, P(axes))
  return jax.jit(jax.shard_map(step, mesh=exp.mesh, in_specs=in_specs, out_specs=P(axes)))


def top_k_correct(logits, labels, k):
  """1.0 where the label is among the ``k`` highest logits (all of them if there are fewer)."""
  k = min(k, logits.shape[-1])
  return jnp.any(jax.lax.top_k(logits, k)[1] == labels[..., None], axis=-1).astype(jnp.float32)


def global_batch(local: dict, mesh) -> dict:
  """This process's rows of a global batch, split over its devices along the workers' axis."""
  sharding = NamedSharding(mesh, P(mesh.axis_names))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def eval_global_batch_size(config) -> int:
  """``eval_batch_size`` rounded up to a multiple of ``num_workers``, so that each worker evaluates
  an equal share (the rows added are padding, masked out of the metrics)."""
  return -(-config.eval_batch_size // config.num_workers) * config.num_workers


def evaluate(exp: Experiment, eval_step, state: TrainState) -> dict:
  """Mean loss, accuracy and top-5 accuracy (per token for a language model, with perplexity)."""
  totals = np.zeros(4)
  for local in input_pipeline.eval_batches(
      exp.data, global_batch_size=eval_global_batch_size(exp.config), process_index=jax.process_index(),
      process_count=jax.process_count(), num_threads=exp.config.num_data_threads):
    totals += distributed.to_host(eval_step(state.params, state.model_state, global_batch(local, exp.mesh))).sum(0)
  loss, correct, top5, count = totals
  metrics = {"loss": loss / count, "accuracy": correct / count, "top5_accuracy": top5 / count}
  if exp.data.is_language:
    metrics["perplexity"] = float(np.exp(metrics["loss"]))
  return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       preemption: Preemption | None = None) -> dict:
  """Trains ``config`` in ``workdir`` (resuming its latest checkpoint) and returns the summary.

  With ``preemption`` (what ``python -m train`` passes), SIGTERM or SIGINT stop the job after a
  step all processes agree on, with a checkpoint there: :class:`Preempted` says which.
  """
  start_time = time.time()
  check_workdir(workdir)
  exp = Experiment.create(config)
  state, specs = create_train_state(exp)
  with (claim_workdir(workdir, config),
        checkpoints.Checkpointer(workdir, config) as checkpointer,
        preemption or contextlib.nullcontext()):
    state = checkpointer.restore_or(state, averaged=batch_statistics(state), may_be_nan=unmeasured_statistics(state))
    start_step = int(distributed.to_host(state.step))
    report = reporting.Reporter(
        workdir, start_step=start_step, num_steps=exp.num_steps, enabled=distributed.is_leader(),
        progress=config.progress_bar, title=run_title(config, exp))
    train_loop(exp, state, specs, start_step, checkpointer, report, preemption)
    last_eval = report.last(config.eval_split)
    summary = {
        **{f"test_{k}": last_eval.get(k) for k in ("accuracy", "loss", "top5_accuracy", "perplexity")},
        "steps": max(exp.num_steps, start_step),  # The state's step: a checkpoint may be past num_steps.
        "steps_trained": max(0, exp.num_steps - start_step),
        "resumed_from_step": start_step,
        "wall_seconds": time.time() - start_time,
        "num_processes": jax.process_count(),
        "process_index": jax.process_index(),
        "devices": [str(d) for d in exp.mesh.devices.flat],
        **vote_statistics.over_run(report.records),
        "config": config_checks.config_to_json(config),
    }
    report.finish(summary)
  return summary


def run_title(config, exp: Experiment) -> str:
  """What a run is, in one line (the title of its curves.png)."""
  method = config.optimizer if config.optimizer not in optimizers.VOTING else (
      f"{config.optimizer}, {config.vote.strategy} vote" + (f" (r={config.vote.replicas})" if config.vote.replicas > 1 else ""))
  faults = f", {config.faults.num_faulty} {config.faults.kind}" if config.faults.kind else ""
  return (f"{config.model} on {config.dataset}: {method}, lr {config.learning_rate:g}, {config.num_workers} workers x "
          f"{config.per_worker_batch_size}{faults}, {exp.num_steps} steps ({time.strftime('%Y-%m-%d')})")


def train_loop(exp: Experiment, state: TrainState, specs: TrainState, start_step: int, checkpointer, report,
               preemption: Preemption | None = None) -> TrainState:
  """From ``start_step`` (``state.step``) to ``exp.num_steps``: train, and log, evaluate and save on their periods.

  A preemption ends the loop early: after the step the processes agreed on, its metrics written
  and its checkpoint saved, with :class:`Preempted`.
  """
  config, mesh = exp.config, exp.mesh
  train_step, eval_step = make_train_step(exp, specs), make_eval_step(exp, specs)
  allow_nonfinite = config_checks.is_fault_experiment(config)
  batches = input_pipeline.train_batches(
      exp.data, global_batch_size=exp.global_batch_size, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), start_step=start_step, num_threads=config.num_data_threads)
  pending = []  # Per-step metrics still on the device: fetched once per log period.
  clock = Stopwatch(report.last("train").get("train_seconds", 0.0))  # Continued on resume.
  unreported = {}  # What the next train record says once: this process's compile time and wire bytes.
  for done in range(start_step + 1, exp.num_steps + 1):
    batch = global_batch(next(batches), mesh)
    if done == start_step + 1:  # Compiled ahead of its first call, so that compiling is timed apart.
      started = time.perf_counter()
      train_step = train_step.lower(state, batch).compile()
      unreported = {"compile_seconds": time.perf_counter() - started, "wire_bytes_per_host": wire_bytes_per_host(train_step)}
    state, metrics = train_step(state, batch)
    pending.append(metrics)
    # Asked at every step, as the agreement needs; a preemption at the last step changes nothing.
    stop = preemption is not None and preemption.reached(done) and done < exp.num_steps
    last = done == exp.num_steps or stop
    if done % config.log_every == 0 or last:
      summary = summarize_train(pending, done, exp.schedule, allow_nonfinite)  # Waits for the steps.
      report.write(done, "train", {**summary, "train_seconds": clock.seconds(), **unreported})
      pending, unreported = [], {}
    evaluating = done % config.eval_every == 0 or (last and not stop)  # A preempted job has no time to spare.
    saving = config.checkpoint_every and (done % config.checkpoint_every == 0 or last)
    if evaluating or saving:
      with clock.paused(state):
        if evaluating:
          report.write(done, config.eval_split, {**evaluate(exp, eval_step, state), "train_seconds": clock.seconds()})
        if saving:
          with report.saving(done):
            checkpointer.save(done, state)
    if stop:
      raise Preempted(done, preemption.exit_status, saved=config.checkpoint_every > 0)
    report.advance(done)
  return state


class Stopwatch:
  """Wall time spent training: compiling included, evaluating and saving not (paused around them,
  as big_vision's ``chrono``), continued from ``seconds`` on resume."""

  def __init__(self, seconds: float = 0.0):
    self._before, self._since = seconds, time.perf_counter()

  def seconds(self) -> float:
    return self._before + (0.0 if self._since is None else time.perf_counter() - self._since)

  @contextlib.contextmanager
  def paused(self, state):
    jax.block_until_ready(state)  # The steps still running are training time.
    self._before, self._since = self.seconds(), None
    try:
      yield
    finally:
      self._since = time.perf_counter()


def wire_bytes_per_host(compiled) -> float:
  """Bytes this process's devices send to other processes in one step: the step's collectives at
  their bandwidth-optimal cost (:func:`signvote_jax.hlo.bytes_per_device`), those between the
  devices of a process left out."""
  network, _ = hlo.bytes_per_device(compiled.as_text(), jax.device_count(), jax.process_count())
  return network * jax.local_device_count()


def summarize_train(pending, done, schedule, allow_nonfinite) -> dict:
  """Train metrics averaged over the steps in ``pending`` (the last of them is step ``done``).

  A worker's non-finite loss does not stop the run: under a vote that worker abstains for the step
  (and is counted in ``nonfinite``); the loss is averaged over the finite values and
  ``nonfinite_losses`` counts the others. Only non-finite parameters stop it.

  The vote's statistics are averaged too (:func:`train.vote_statistics.over_steps`).
  """
  fetched = distributed.to_host(pending)
  first = done - len(fetched) + 1
  if not allow_nonfinite:
    for offset, (per_worker, _) in enumerate(fetched):
      if not np.all(per_worker["params_finite"]):
        raise FloatingPointError(
            f"non-finite parameters at step {first + offset}; lower the learning_rate (a fault "
            "experiment, faults.kind, allows them)."
        )
  losses = np.asarray([m["loss"] for m, _ in fetched])
  finite = np.isfinite(losses)
  out = {
      "loss": float(np.mean(losses[finite])) if finite.any() else float("nan"),
      "nonfinite_losses": int((~finite).sum()),
      "accuracy": float(np.mean([m["accuracy"] for m, _ in fetched])),
      "learning_rate": float(schedule(done - 1)),
  }
  if fetched[0][1]:
    out.update(vote_statistics.over_steps([shared for _, shared in fetched]))
  return out
