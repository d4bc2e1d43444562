"""Embedding heads: pooled feature [B, C] -> embedding (+ identity logits in training).

`EmbeddingHead` follows FastReID's EmbeddingHead: an optional 1x1 reduction (bias-free, as a
Dense on the pooled vector), the BNNeck of Luo et al. ("Bag of Tricks": BatchNorm whose bias is
frozen at zero, i.e. absent) and a bias-free linear classifier initialised N(0, 0.01^2).

Registered factories take the `model.head` config section (a mapping) and `num_classes`.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import HEADS
from jreid.models.resnet import BATCH_NORM_ARGS, conv_kernel_init

NECK_FEATS = ('before', 'after')


class EmbeddingHead(nn.Module):
  """Reduction? -> BNNeck? -> classifier, all in float32.

  Attributes:
    num_classes: number of training identities.
    with_bnneck: apply the bias-free BatchNorm neck ('bnneck' head) or not ('linear' head).
    neck_feat: which feature the metric (triplet) loss sees in training: 'before' the neck
      (the pooled feature, FastReID's default) or 'after' it. Evaluation always returns the
      post-neck embedding.
    embedding_dim: if > 0, a bias-free linear reduction to this size precedes the neck.
  """

  num_classes: int
  with_bnneck: bool = True
  neck_feat: str = 'before'
  embedding_dim: int = 0

  @nn.compact
  def __call__(self, pooled: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
    """Returns {'logits', 'features', 'embedding'} in training, {'embedding'} otherwise."""
    if self.neck_feat not in NECK_FEATS:
      raise ValueError(
          f'neck_feat must be one of {NECK_FEATS}, got {self.neck_feat!r}; '
          'fix config.model.head.neck_feat.'
      )
    pooled = pooled.astype(jnp.float32)
    embedding = pooled
    if self.embedding_dim > 0:
      embedding = nn.Dense(
          self.embedding_dim, use_bias=False, kernel_init=conv_kernel_init, name='reduction'
      )(embedding)
    if self.with_bnneck:
      embedding = nn.BatchNorm(
          use_running_average=not train, use_bias=False, name='bnneck', **BATCH_NORM_ARGS
      )(embedding)
    classifier = nn.Dense(
        self.num_classes,
        use_bias=False,
        kernel_init=nn.initializers.normal(stddev=0.01),
        name='classifier',
    )
    if not train:
      if self.is_initializing():
        classifier(embedding)  # the parameter tree must not depend on the mode of `init`
      return {'embedding': embedding}
    logits = classifier(embedding)
    features = pooled if self.neck_feat == 'before' else embedding
    return {'logits': logits, 'features': features, 'embedding': embedding}


@HEADS.register('bnneck')
def bnneck(cfg: Mapping[str, Any], num_classes: int) -> EmbeddingHead:
  return EmbeddingHead(
      num_classes,
      with_bnneck=True,
      neck_feat=cfg['neck_feat'],
      embedding_dim=int(cfg['embedding_dim']),
  )


@HEADS.register('linear')
def linear(cfg: Mapping[str, Any], num_classes: int) -> EmbeddingHead:
  return EmbeddingHead(
      num_classes,
      with_bnneck=False,
      neck_feat=cfg['neck_feat'],
      embedding_dim=int(cfg['embedding_dim']),
  )
