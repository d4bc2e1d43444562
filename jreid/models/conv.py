"""`lax.conv_general_dilated` that computes 1x1 convolutions as matrix products on CPU.

XLA:CPU runs a 1x1 convolution, and above all its kernel gradient, far slower than the same
arithmetic as one matrix product (`benchmarks/train_speed.py --xla-conv` measures the two side by
side; benchmarks/results/train_speed_cpu.json). Two of the three convolutions of every ResNet
bottleneck, the downsample shortcuts, the non-local blocks and OSNet's pointwise layers are 1x1.

A 1x1 convolution with stride s and no padding is a dense layer over the pixels it reads,

    y[b, h, w, o] = sum_c x[b, h * s, w * s, c] * k[0, 0, c, o],

so here it is written as a strided slice and `jnp.dot`; JAX differentiates both into matrix
products and a zero-interleaving pad. Larger kernels stay XLA convolutions: their kernel gradient
written as one product per kernel offset saved about 4% of a ResNet-50 step (slower for the stem),
not worth a custom gradient on every convolution (the `investigation` in train_speed_cpu.json).
The rewrite is staged with `lax.platform_dependent`, so GPUs and TPUs keep their own convolution
kernels, and it equals `lax.conv_general_dilated` and its gradients to float rounding
(tests/test_conv.py).

Only what the rewrite covers takes it: 2-D NHWC inputs with HWIO kernels (flax's layout), a 1x1
kernel, zero padding, no input dilation, no feature or batch grouping. Anything else goes to
`lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

# Read when a convolution is traced: False sends every convolution to XLA (for side-by-side
# benchmarks and tests; use the `xla_convolutions()` context manager).
_POINTWISE_AS_PRODUCT = True

_NHWC = ('NHWC', 'HWIO', 'NHWC')


@contextlib.contextmanager
def xla_convolutions() -> Iterator[None]:
  """Within this block, convolutions traced by jreid's layers are plain XLA convolutions.

  The choice is made when a function is traced: a function jitted and traced before the block
  keeps its trace (JAX caches it), so trace a fresh function (or first call) inside the block.
  """
  global _POINTWISE_AS_PRODUCT
  previous, _POINTWISE_AS_PRODUCT = _POINTWISE_AS_PRODUCT, False
  try:
    yield
  finally:
    _POINTWISE_AS_PRODUCT = previous


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == tuple(lax.conv_dimension_numbers(
        (1, 1, 1, 1), (1, 1, 1, 1), _NHWC))
  return tuple(dimension_numbers) == _NHWC


def _is_pointwise(lhs, rhs, window_strides, padding, lhs_dilation, dimension_numbers,
                  feature_group_count, batch_group_count) -> bool:
  if not (_POINTWISE_AS_PRODUCT and lhs.ndim == 4 and _is_nhwc(dimension_numbers)
          and tuple(rhs.shape[:2]) == (1, 1) and feature_group_count == 1
          and batch_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1, 1)))):
    return False
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (1, 1), window_strides, padding)
  return all(tuple(p) == (0, 0) for p in padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` (same signature), 1x1 NHWC convolutions as products on CPU."""
  by_xla = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  if not _is_pointwise(lhs, rhs, window_strides, padding, lhs_dilation, dimension_numbers,
                       feature_group_count, batch_group_count):
    return by_xla(lhs, rhs)
  sh, sw = (int(s) for s in window_strides)

  def by_product(x, k):
    if (sh, sw) != (1, 1):
      x = x[:, ::sh, ::sw]
    # One 2-D product over the flattened pixels: a product over the 4-D input differentiates into
    # a kernel gradient contracting three axes, which XLA:CPU computes through a transposed copy of
    # the output gradient and a generic dot instead of its YNNPACK matrix product.
    y = jnp.dot(x.reshape(-1, x.shape[-1]), k[0, 0], precision=precision,
                preferred_element_type=preferred_element_type)
    return y.reshape(*x.shape[:-1], y.shape[-1])

  return lax.platform_dependent(lhs, rhs, cpu=by_product, default=by_xla)


# flax's convolution with the CPU rewrite above; parameters and names are those of nn.Conv.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
