"""Independent numpy reference of the semantics in DESIGN.md (no JAX, no code under test)."""

import numpy as np


def has_say(v):
  """Where a worker has something to say: its value is finite and not zero (either zero)."""
  v = np.asarray(v, np.float64)
  return np.isfinite(v) & (v != 0)


def sign_bits(v):
  """The bit :func:`ops.pack_signs` stores: 1 for v >= 0 (both zeros), 0 for v < 0 or NaN."""
  return np.asarray(v, np.float64) >= 0


def pack(v):
  """Packs the sign bits of a flat array into uint32 words, bit i % 32 of word i // 32."""
  bits = sign_bits(np.ravel(v))
  words = np.zeros(-(-bits.size // 32), np.uint64)
  for i in np.flatnonzero(bits):
    words[i // 32] |= np.uint64(1) << np.uint64(i % 32)
  return words.astype(np.uint32)


def _words(n, leaf_sizes):
  """For each of the n flat coordinates: the index of its word and its bit position in the word.

  Each leaf starts on a word boundary (DESIGN.md's layout)."""
  sizes = [n] if leaf_sizes is None else list(leaf_sizes)
  assert sum(sizes) == n, (sizes, n)
  word, position, first = [], [], 0
  for size in sizes:
    word.append(first + np.arange(size) // 32)
    position.append(np.arange(size) % 32)
    first += -(-size // 32)
  return np.concatenate(word).astype(int), np.concatenate(position).astype(int)


def ballots(values, step=0, leaf_sizes=None):
  """What M workers send for ``values[M, n]``: ``(bits, voting)``, booleans ``[M, n]``.

  A worker votes on a 32-coordinate word where it has something to say on at least one of its
  coordinates, and abstains on the whole word otherwise. Inside a word it votes on, a coordinate's
  bit is its sign where it has something to say, and elsewhere the filler bit
  ``(step + worker + position) % 2``: as often 1 as 0, so it cannot bias the vote.
  """
  values = np.asarray(values, np.float64)
  num_workers, n = values.shape
  say = has_say(values)
  word, position = _words(n, leaf_sizes)
  word_says = np.zeros((num_workers, word.max() + 1 if n else 0), bool)
  np.logical_or.at(word_says, (np.arange(num_workers)[:, None], word[None, :]), say)
  filler = (step + np.arange(num_workers)[:, None] + position[None, :]) % 2 == 1
  return np.where(say, values > 0, filler), word_says[:, word]


def vote(values, step=0, leaf_sizes=None):
  """Majority vote of per-worker values ``[M, n]`` with abstention (DESIGN.md).

  One worker votes alone, per coordinate: sign(v), and 0 where it has nothing to say. Several
  vote by :func:`vote_of_ballots`.
  """
  values = np.asarray(values, np.float64)
  if values.shape[0] == 1:
    return np.where(has_say(values[0]), np.sign(np.nan_to_num(values[0])), 0.0)
  return vote_of_ballots(values, step, leaf_sizes)


def vote_of_ballots(values, step=0, leaf_sizes=None):
  """The vote of the workers' :func:`ballots` (what travels when M > 1).

  With P and N the voting workers' bits 1 and 0 of a coordinate, the vote is sign(P - N): 0 where
  no worker votes. A tie among voters is 0 for even M; for odd M (whose way back has one bit a
  coordinate) it is +1 where ``(step + position) % 2`` is 1, else -1.
  """
  values = np.asarray(values, np.float64)
  bits, voting = ballots(values, step, leaf_sizes)
  return tally(bits, voting, step, leaf_sizes)


def tally(bits, voting, step=0, leaf_sizes=None):
  """sign(P - N) of ballots given as bits and voting flags ``[M, n]``, with DESIGN.md's ties."""
  num_workers, n = bits.shape
  plus, minus = (bits & voting).sum(axis=0), (~bits & voting).sum(axis=0)
  out = np.sign(plus - minus).astype(np.float64)
  if num_workers % 2:
    _, position = _words(n, leaf_sizes)
    tie = (plus == minus) & (plus + minus > 0)
    out[tie] = np.where((step + position[tie]) % 2 == 1, 1.0, -1.0)
  return out


def shard_of(n, num_workers, leaf_sizes=None):
  """Per coordinate, the ``alltoall`` shard it lives in: the words padded to a multiple of M, in M
  equal consecutive shards."""
  word, _ = _words(n, leaf_sizes)
  per_shard = -(-(word.max() + 1) // num_workers)
  return word // per_shard


def replicated_vote(values, step=0, leaf_sizes=None, replicas=1, view=None, lie=None):
  """``alltoall`` with ``replicas`` voters a shard: workers j .. j + r - 1 (mod M) vote shard j, and
  the vote of a coordinate is the median of its voters' results.

  ``view(k, bits)`` is the ballots' bits ``[M, n]`` as voter k receives them (as sent if None: a
  sender may equivocate); ``lie(k, result)`` is what voter k returns for its computed ``result``
  (itself if None). Returns ``(vote [n], results [M, n])``, results NaN where k does not vote.
  """
  values = np.asarray(values, np.float64)
  num_workers, n = values.shape
  bits, voting = ballots(values, step, leaf_sizes)
  shard = shard_of(n, num_workers, leaf_sizes)
  results = np.full((num_workers, n), np.nan)
  for k in range(num_workers):
    result = tally(bits if view is None else view(k, bits), voting, step, leaf_sizes)
    result = result if lie is None else lie(k, result)
    votes_here = (k - shard) % num_workers < replicas
    results[k, votes_here] = result[votes_here]
  return np.nanmedian(results, axis=0), results


def voter_kappa(results, combined):
  """Per voter, Cohen's kappa of the results it returned (NaN where it does not vote) against the
  combined vote, where that is not 0; NaN for a voter with no such coordinate."""
  out = []
  for row in np.asarray(results, np.float64):
    counted = ~np.isnan(row) & (combined != 0)
    if not counted.any():
      out.append(np.nan)
      continue
    agree, positive, vote_positive = (np.mean(row[counted] == combined[counted]), np.mean(row[counted] > 0),
                                      np.mean(combined[counted] > 0))
    chance = positive * vote_positive + (1 - positive) * (1 - vote_positive)
    out.append((agree - chance) / (1 - chance) if chance < 1 else 0.0)
  return np.array(out)


def _per_worker_shares(values, step, leaf_sizes):
  """Per worker, over the coordinates where the vote is not 0 and it voted: the fraction where its
  sign equals the vote, where it sent +1, where the vote is +1 (None where there are none)."""
  values = np.asarray(values, np.float64)
  votes = vote(values, step, leaf_sizes)
  bits, voting = ballots(values, step, leaf_sizes)
  signs = np.where(bits, 1.0, -1.0)
  shares = []
  for m in range(values.shape[0]):
    counted = voting[m] & (votes != 0)
    if not counted.any() or values.shape[0] == 1:
      shares.append(None)
      continue
    shares.append((np.mean(signs[m, counted] == votes[counted]), np.mean(bits[m, counted]),
                   np.mean(votes[counted] > 0)))
  return shares


def agreement(values, step=0, leaf_sizes=None):
  """Per worker, the fraction of the coordinates it voted on (vote not 0) where its sign is the
  vote; NaN for a worker with no such coordinate (one that abstained everywhere) and for M = 1."""
  return np.array([np.nan if s is None else s[0] for s in _per_worker_shares(values, step, leaf_sizes)])


def kappa(values, step=0, leaf_sizes=None):
  """Per worker, Cohen's kappa of its signs against the vote over the same coordinates as
  :func:`agreement` (NaN where that is NaN; 0 where chance agreement is 1)."""
  out = []
  for share in _per_worker_shares(values, step, leaf_sizes):
    if share is None:
      out.append(np.nan)
      continue
    agree, positive, vote_positive = share
    chance = positive * vote_positive + (1 - positive) * (1 - vote_positive)
    out.append((agree - chance) / (1 - chance) if chance < 1 else 0.0)
  return np.array(out)


def nonfinite(values):
  """Per worker, its non-finite coordinates."""
  return (~np.isfinite(np.asarray(values, np.float64))).sum(axis=1)


def signum_majority(x0, grad, num_workers, steps, lr, b1, weight_decay, every_k=1, clip_norm=None, leaf_sizes=None):
  """Algorithm 1 of Bernstein et al. on a flat parameter vector, with M workers.

  ``grad(x, m, t)`` is worker m's gradient at step t. With ``every_k > 1`` each worker averages its
  gradients over k micro-steps before one optimizer step (optax.MultiSteps). With ``clip_norm`` each
  worker's gradient is clipped to that global norm before the momentum. Where a gradient is
  non-finite the momentum keeps its value and the worker sends NaN (it has nothing to say there).
  ``leaf_sizes`` splits the flat vector into leaves (their words matter where workers abstain).
  Returns the final parameters and the number of tied coordinates seen.
  """
  x = np.array(x0, np.float64)
  v = np.zeros((num_workers, x.size))
  ties = 0
  for step in range(steps // every_k):
    g = np.zeros_like(v)
    for micro in range(every_k):
      t = step * every_k + micro
      g += np.stack([grad(x, m, t) for m in range(num_workers)]) / every_k
    if clip_norm is not None:
      norms = np.linalg.norm(g, axis=1, keepdims=True)
      g = g * np.minimum(1.0, clip_norm / norms)
    finite = np.isfinite(g)
    v = np.where(finite, b1 * v + (1 - b1) * np.where(finite, g, 0), v)
    votes = vote(np.where(finite, v, np.nan), step, leaf_sizes)
    ties += int((votes == 0).sum())
    x = x - lr * (votes + weight_decay * x)
  return x, ties


def hierarchical_signum(x0, grad, hosts, local, steps, lr, b1, weight_decay):
  """Momentum summed inside each host, the hosts' signs voted: returns final parameters."""
  x = np.array(x0, np.float64)
  v = np.zeros((hosts, local, x.size))
  for t in range(steps):
    g = np.stack([[grad(x, h * local + l, t) for l in range(local)] for h in range(hosts)])
    v = b1 * v + (1 - b1) * g
    x = x - lr * (vote(v.sum(axis=1), t) + weight_decay * x)
  return x


def lion_majority(x0, grad, num_workers, steps, lr, b1, b2, weight_decay):
  """Lion (Chen et al., 2023) whose per-worker signs are majority-voted."""
  x = np.array(x0, np.float64)
  m_state = np.zeros((num_workers, x.size))
  for t in range(steps):
    g = np.stack([grad(x, m, t) for m in range(num_workers)])
    direction = np.sign(b1 * m_state + (1 - b1) * g)
    m_state = b2 * m_state + (1 - b2) * g
    x = x - lr * (vote(direction, t) + weight_decay * x)
  return x
