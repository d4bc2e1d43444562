"""Identity classifier layers of the heads: embedding [B, D] -> class logits [B, num_classes].

FastReID's `any_softmax` layers (`model.head.cls_layer`, with `cls_scale` s and `cls_margin` m):

  'linear'   logits = x W (no normalisation, no scale, no margin: the BoT classifier)
  'cosface'  Wang et al., CosFace / large-margin cosine:  s cos_j - s m [j = y]
  'arcface'  Deng et al., ArcFace / additive angular:     s cos(theta_j + m [j = y])
  'circle'   Sun et al., Circle loss in its softmax (class-level) form:
               target  s alpha_p (cos_y - (1 - m)),  alpha_p = max(1 + m - cos_y, 0)
               other   s alpha_n (cos_j - m),        alpha_n = max(cos_j + m, 0)
             alpha_p and alpha_n are constants for the gradient (FastReID's `.detach()`).

For the margin layers cos_j = <x / |x|, W_j / |W_j|>. The margin goes on the logit of the label
only, so these layers need the labels in training; a label of -1 marks a sample without a class
here (FastReID's model-parallel convention): it gets no margin ('circle': the non-target form on
every class). ArcFace follows FastReID, without the "easy margin" correction for theta + m > pi.

A new layer is one function `(cosine [B, C], onehot [B, C], scale, margin) -> logits` plus its
registration in `CLS_LAYERS`.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jreid.registry import Registry

CLS_LAYERS = Registry('classifier layer')
MarginFn = Callable[[jnp.ndarray, jnp.ndarray, float, float], jnp.ndarray]

# acos has an infinite slope at +-1: cosines are kept this far inside (float32 1 - 2^-23).
_ACOS_CLIP = 1.0 - 2.0**-23


@CLS_LAYERS.register('linear')
def linear(logits: jnp.ndarray, onehot: jnp.ndarray, scale: float, margin: float) -> jnp.ndarray:
  """The plain linear classifier: the (unnormalised) logits as they are."""
  del onehot, scale, margin  # FastReID's any_softmax.Linear ignores them too
  return logits


@CLS_LAYERS.register('cosface')
def cosface(cosine: jnp.ndarray, onehot: jnp.ndarray, scale: float, margin: float) -> jnp.ndarray:
  """s (cos_j - m [j = y])."""
  return scale * (cosine - margin * onehot)


@CLS_LAYERS.register('arcface')
def arcface(cosine: jnp.ndarray, onehot: jnp.ndarray, scale: float, margin: float) -> jnp.ndarray:
  """s cos(acos(cos_j) + m [j = y]); other classes keep s cos_j exactly."""
  theta = jnp.arccos(jnp.clip(cosine, -_ACOS_CLIP, _ACOS_CLIP))
  return scale * jnp.where(onehot > 0, jnp.cos(theta + margin), cosine)


@CLS_LAYERS.register('circle')
def circle(cosine: jnp.ndarray, onehot: jnp.ndarray, scale: float, margin: float) -> jnp.ndarray:
  """Circle softmax: self-paced weights alpha (constants for the gradient) and margins delta."""
  fixed = jax.lax.stop_gradient(cosine)
  alpha_p = jnp.maximum(1.0 + margin - fixed, 0.0)
  alpha_n = jnp.maximum(fixed + margin, 0.0)
  logits_p = alpha_p * (cosine - (1.0 - margin))
  logits_n = alpha_n * (cosine - margin)
  return scale * jnp.where(onehot > 0, logits_p, logits_n)


class Classifier(nn.Module):
  """A bias-free classifier weight W [D, num_classes] ~ N(0, 0.01^2) and a `CLS_LAYERS` layer.

  Attributes:
    num_classes: number of training identities.
    cls_layer: 'linear' | 'arcface' | 'cosface' | 'circle'.
    scale: s of the margin layers (FastReID MODEL.HEADS.SCALE).
    margin: m of the margin layers (FastReID MODEL.HEADS.MARGIN).
  """

  num_classes: int
  cls_layer: str = 'linear'
  scale: float = 1.0
  margin: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Returns {'logits'} for 'linear' and {'logits', 'pred_class_logits'} otherwise.

    'logits' feed the identity loss (margins applied); 'pred_class_logits' = s cos, without
    margins, are for the training accuracy (FastReID's pred_class_logits).

    Raises:
      ValueError: for an unknown layer, or a margin layer applied without labels.
    """
    try:
      layer = CLS_LAYERS.get(self.cls_layer)
    except ValueError as e:
      raise ValueError(f'config.model.head.cls_layer: {e}') from None
    kernel = self.param('kernel', nn.initializers.normal(stddev=0.01),
                        (x.shape[-1], self.num_classes), jnp.float32)
    x = x.astype(jnp.float32)
    if self.cls_layer == 'linear':
      return {'logits': x @ kernel}
    if labels is None and not self.is_initializing():
      raise ValueError(
          f'cls_layer {self.cls_layer!r} puts its margin on the logit of the label, so it needs '
          'the labels in training: call model.apply(variables, images, train=True, '
          'labels=labels), or use cls_layer "linear".'
      )
    eps = 1e-12  # torch.nn.functional.normalize
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), eps)
    kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), eps)
    cosine = x @ kernel
    if labels is None:  # initialising: shapes only
      onehot = jnp.zeros_like(cosine)
    else:
      onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)  # -1: all zeros
    logits = layer(cosine, onehot, float(self.scale), float(self.margin))
    return {'logits': logits, 'pred_class_logits': self.scale * cosine}
