"""Embedding heads: pooled feature [B, C] -> embedding (+ identity logits in training).

`EmbeddingHead` follows FastReID's EmbeddingHead: an optional 1x1 reduction (bias-free, as a
Dense on the pooled vector), the BNNeck of Luo et al. ("Bag of Tricks": BatchNorm whose bias is
frozen at zero, i.e. absent: no parameter, so no gradient and no weight decay) and a bias-free
classifier initialised N(0, 0.01^2) with a classifier layer from `jreid.models.classifiers`
('linear', 'arcface', 'cosface', 'circle').

`ReductionHead` is FastReID's ReductionHead: 1x1 conv -> BatchNorm (bias frozen) ->
LeakyReLU(0.1) -> dropout -> BNNeck, to `embedding_dim`.

Registered factories ('bnneck', 'linear', 'reduction') take the `model.head` config section
(a mapping) and `num_classes`. Head keys: neck_feat, embedding_dim, cls_layer ('linear'),
cls_scale (1.0), cls_margin (0.0), dropout (0.5, the reduction head's).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models import HEADS
from jreid.models.classifiers import Classifier
from jreid.models.resnet import BATCH_NORM_ARGS, conv_kernel_init

NECK_FEATS = ('before', 'after')


def _check_neck_feat(neck_feat: str) -> None:
  if neck_feat not in NECK_FEATS:
    raise ValueError(
        f'neck_feat must be one of {NECK_FEATS}, got {neck_feat!r}; '
        'fix config.model.head.neck_feat.'
    )


def _classify(classifier: Classifier, embedding: jnp.ndarray, features: jnp.ndarray,
              labels: jnp.ndarray | None) -> dict[str, jnp.ndarray]:
  """The training outputs: classifier outputs (+ 'features' and the post-neck 'embedding')."""
  return {**classifier(embedding, labels), 'features': features, 'embedding': embedding}


class EmbeddingHead(nn.Module):
  """Reduction? -> BNNeck? -> classifier, all in float32.

  Attributes:
    num_classes: number of training identities; 0: no classifier (methods whose objective works
      on the embedding alone, e.g. Cluster Contrast's centroid memory), training then returns
      {'features', 'embedding'}.
    with_bnneck: apply the bias-free BatchNorm neck ('bnneck' head) or not ('linear' head).
    neck_feat: which feature the metric (triplet) loss sees in training: 'before' the neck
      (the pooled feature, FastReID's default) or 'after' it. Evaluation always returns the
      post-neck embedding.
    embedding_dim: if > 0, a bias-free linear reduction to this size precedes the neck.
    cls_layer, cls_scale, cls_margin: the classifier layer (see `jreid.models.classifiers`).
  """

  num_classes: int
  with_bnneck: bool = True
  neck_feat: str = 'before'
  embedding_dim: int = 0
  cls_layer: str = 'linear'
  cls_scale: float = 1.0
  cls_margin: float = 0.0

  @nn.compact
  def __call__(self, pooled: jnp.ndarray, train: bool,
               labels: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Returns {'logits', 'features', 'embedding'} in training, {'embedding'} otherwise.

    Margin classifier layers also return 'pred_class_logits' in training and need `labels`
    ([B] ints) there; evaluation ignores `labels`.
    """
    _check_neck_feat(self.neck_feat)
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
    features = pooled if self.neck_feat == 'before' else embedding
    if not self.num_classes:
      return {'features': features, 'embedding': embedding} if train else {'embedding': embedding}
    classifier = Classifier(self.num_classes, self.cls_layer, self.cls_scale, self.cls_margin,
                            name='classifier')
    if not train:
      if self.is_initializing():
        classifier(embedding)  # the parameter tree must not depend on the mode of `init`
      return {'embedding': embedding}
    return _classify(classifier, embedding, features, labels)


class ReductionHead(nn.Module):
  """FastReID's ReductionHead: pooled [B, C] -> 1x1 conv -> BN -> LeakyReLU(0.1) -> dropout ->
  BNNeck -> embedding [B, embedding_dim]; both BatchNorms have their bias frozen at zero.

  The 1x1 convolution on the pooled 1x1 map is a bias-free Dense on the pooled vector, and
  FastReID's Dropout2d on that map drops whole channels, i.e. plain dropout on the vector.
  `neck_feat` 'before' is the reduced feature after dropout (FastReID's `global_feat`), 'after'
  the BNNeck output. Training needs a 'dropout' rng when dropout > 0.
  """

  num_classes: int
  embedding_dim: int
  neck_feat: str = 'before'
  dropout: float = 0.5
  cls_layer: str = 'linear'
  cls_scale: float = 1.0
  cls_margin: float = 0.0

  @nn.compact
  def __call__(self, pooled: jnp.ndarray, train: bool,
               labels: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Returns {'logits', 'features', 'embedding'} in training, {'embedding'} otherwise."""
    _check_neck_feat(self.neck_feat)
    batch_norm = lambda name: nn.BatchNorm(
        use_running_average=not train, use_bias=False, name=name, **BATCH_NORM_ARGS)
    x = nn.Dense(self.embedding_dim, use_bias=False, kernel_init=conv_kernel_init,
                 name='reduction')(pooled.astype(jnp.float32))
    x = nn.leaky_relu(batch_norm('reduction_bn')(x), negative_slope=0.1)
    reduced = nn.Dropout(self.dropout, deterministic=not train)(x)
    embedding = batch_norm('bnneck')(reduced)
    classifier = Classifier(self.num_classes, self.cls_layer, self.cls_scale, self.cls_margin,
                            name='classifier')
    if not train:
      if self.is_initializing():
        classifier(embedding)  # the parameter tree must not depend on the mode of `init`
      return {'embedding': embedding}
    features = reduced if self.neck_feat == 'before' else embedding
    return _classify(classifier, embedding, features, labels)


def _classifier_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The classifier-layer keys of the head section (defaults: FastReID's linear classifier)."""
  return dict(
      cls_layer=str(cfg.get('cls_layer', 'linear')),
      cls_scale=float(cfg.get('cls_scale', 1.0)),
      cls_margin=float(cfg.get('cls_margin', 0.0)),
  )


@HEADS.register('bnneck')
def bnneck(cfg: Mapping[str, Any], num_classes: int) -> EmbeddingHead:
  return EmbeddingHead(
      num_classes,
      with_bnneck=True,
      neck_feat=cfg['neck_feat'],
      embedding_dim=int(cfg['embedding_dim']),
      **_classifier_kwargs(cfg),
  )


@HEADS.register('linear')
def linear(cfg: Mapping[str, Any], num_classes: int) -> EmbeddingHead:
  return EmbeddingHead(
      num_classes,
      with_bnneck=False,
      neck_feat=cfg['neck_feat'],
      embedding_dim=int(cfg['embedding_dim']),
      **_classifier_kwargs(cfg),
  )


@HEADS.register('reduction')
def reduction(cfg: Mapping[str, Any], num_classes: int) -> ReductionHead:
  embedding_dim = int(cfg['embedding_dim'])
  if embedding_dim <= 0:
    raise ValueError(
        f'the reduction head needs config.model.head.embedding_dim > 0 (its output size), got '
        f'{embedding_dim}; set it, e.g. to 512 as FastReID.'
    )
  return ReductionHead(
      num_classes,
      embedding_dim,
      neck_feat=cfg['neck_feat'],
      dropout=float(cfg.get('dropout', 0.5)),
      **_classifier_kwargs(cfg),
  )
