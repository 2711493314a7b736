"""Runs an optimizer on M simulated workers inside jax.shard_map (or jax.pmap) for the tests."""

import glob
import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

# A tree with leaves of awkward sizes: a scalar, sizes that are not multiples of 32 or of M.
SHAPES = {"a": (3, 5), "b": (), "c": (37,), "d": (2, 33)}


def mesh(shape, names):
  """An explicit mesh over the first prod(shape) simulated devices."""
  devices = np.asarray(jax.devices()[: math.prod(shape)]).reshape(shape)
  return jax.sharding.Mesh(devices, names, axis_types=(AxisType.Explicit,) * len(shape))


def update_once(opt, updates, mesh_, worker_axes):
  """One ``opt.update`` from a fresh state on every worker of ``mesh_``.

  ``updates`` holds each worker's update tree stacked over ``worker_axes`` (leaves ``[M, ...]``).
  Returns the updates and the state, which must be equal on every worker (a vote and its statistics).
  """
  spec = P(worker_axes)

  def worker(stacked):
    own = jax.tree.map(lambda leaf: leaf[0], stacked)
    return opt.update(own, opt.init(own))

  run = jax.jit(jax.shard_map(worker, mesh=mesh_, in_specs=spec, out_specs=P()))
  return run(jax.device_put(updates, NamedSharding(mesh_, spec)))


def flat(tree) -> np.ndarray:
  """Leaves in tree order (sorted dict keys) as one float64 vector, for the numpy reference."""
  return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def unflat(vector, shapes=SHAPES):
  out, start = {}, 0
  for key in sorted(shapes):
    size = math.prod(shapes[key])
    out[key] = np.asarray(vector[start : start + size], np.float32).reshape(shapes[key])
    start += size
  return out


class NoisyQuadratic:
  """Worker m's gradient at step t: (x - center + noise[m, t]) * factor[m, t] (elementwise, the same
  in numpy and JAX); ``factor`` is 1 unless a test sets zeros (nothing to say) or NaN in it."""

  def __init__(self, num_workers, steps, seed=0, noise=1.0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    self.size = sum(math.prod(s) for s in shapes.values())
    self.shapes = shapes
    self.center = rng.normal(size=self.size).astype(np.float32)
    self.noise = (noise * rng.normal(size=(num_workers, steps, self.size))).astype(np.float32)
    self.factor = np.ones_like(self.noise)
    self.x0 = rng.normal(size=self.size).astype(np.float32)

  def numpy_grad(self, x, m, t):
    return ((x.astype(np.float32) - self.center + self.noise[m, t]) * self.factor[m, t]).astype(np.float64)

  def leaf_sizes(self):
    """The leaves' sizes in tree order (sorted keys)."""
    return [math.prod(self.shapes[key]) for key in sorted(self.shapes)]

  def leaf(self, vector, key):
    """The coordinates of leaf ``key`` in a flat vector (or along the last axis of an array)."""
    start = sum(math.prod(self.shapes[k]) for k in sorted(self.shapes) if k < key)
    return vector[..., start : start + math.prod(self.shapes[key])]

  def tree(self, vector):
    return {k: jnp.asarray(v) for k, v in unflat(vector, self.shapes).items()}

  def per_worker_trees(self):
    """Noise and factor as trees of leaves ``[M, T, *shape]``."""
    m, t = self.noise.shape[:2]
    out = ({}, {})
    start = 0
    for key in sorted(self.shapes):
      size = math.prod(self.shapes[key])
      for tree, values in zip(out, (self.noise, self.factor)):
        tree[key] = values[:, :, start : start + size].reshape(m, t, *self.shapes[key])
      start += size
    return out


def run_shard_map(opt, problem, steps, mesh_, worker_axes):
  """Trains ``problem`` for ``steps`` on every worker of ``mesh_``; returns params and final state.

  The whole run is one jit of a shard_map holding a lax.scan, with check_vma on: parameters stay
  invariant (every worker applies the same vote) and per-worker momentum is varying.
  """
  center = problem.tree(problem.center)
  spec = P(worker_axes)

  def worker(params, inputs):
    noise, factor = jax.tree.map(lambda n: n[0], inputs)

    def step(carry, t):
      p, s = carry
      grads = jax.tree.map(lambda x, c, n, f: (x - c + n[t]) * f[t], p, center, noise, factor)
      updates, s = opt.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), None

    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params, jax.tree.map(lambda x: x[None], state)

  inputs = jax.device_put(problem.per_worker_trees(), NamedSharding(mesh_, spec))
  run = jax.jit(jax.shard_map(worker, mesh=mesh_, in_specs=(P(), spec), out_specs=(P(), spec)))
  params = jax.device_put(problem.tree(problem.x0), NamedSharding(mesh_, P()))
  params, state = run(params, inputs)
  return jax.tree.map(np.asarray, params), state


# The trainer's tests: where the checkout is, and what a run leaves in its workdir.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(workdir, *, timed=False):
  """The records of a run's metrics.jsonl.

  Without unless ``timed`` the fields that describe one launch rather than the training: wall times, and the
  wire bytes of the compiled step (which a resumed run reports again and which depend on how many processes ran).
  """
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  per_launch = ("train_seconds", "compile_seconds", "wire_bytes_per_host")
  return records if timed else [{k: v for k, v in r.items() if k not in per_launch} for r in records]


def final_state(workdir, step):
  """The state saved at ``step``, read back by Orbax without the trainer's help, as numpy."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel  (the train extra)

  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), checkpointer.metadata(path).item_metadata.tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


TINY_TEXT = {
    "wiki.train.tokens": " = Cats = \n\n the cat sat on the mat . \n the dog sat on the log . \n a cat saw a dog . \n",
    "wiki.valid.tokens": " the dog saw the cat . \n",
    "wiki.test.tokens": " a bird sat on the mat . \n",
}


def write_tiny_wikitext(folder) -> str:
  """A WikiText-shaped folder of a few lines; returns its path."""
  os.makedirs(folder, exist_ok=True)
  for name, text in TINY_TEXT.items():
    with open(os.path.join(folder, name), "w") as f:
      f.write(text)
  return str(folder)


def tensorboard_events(workdir) -> list:
  """Every Event of the TFRecord event files in ``workdir``, read with the record framing written out
  here (8-byte length, its 4-byte CRC, the data, its CRC) and TensorBoard's Event protocol buffer."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel

  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      events.append(event)
      offset += 12 + length + 4
  return events


def tensorboard_scalars(workdir) -> dict:
  """``{(tag, step): value}`` of the scalar summaries in ``workdir``'s events, as TensorBoard shows
  them: a purge (a session restarted at step s, what a resumed run writes first) drops what earlier
  events said of steps s and later."""
  out = {}
  for event in tensorboard_events(workdir):
    if event.HasField("session_log") and event.session_log.status == event.session_log.START:
      out = {key: value for key, value in out.items() if key[1] < event.step}
    out.update({(v.tag, event.step): v.simple_value for v in event.summary.value})
  return out
