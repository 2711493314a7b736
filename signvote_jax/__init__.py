"""signvote-jax: distributed training with Signum and majority vote (Bernstein et al., ICLR 2019).

The optimizer is an optax chain; the vote is its own transform, so it composes with the rest of
optax. Workers exchange one bit per coordinate, packed into uint32 words (see ``ops``).
"""

from signvote_jax import faults
from signvote_jax.allreduce import mean_allreduce
from signvote_jax.axes import per_worker
from signvote_jax.faults import byzantine
from signvote_jax.sharded import (ShardedOptimizer, init_per_worker, partition_specs, shard_optimizer, stack_per_worker,
                                  unstack_per_worker)
from signvote_jax.signum import lion, signum
from signvote_jax.statistics import suspected_workers
from signvote_jax.strategies import STRATEGIES
from signvote_jax.vote import MajorityVoteState, Vote, scale_by_majority_vote

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "MajorityVoteState",
    "ShardedOptimizer",
    "Vote",
    "byzantine",
    "faults",
    "init_per_worker",
    "lion",
    "mean_allreduce",
    "partition_specs",
    "per_worker",
    "scale_by_majority_vote",
    "shard_optimizer",
    "signum",
    "stack_per_worker",
    "suspected_workers",
    "unstack_per_worker",
]
