"""Re-ID losses: pure functions, arrays in, scalar out, jit-able."""

from jreid.losses.circle import pairwise_circle_loss, pairwise_cosface_loss
from jreid.losses.distances import l2_normalize, pairwise_cosine, pairwise_euclidean
from jreid.losses.focal import focal_loss
from jreid.losses.id_loss import cross_entropy
from jreid.losses.pplr import (aals_loss, camera_proxy_loss, cross_agreement, pglr_loss,
                               refined_soft_target, smoothed_ce)
from jreid.losses.qaconv import (class_memory_loss, class_memory_update, init_class_memory,
                                 pairwise_matching_loss, qaconv_triplet_loss,
                                 qaconv_triplet_metrics)
from jreid.losses.triplet import triplet_loss
from jreid.losses.wrt import weighted_regularization_triplet, wrt_accuracy

__all__ = [
    'aals_loss',
    'camera_proxy_loss',
    'cross_agreement',
    'pglr_loss',
    'refined_soft_target',
    'smoothed_ce',
    'class_memory_loss',
    'class_memory_update',
    'init_class_memory',
    'pairwise_matching_loss',
    'qaconv_triplet_loss',
    'qaconv_triplet_metrics',
    'cross_entropy',
    'focal_loss',
    'l2_normalize',
    'pairwise_circle_loss',
    'pairwise_cosface_loss',
    'pairwise_cosine',
    'pairwise_euclidean',
    'triplet_loss',
    'weighted_regularization_triplet',
    'wrt_accuracy',
]
