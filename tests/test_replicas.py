"""Replicated voters: faulty workers in every role against alltoall's median of r results, checked
against the numpy reference (tests/reference.py, DESIGN.md's threat model)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import signvote_jax as sv
from signvote_jax import faults
from tests import harness, reference

LEAVES = {"a": (300,), "b": (7, 11)}  # Two leaves, neither a multiple of 32: 13 words before padding.
SIZES = [300, 77]
CASES = [(m, r) for m in (3, 5, 7, 8) for r in (1, 3, 5) if r <= m]


def _values(num_workers, seed=0):
  """Per-worker updates ``[M, n]`` with a few zeros (abstention) and small honest margins."""
  rng = np.random.default_rng(seed)
  values = rng.normal(size=(num_workers, sum(SIZES))) + rng.normal(size=sum(SIZES))
  values[rng.random(values.shape) < 0.05] = 0.0
  values[:, 40:72] = 0.0  # A word no one votes on.
  return values.astype(np.float32)


def _tree(values):
  return {"a": jnp.asarray(values[:, :300]), "b": jnp.asarray(values[:, 300:]).reshape(-1, 7, 11)}


def _flat(tree):
  return np.concatenate([np.asarray(tree["a"], np.float64).ravel(), np.asarray(tree["b"], np.float64).ravel()])


def _vote(values, *, replicas=1, sender=None, voter=None, strategy="alltoall"):
  """One vote of ``values`` on M workers: the votes as a flat vector and the state."""
  num_workers = values.shape[0]
  senders = [] if sender is None else [sender]
  opt = optax.chain(*senders, sv.scale_by_majority_vote(
      vote=sv.Vote("w", strategy=strategy, replicas=replicas, voter_fault=voter)))
  votes, state = harness.update_once(opt, _tree(values), harness.mesh((num_workers,), ("w",)), "w")
  return _flat(votes), state[-1]


def _honest_decides(values, faulty):
  """Where the honest ballots decide the vote whatever the faulty ones say, and their vote there."""
  bits, voting = reference.ballots(values, 0, SIZES)
  honest = np.setdiff1d(np.arange(values.shape[0]), faulty)
  plus = (bits[honest] & voting[honest]).sum(0)
  minus = (~bits[honest] & voting[honest]).sum(0)
  faulty_voting = voting[list(faulty)].sum(0) if len(faulty) else 0
  return np.abs(plus - minus) > faulty_voting, np.sign(plus - minus)


def _negate_rows(bits, rows):
  out = bits.copy()
  out[rows] = ~out[rows]
  return out


def _lie(kind, faulty):
  """What the reference's faulty voters return (the deterministic kinds)."""
  def lie(k, result):
    if k not in faulty or kind is None:
      return result
    return -result if kind == "negate" else np.zeros_like(result)
  return lie


@pytest.mark.parametrize("num_workers,replicas", CASES)
def test_replicas_one_is_allgather(num_workers, replicas):
  """Without faults every r gives the vote of all ballots, bit for bit (r = 1 is the old alltoall)."""
  values = _values(num_workers)
  votes, state = _vote(values, replicas=replicas)
  np.testing.assert_array_equal(votes, reference.vote(values, 0, SIZES))
  np.testing.assert_allclose(state.kappa, reference.kappa(values, 0, SIZES), rtol=1e-5)
  expected_voters = np.full(num_workers, np.nan) if replicas == 1 else np.ones(num_workers)
  np.testing.assert_allclose(state.voter_kappa, expected_voters)


@pytest.mark.parametrize("kind", ["negate", "zero", "negate+blame"])
@pytest.mark.parametrize("num_workers,replicas", CASES)
def test_faulty_in_every_role(num_workers, replicas, kind):
  """(r-1)/2 workers (at least one) negate their ballots and lie as voters: the median takes the
  honest voters' result wherever they are a majority of a shard's voters, so r >= 3 gives exactly the
  vote of the sent ballots, and r = 1 lets a faulty voter overturn decided coordinates."""
  faulty = list(range(max(1, (replicas - 1) // 2)))  # The first: shard 0 always holds coordinates.
  values = _values(num_workers, seed=num_workers + replicas)
  sent = values.copy()
  sent[faulty] *= -1
  votes, state = _vote(values, replicas=replicas, sender=faults.byzantine("negate", faulty, "w"),
                       voter=faults.voter(kind, faulty))
  expected, results = reference.replicated_vote(sent, 0, SIZES, replicas, lie=_lie(kind.split("+")[0], faulty))
  np.testing.assert_array_equal(votes, expected)
  decides, honest = _honest_decides(values, faulty)
  if replicas >= 3:
    np.testing.assert_array_equal(votes[decides], honest[decides])
    np.testing.assert_array_equal(votes, reference.vote(sent, 0, SIZES))
    # The counts are the honest voters' too: the blame is outvoted.
    np.testing.assert_allclose(state.kappa, reference.kappa(sent, 0, SIZES), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.voter_kappa, reference.voter_kappa(results, expected), rtol=1e-5, atol=1e-6)
    assert sv.suspected_workers(state.voter_kappa) == faulty
  else:
    assert np.any(votes[decides] != honest[decides]), "one lying voter per shard overturns decided votes"
    assert np.all(np.isnan(state.voter_kappa)), "a lone voter per shard has no one to be compared with"


def test_blame_frames_honest_workers_without_replicas():
  """With r = 1, a blaming voter's counts outweigh the honest ones: honest workers are suspected
  (the faulty one is not); r = 3 names exactly the faulty one."""
  values = _values(7, seed=3)
  faulty = [0]
  sent = values.copy()
  sent[faulty] *= -1
  negate = faults.byzantine("negate", faulty, "w")
  _, framed = _vote(values, replicas=1, sender=negate, voter=faults.voter("blame", faulty))
  assert 0 not in sv.suspected_workers(framed.kappa) and sv.suspected_workers(framed.kappa)
  _, fair = _vote(values, replicas=3, sender=negate, voter=faults.voter("blame", faulty))
  np.testing.assert_allclose(fair.kappa, reference.kappa(sent, 0, SIZES), rtol=1e-5, atol=1e-6)
  assert sv.suspected_workers(fair.kappa) == faulty


def _equivocation_views(faulty, fill):
  """The reference's view of voter k: a faulty sender's bits as sent (k mod 3 = 0), negated (1), or
  random (2), which the bounds replace by all ``fill`` (a vote is monotone in every bit)."""
  def view(k, bits):
    if k % 3 == 0:
      return bits
    if k % 3 == 1:
      return _negate_rows(bits, faulty)
    out = bits.copy()
    out[faulty] = fill
    return out
  return view


def _honest_range(values, faulty_voters, equivocators, replicas, lie):
  """Per coordinate, the lowest and highest result any honest voter of its shard can return."""
  bounds = []
  for fill in (False, True):
    _, results = reference.replicated_vote(values, 0, SIZES, replicas, view=_equivocation_views(equivocators, fill),
                                           lie=lie)
    results[list(faulty_voters)] = np.nan
    bounds.append(results)
  return np.nanmin(np.minimum(*bounds), axis=0), np.nanmax(np.maximum(*bounds), axis=0)


# A lying lone voter (r = 1) decides its shard: test_faulty_in_every_role shows it, so voters lie
# here only where r >= 3.
@pytest.mark.parametrize("num_workers,replicas,voter_kind", [
    (m, r, kind) for m, r in CASES for kind in (None, "negate", "random") if kind is None or r >= 3])
def test_equivocation(num_workers, replicas, voter_kind):
  """Senders that give each voter a different ballot (and, if ``voter_kind``, lie as voters too):
  the vote equals the honest ballots' wherever those decide it, and lies within the honest voters'
  range elsewhere."""
  equivocators = list(range(max(1, (replicas - 1) // 2)))
  faulty_voters = equivocators if voter_kind else []
  values = _values(num_workers, seed=2 * num_workers + replicas)
  votes, state = _vote(values, replicas=replicas, sender=faults.byzantine("equivocate", equivocators, "w", seed=1),
                       voter=faults.voter(voter_kind, faulty_voters) if voter_kind else None)
  decides, honest = _honest_decides(values, equivocators)
  np.testing.assert_array_equal(votes[decides], honest[decides])
  low, high = _honest_range(values, faulty_voters, equivocators, replicas, lie=None)
  assert np.all((low <= votes) & (votes <= high))
  if voter_kind == "negate":  # Random results sit near chance: with few voters and coordinates, not always below.
    assert sv.suspected_workers(state.voter_kappa) == faulty_voters


def test_equivocation_splits_allgather_workers():
  """Under allgather each worker counts its own view: honest workers' votes agree where the honest
  ballots decide, and differ elsewhere (the vote comes back typed varying, one per worker)."""
  num_workers, equivocators = 7, [6]
  values = _values(num_workers, seed=5)
  opt = optax.chain(faults.byzantine("equivocate", equivocators, "w", seed=1), sv.scale_by_majority_vote("w"))
  mesh = harness.mesh((num_workers,), ("w",))

  def worker(stacked):
    own = jax.tree.map(lambda leaf: leaf[0], stacked)
    votes, _ = opt.update(own, opt.init(own))
    return jax.tree.map(lambda v: v[None], votes)

  run = jax.jit(jax.shard_map(worker, mesh=mesh, in_specs=P("w"), out_specs=P("w")))
  votes = run(jax.device_put(_tree(values), NamedSharding(mesh, P("w"))))
  per_worker = np.stack([_flat(jax.tree.map(lambda v, k=k: np.asarray(v)[k], votes)) for k in range(num_workers)])
  decides, honest = _honest_decides(values, equivocators)
  np.testing.assert_array_equal(per_worker[:, decides], np.broadcast_to(honest[decides], per_worker[:, decides].shape))
  for k in (0, 1):  # Receivers 0 and 1 see the honest and the negated ballot: exactly the reference's.
    bits, voting = reference.ballots(values, 0, SIZES)
    view = bits if k == 0 else _negate_rows(bits, equivocators)
    np.testing.assert_array_equal(per_worker[k], reference.tally(view, voting, 0, SIZES))
  assert np.any(per_worker[0] != per_worker[1])


def test_invalid_replicas_and_faults_are_one_clear_error():
  for bad in (0, 2, -1, 1.5, True):
    with pytest.raises(ValueError, match="replicas must be an odd number"):
      sv.scale_by_majority_vote(vote=sv.Vote("w", strategy="alltoall", replicas=bad))
  with pytest.raises(ValueError, match="workers vote for each other"):
    sv.scale_by_majority_vote(vote=sv.Vote("w", replicas=3))
  with pytest.raises(ValueError, match="workers vote for each other"):
    sv.signum(0.1, vote=sv.Vote("w", voter_fault=faults.voter("negate", [0])))
  with pytest.raises(ValueError, match="Unknown voter fault"):
    faults.voter("negate+zero", [0])
  with pytest.raises(ValueError, match="replicas=5 needs as many voters"):
    _vote(_values(3), replicas=5)
  with pytest.raises(ValueError, match="faulty worker 3 does not exist"):
    _vote(_values(3), replicas=3, voter=faults.voter("negate", [3]))
  with pytest.raises(ValueError, match="equivocate"):
    harness.update_once(optax.chain(faults.byzantine("equivocate", [0], "w"), sv.mean_allreduce("w")),
                        _tree(_values(3)), harness.mesh((3,), ("w",)), "w")


def test_hierarchical_alltoall_with_replicas():
  """Hosts vote with replicated alltoall: a host lying in every role changes nothing with r = 3."""
  hosts, local = 4, 2
  values = _values(hosts * local, seed=9)
  host_sums = values.reshape(hosts, local, -1).sum(axis=1)
  faulty = [3]
  sent = host_sums.copy()
  sent[faulty] *= -1
  opt = sv.scale_by_majority_vote(vote=sv.Vote("hosts", strategy="hierarchical", inner_axis_name="devices",
                                               outer_strategy="alltoall", replicas=3,
                                               voter_fault=faults.voter("negate+blame", faulty)))
  hosts_fault = faults.byzantine("negate", faulty, "hosts")
  votes, state = harness.update_once(optax.chain(hosts_fault, opt), _tree(values), harness.mesh((hosts, local), ("hosts", "devices")),
                                     ("hosts", "devices"))
  np.testing.assert_array_equal(_flat(votes), reference.vote(sent, 0, SIZES))
  np.testing.assert_allclose(state[-1].kappa, reference.kappa(sent, 0, SIZES), rtol=1e-5, atol=1e-6)
  assert sv.suspected_workers(state[-1].voter_kappa) == faulty
