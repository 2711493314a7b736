"""Independent numpy reference of the semantics in DESIGN.md (no JAX, no code under test)."""

import numpy as np


def sign_bits(v):
  """A worker's sign as a bit: 1 for v >= 0 (both zeros), 0 for v < 0 or NaN."""
  return np.asarray(v, np.float64) >= 0


def pack(v):
  """Packs the sign bits of a flat array into uint32 words, bit i % 32 of word i // 32."""
  bits = sign_bits(np.ravel(v))
  words = np.zeros(-(-bits.size // 32), np.uint64)
  for i in np.flatnonzero(bits):
    words[i // 32] |= np.uint64(1) << np.uint64(i % 32)
  return words.astype(np.uint32)


def vote(ballots):
  """Majority vote of per-worker values ``[M, n]``: sign(2c - M), ties 0."""
  ballots = np.asarray(ballots)
  count = sign_bits(ballots).sum(axis=0)
  return np.sign(2 * count - ballots.shape[0]).astype(np.float64)


def agreement(ballots):
  """Per worker, the fraction of non-tied coordinates where its sign equals the vote."""
  votes = vote(ballots)
  decided = votes != 0
  if not decided.any():
    return np.full(ballots.shape[0], 0.5)
  signs = np.where(sign_bits(ballots), 1.0, -1.0)
  return (signs[:, decided] == votes[decided]).mean(axis=1)


def kappa(ballots):
  """Per worker, Cohen's kappa of its signs against the vote, over the non-tied coordinates."""
  votes = vote(ballots)
  decided = votes != 0
  out = np.zeros(ballots.shape[0])
  if not decided.any():
    return out
  signs = np.where(sign_bits(ballots), 1.0, -1.0)[:, decided]
  votes = votes[decided]
  vote_positive = np.mean(votes > 0)
  for m, worker in enumerate(signs):
    positive = np.mean(worker > 0)
    chance = positive * vote_positive + (1 - positive) * (1 - vote_positive)
    if chance < 1:
      out[m] = (np.mean(worker == votes) - chance) / (1 - chance)
  return out


def signum_majority(x0, grad, num_workers, steps, lr, b1, weight_decay, every_k=1, clip_norm=None):
  """Algorithm 1 of Bernstein et al. on a flat parameter vector, with M workers.

  ``grad(x, m, t)`` is worker m's gradient at step t. With ``every_k > 1`` each worker averages its
  gradients over k micro-steps before one optimizer step (optax.MultiSteps). With ``clip_norm`` each
  worker's gradient is clipped to that global norm before the momentum.
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
    v = b1 * v + (1 - b1) * g
    votes = vote(v)
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
    x = x - lr * (vote(v.sum(axis=1)) + weight_decay * x)
  return x


def lion_majority(x0, grad, num_workers, steps, lr, b1, b2, weight_decay):
  """Lion (Chen et al., 2023) whose per-worker signs are majority-voted."""
  x = np.array(x0, np.float64)
  m_state = np.zeros((num_workers, x.size))
  for t in range(steps):
    g = np.stack([grad(x, m, t) for m in range(num_workers)])
    direction = np.sign(b1 * m_state + (1 - b1) * g)
    m_state = b2 * m_state + (1 - b2) * g
    x = x - lr * (vote(direction) + weight_decay * x)
  return x
