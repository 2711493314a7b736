"""signvote-jax: distributed training with Signum and majority vote (Bernstein et al., ICLR 2019).

The optimizer is an optax chain; the vote is its own transform, so it composes with the rest of
optax. Workers exchange one bit per coordinate, packed into uint32 words (see ``ops``).
"""

from signvote_jax import faults
from signvote_jax.allreduce import mean_allreduce
from signvote_jax.axes import per_worker, stack_varying, stacked_specs, unstack_varying
from signvote_jax.faults import byzantine, suspected_workers
from signvote_jax.signum import signum
from signvote_jax.vote import STRATEGIES, MajorityVoteState, scale_by_majority_vote

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "MajorityVoteState",
    "byzantine",
    "faults",
    "mean_allreduce",
    "per_worker",
    "scale_by_majority_vote",
    "signum",
    "stack_varying",
    "stacked_specs",
    "suspected_workers",
    "unstack_varying",
]
