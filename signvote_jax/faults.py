"""Faulty workers in every role they play, injected into the vote for tests and benchmarks.

A worker plays up to three roles in a vote (the threat model of ``DESIGN.md``): it *sends* a ballot
(:func:`byzantine`, including ``"equivocate"``: a different ballot to each receiver), it *votes*
shards of the others' ballots, and it *reports* counts of how every ballot relates to its shard's
vote (:func:`voter`, for the strategies where workers vote for each other: ``"alltoall"``).

How each fault is simulated inside the SPMD program: update-level kinds replace what the faulty
workers pass to the vote; ``"equivocate"`` marks the update (:class:`Equivocating`) and the vote's
exchange corrupts each *received* copy of a faulty sender's ballot according to the receiver (the
receiver's view is all that a message is); a voter fault corrupts, on the faulty worker, the vote
results and counts it puts on the wire back. How the vote's statistics name them:
:mod:`signvote_jax.statistics`.
"""

import dataclasses
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from signvote_jax import axes

Kind = Literal["negate", "random", "zero", "nan", "scale", "equivocate"]
KINDS = get_args(Kind)
VOTER_KINDS = ("negate", "random", "zero", "blame")  # A vote lie and "blame" join with "+": "negate+blame".
SCALE = -1e3  # What a "scale" worker multiplies by: large and negated, fatal to an average.


class ByzantineState(NamedTuple):
  """State of :func:`byzantine`."""

  count: jax.Array  # i32[]: steps so far; with the seed and worker index it keys "random" signs.


def _corrupt(kind: str, update: jax.Array, key: jax.Array) -> jax.Array:
  if kind == "negate":
    return -update
  if kind == "random":
    flip = jax.random.bernoulli(key, 0.5, update.shape)
    return jnp.where(flip, -1, 1).astype(update.dtype) * jnp.abs(update)
  if kind == "zero":
    return jnp.zeros_like(update)
  if kind == "nan":
    return jnp.full_like(update, jnp.nan)
  return update * jnp.asarray(SCALE, update.dtype)


def byzantine(kind: Kind, workers: Sequence[int], axis_name, seed: int = 0) -> optax.GradientTransformation:
  """Replaces what the listed workers send with a fault of the given ``kind``.

  Place it right before :func:`signvote_jax.scale_by_majority_vote` (``signum(..., fault=...)``) or
  before :func:`signvote_jax.mean_allreduce`; everything before it, including a faulty worker's own
  momentum, stays honest, as in the paper's experiments.

  Kinds: ``"negate"`` sends ``-u`` (the paper's adversary); ``"random"`` sends ``|u|`` with random
  signs; ``"zero"`` sends zeros (a dead worker) and ``"nan"`` sends NaN, both of which the vote
  abstains on (averaging does not); ``"scale"`` sends ``-1000 u``
  (harmless to a vote, fatal to an average). ``"equivocate"`` sends each receiver a different
  ballot: by the receiver's index k, its honest ballot (k mod 3 = 0), the negated one (1) or random
  signs (2), so that consecutive voters of an ``"alltoall"`` shard each get a different one. It
  only exists on a wire of ballots: it marks the update (:class:`Equivocating`) for
  :func:`signvote_jax.scale_by_majority_vote`, whose exchange applies it, and nothing else takes it.
  Against ``"allgather"`` it leaves the workers with different votes (typed varying).

  Args:
    kind: one of ``"negate"``, ``"random"``, ``"zero"``, ``"nan"``, ``"scale"``, ``"equivocate"``.
    workers: indices along ``axis_name`` of the faulty workers.
    axis_name: the workers' mapped axis (a tuple of axes counts them row-major).
    seed: seed of the ``"random"`` signs; each step and worker draws its own.

  Returns:
    An ``optax.GradientTransformation`` with a :class:`ByzantineState`.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import signvote_jax as sv
  >>> liar = sv.faults.byzantine("negate", workers=[0], axis_name="workers")
  >>> def step(u):
  ...   return liar.update(u, liar.init(u))[0]
  >>> jax.pmap(step, axis_name="workers")(jnp.ones((jax.device_count(), 1)))[0].tolist()
  [-1.0]
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown fault kind {kind!r}; valid kinds are {KINDS}.")
  workers = _check_indices(workers)
  if axis_name is None:
    raise ValueError("byzantine needs the workers' axis_name to know which worker it runs on; got None.")
  who = f"byzantine({kind!r})"

  def init_fn(params):
    del params
    return ByzantineState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    check_workers(workers, axes.axis_size(axis_name, who), axis_name, who)
    if kind == "equivocate":  # The vote's exchange equivocates; the update itself is honest.
      return Equivocating(updates, Equivocation(workers, seed)), ByzantineState(count=state.count + 1)
    index = jax.lax.axis_index(axis_name)
    faulty = jnp.isin(index, jnp.asarray(workers, jnp.int32))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.count), index)
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(key, max(len(leaves), 1))
    sent = [jnp.where(faulty, _corrupt(kind, leaf, k), leaf) for leaf, k in zip(leaves, keys)]
    return treedef.unflatten(sent), ByzantineState(count=state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)


def check_workers(workers, size: int, axis_name, who: str = "") -> None:
  """A ValueError (its text led by ``who``, if any) if a faulty worker's index is not on an axis of
  ``size`` workers."""
  if workers and max(workers) >= size:
    raise ValueError(
        f"{who + ': ' if who else ''}faulty worker {max(workers)} does not exist; axis {axis_name!r} has {size} workers "
        f"(indices 0..{size - 1})."
    )


def _check_indices(workers) -> tuple[int, ...]:
  workers = tuple(workers)
  if not all(isinstance(w, (int, np.integer)) and w >= 0 for w in workers) or len(set(workers)) != len(workers):
    raise ValueError(f"workers must be distinct non-negative worker indices, got {workers!r}.")
  return tuple(int(w) for w in workers)


def _key(seed: int, step, *indices) -> jax.Array:
  key = jax.random.fold_in(jax.random.key(seed), step)
  for index in indices:
    key = jax.random.fold_in(key, index)
  return key


@dataclasses.dataclass(frozen=True)
class Equivocation:
  """Senders that give each receiver a different ballot (``byzantine("equivocate", ...)``)."""

  workers: tuple[int, ...]
  seed: int = 0

  def received(self, words: jax.Array, receiver, step) -> jax.Array:
    """The ballots ``u32[M, ...]`` (row i from sender i) as ``receiver`` gets them at ``step``.

    A faulty sender's row is its honest ballot, its negation or random bits, by ``receiver mod 3``;
    which words it votes on (its abstention flags) stays as it is, so that it is never caught
    abstaining.
    """
    senders = jnp.arange(words.shape[0])
    faulty = jnp.isin(senders, jnp.asarray(self.workers, jnp.int32))
    noise = jax.vmap(lambda sender: jax.random.bits(_key(self.seed, step, sender, receiver), words.shape[1:],
                                                    jnp.uint32))(senders)
    lie = jnp.stack([words, ~words, noise])[receiver % 3]
    return jnp.where(faulty.reshape((-1,) + (1,) * (words.ndim - 1)), lie, words)


@jax.tree_util.register_pytree_node_class
class Equivocating:
  """An update tree whose listed senders equivocate in the vote's exchange (``byzantine("equivocate")``).

  A pytree node around the honest updates, so that the chain passes it on to
  :func:`signvote_jax.scale_by_majority_vote`, which applies the :class:`Equivocation`.
  """

  def __init__(self, updates, equivocation: Equivocation):
    self.updates, self.equivocation = updates, equivocation

  def tree_flatten(self):
    return (self.updates,), self.equivocation

  @classmethod
  def tree_unflatten(cls, equivocation, children):
    return cls(children[0], equivocation)


def split_equivocation(updates):
  """``(updates, Equivocation or None)``: the honest tree and who equivocates."""
  if isinstance(updates, Equivocating):
    return updates.updates, updates.equivocation
  return updates, None


@dataclasses.dataclass(frozen=True)
class VoterFault:
  """Workers that lie as voters of a shard (made by :func:`voter`).

  Attributes:
    vote: what a faulty voter returns instead of its shard's vote: ``"negate"``, ``"random"``,
      ``"zero"`` or None (the vote it computed).
    blame: whether it reports counts that frame the honest workers.
    workers: indices of the faulty voters along the vote's axis.
    seed: seed of the ``"random"`` votes.
  """

  vote: str | None
  blame: bool
  workers: tuple[int, ...]
  seed: int = 0

  def faulty(self, index) -> jax.Array:
    """``bool[]``: whether the worker at ``index`` is one of the faulty voters."""
    return jnp.isin(index, jnp.asarray(self.workers, jnp.int32))

  def returned(self, sign, nonzero, index, step):
    """The planes ``(sign, nonzero)`` that the worker at ``index`` puts on the wire for its shards."""
    if self.vote is None:
      return sign, nonzero
    if self.vote == "negate":
      lie = (~sign, nonzero)
    elif self.vote == "random":
      lie = (jax.random.bits(_key(self.seed, step, index), sign.shape, jnp.uint32), nonzero)
    else:  # "zero": a tie everywhere.
      lie = (sign, jnp.zeros_like(nonzero))
    faulty = self.faulty(index)
    return jnp.where(faulty, lie[0], sign), jnp.where(faulty, lie[1], nonzero)

  def reported(self, counts: jax.Array, index) -> jax.Array:
    """The agreement counts ``u32[r, 4, M]`` (fields of ``ops.AgreementCounts`` by M ballots) it reports.

    A blaming voter reports every honest worker as if it had sent the opposite of its ballot
    (``agree = total - agree``) and every faulty one as in full agreement, all scaled by M so that
    its shard outweighs the M - 1 honest ones in the sum.
    """
    if not self.blame:
      return counts
    agree, positive, vote_positive, total = (counts[:, i] for i in range(4))
    accomplice = jnp.isin(jnp.arange(counts.shape[-1]), jnp.asarray(self.workers, jnp.int32))
    framed = jnp.stack([jnp.where(accomplice, total, total - agree), positive, vote_positive, total], axis=1)
    return jnp.where(self.faulty(index), framed * jnp.uint32(counts.shape[-1]), counts)


def voter(kind: str, workers: Sequence[int], seed: int = 0) -> VoterFault:
  """Workers that lie when they vote a shard for the others: ``voter_fault=`` of the vote.

  Under ``"alltoall"`` (and ``"hierarchical"`` with an ``"alltoall"`` outer vote) worker j votes
  shard j of every ballot (and the r - 1 shards before it with ``replicas=r``) and returns the
  result with counts of how each ballot agreed with it. A faulty voter may lie in both. Kinds:

  * ``"negate"``: returns the opposite of its shard's vote;
  * ``"random"``: returns random signs where the vote is not 0;
  * ``"zero"``: returns a tie (0) everywhere;
  * ``"blame"``: returns the true vote but reports counts that make the honest workers look like
    negating ones and itself like an honest one (see :meth:`VoterFault.reported`).

  Join a vote lie and ``"blame"`` with ``+`` for both: ``voter("negate+blame", [6])``.

  Args:
    kind: one of ``"negate"``, ``"random"``, ``"zero"``, ``"blame"``, or a vote lie ``+blame``.
    workers: indices of the faulty voters along the vote's axis.
    seed: seed of the ``"random"`` votes; each step and voter draws its own.

  Returns:
    A :class:`VoterFault` for ``scale_by_majority_vote(..., voter_fault=...)`` or ``signum``.
  """
  parts = kind.split("+") if isinstance(kind, str) else [kind]
  lies = [p for p in parts if p != "blame"]
  if not all(p in VOTER_KINDS for p in parts) or len(set(parts)) != len(parts) or len(lies) > 1:
    raise ValueError(f"Unknown voter fault {kind!r}; valid kinds are {VOTER_KINDS}, or one of "
                     "negate, random, zero joined with '+blame'.")
  return VoterFault(lies[0] if lies else None, "blame" in parts, _check_indices(workers), seed)
