"""What :mod:`benchmarks.cluster` times in each worker process: one step of a workload, ready to call.

Each builder returns a :class:`benchmarks.timing.Stepping`: ``step()`` runs one step on this
process's inputs (the first call compiles); ``step.compile()`` only compiles. A process is a host
and holds its devices (one, or ``per_host`` for the hierarchical vote). Parameters are replicated;
gradients, batches and optimizer state that differ per worker are this process's own shards of
arrays stacked over the workers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import signvote_jax as sv
from benchmarks import timing
from configs import resnet18_cifar10_signum
from train import models

P = jax.sharding.PartitionSpec
IMAGE_SHAPE = (32, 32, 3)


def tree_shapes(coordinates: int, leaves: int) -> dict:
  """``coordinates`` split into ``leaves`` leaves of decreasing size (like layers), float32."""
  weights = np.arange(leaves, 0, -1, dtype=np.float64)
  sizes = np.floor(coordinates * weights / weights.sum()).astype(int)
  sizes[0] += coordinates - sizes.sum()
  return {f"layer{i:02d}": (int(s),) for i, s in enumerate(sizes)}


def optimizer(method: str, axes) -> optax.GradientTransformation:
  if method == "sgd_allreduce":
    return optax.chain(sv.mean_allreduce(axes), optax.sgd(0.1, momentum=0.9))
  if method == "signum_hierarchical":
    return sv.signum(1e-4, vote=sv.Vote(axes[0], inner_axis_name=axes[1], strategy="hierarchical",
                                           outer_strategy="alltoall"))
  return sv.signum(1e-4, vote=sv.Vote(axes, strategy=method.removeprefix("signum_")))


def _mesh(per_host: int) -> jax.sharding.Mesh:
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  shape, names = (((len(devices),), ("workers",)) if per_host == 1
                  else ((len(devices) // per_host, per_host), ("hosts", "devices")))
  return jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names), devices=devices)


def _global(mesh, spec, shape, make_local):
  """A global array of ``shape`` sharded by ``spec`` whose shards this process fills with ``make_local(shape)``."""
  sharding = jax.sharding.NamedSharding(mesh, spec)

  def shard(index):
    return make_local(tuple(len(range(*s.indices(n))) for s, n in zip(index, shape)))

  return jax.make_array_from_callback(shape, sharding, shard)


def _per_worker_random(seed):
  rng = np.random.default_rng(seed + 1000 * jax.process_index())
  return lambda shape: rng.normal(size=shape).astype(np.float32)


def _model():
  config = resnet18_cifar10_signum.get_config()
  model = models.create_model(config, 10)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  return model, variables.pop("params"), variables


def _loss(model, params, model_state, images, labels):
  logits, _ = model.apply({"params": params, **model_state}, images, train=True, mutable=["batch_stats"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def distributed_step(workload: str, method: str, per_host: int, batch: int, coordinates: int, leaves: int):
  """One step over all processes: ``workload`` with ``method``'s exchange; ``batch`` images per host."""
  mesh = _mesh(per_host)
  names = mesh.axis_names
  workers = mesh.devices.size
  opt = sv.shard_optimizer(optimizer(method, names if per_host > 1 else names[0]), mesh)
  replicate = lambda x: _global(mesh, P(), x.shape, lambda _: np.asarray(x))  # pylint: disable=unnecessary-lambda-assignment

  if workload == "optimizer_step":
    params = {k: replicate(np.zeros(s, np.float32)) for k, s in tree_shapes(coordinates, leaves).items()}
    data = ({k: _global(mesh, P(names), (workers, *v.shape), _per_worker_random(i)) for i, (k, v) in enumerate(params.items())},)
    data_specs = (P(names),)
    model_state = None

    def gradients(params, grads):
      return jax.tree.map(lambda g: g[0], grads)
  else:
    model, host_params, host_state = _model()
    params = jax.tree.map(replicate, host_params)
    model_state = jax.tree.map(replicate, host_state)
    hosts = workers // per_host
    images = _global(mesh, P(names), (hosts * batch, *IMAGE_SHAPE), _per_worker_random(0))
    labels = _global(mesh, P(names), (hosts * batch,), lambda shape: np.arange(np.prod(shape), dtype=np.int32) % 10)
    data, data_specs = (model_state, images, labels), (P(), P(names), P(names))

    def gradients(params, model_state, images, labels):
      # A varying copy: each worker's own gradient, with no all-reduce behind the optimizer's back.
      own = jax.lax.pcast(params, names, to="varying")
      return jax.grad(functools.partial(_loss, model))(own, model_state, images, labels)

  state = opt.init(params)
  specs = sv.partition_specs(state)

  def body(params, state, *data):
    updates, state = opt.update(gradients(params, *data), state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), specs, *data_specs), out_specs=(P(), specs)),
                 donate_argnums=(0, 1))
  return timing.Stepping(step, params, state, data)


def local_step(workload: str, batch: int, coordinates: int, leaves: int):
  """The same workload (a host's ``batch``) on this process's first device alone, with SGD and no
  exchange: the compute."""
  opt = optax.sgd(0.1, momentum=0.9)
  if workload == "optimizer_step":
    params = {k: jnp.zeros(s, jnp.float32) for k, s in tree_shapes(coordinates, leaves).items()}
    grads = {k: jnp.asarray(_per_worker_random(i)(s)) for i, (k, s) in enumerate(tree_shapes(coordinates, leaves).items())}
    data = (grads,)

    def gradients(params, grads):
      del params
      return grads
  else:
    model, params, model_state = _model()
    images = jnp.asarray(_per_worker_random(0)((batch, *IMAGE_SHAPE)))
    labels = jnp.arange(batch, dtype=jnp.int32) % 10
    data = (model_state, images, labels)
    gradients = jax.grad(functools.partial(_loss, model))

  def body(params, state, *data):
    updates, state = opt.update(gradients(params, *data), state, params)
    return optax.apply_updates(params, updates), state

  return timing.Stepping(jax.jit(body, donate_argnums=(0, 1)), params, opt.init(params), data)
