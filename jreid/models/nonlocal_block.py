"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), dot-product form.

As used by AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook")
and FastReID's `Non_local`:

  theta, phi, g = 1x1 convolutions (with bias) of x to `inter_channels`
  f = theta(x)^T phi(x) / N          (N = h * w positions; dot product, no softmax)
  y = f g(x)
  z = W(y) + x                       (W = 1x1 convolution back to C channels + BatchNorm)

The BatchNorm of W starts at scale 0, bias 0, so a freshly inserted block is the identity and
does not disturb a pretrained trunk. FastReID and the AGW reference code set the inter-channel
count to `reduc_ratio // reduc_ratio`, i.e. 1; the non-local paper uses C // 2. Both are
`inter_channels` here (0 means C // 2).

Parameter names follow FastReID's state dict: `g`, `theta`, `phi`, `W_conv` (`W.0`), `W_bn`
(`W.1`).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jreid.models.conv import Conv

# PyTorch BatchNorm defaults (momentum 0.1, eps 1e-5), as in jreid.models.resnet.
_BATCH_NORM_ARGS = dict(momentum=0.9, epsilon=1e-5)
# PyTorch's default Conv2d initialisation (kaiming_uniform_ with a=sqrt(5)): U(+-1/sqrt(fan_in)).
_torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


class NonLocal(nn.Module):
  """Dot-product non-local block with a residual connection: NHWC in, same shape out.

  Attributes:
    inter_channels: channels of theta/phi/g; 0 means half the input channels (the paper).
    dtype: compute dtype.
  """

  inter_channels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    batch, height, width, channels = x.shape
    inter = self.inter_channels or channels // 2
    if inter < 1:
      raise ValueError(f'NonLocal: inter_channels must be >= 0 (0 = channels // 2), got '
                       f'{self.inter_channels} for {channels} input channels.')

    def conv(features: int, name: str) -> nn.Conv:
      return Conv(features, (1, 1), use_bias=True, kernel_init=_torch_default_kernel_init,
                  dtype=self.dtype, name=name)

    n = height * width
    g = conv(inter, 'g')(x).reshape(batch, n, inter)
    theta = conv(inter, 'theta')(x).reshape(batch, n, inter)
    phi = conv(inter, 'phi')(x).reshape(batch, n, inter)
    f = jnp.einsum('bic,bjc->bij', theta, phi) / n  # [B, N, N], dot product scaled by 1/N
    y = jnp.einsum('bij,bjc->bic', f, g).reshape(batch, height, width, inter)
    y = conv(channels, 'W_conv')(y)
    y = nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                     scale_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                     name='W_bn', **_BATCH_NORM_ARGS)(y)
    return y + x
