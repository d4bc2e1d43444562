"""Re-ID losses: pure functions, arrays in, scalar out, jit-able."""

from jreid.losses.distances import l2_normalize, pairwise_cosine, pairwise_euclidean
from jreid.losses.id_loss import cross_entropy
from jreid.losses.triplet import triplet_loss

__all__ = [
    'cross_entropy',
    'l2_normalize',
    'pairwise_cosine',
    'pairwise_euclidean',
    'triplet_loss',
]
