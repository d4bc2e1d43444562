"""jreid.models.conv: 1x1 convolutions as matrix products on CPU, equal to XLA's convolution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jreid.models import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _dims(x, k):
  # flax passes lax.ConvDimensionNumbers; the string form is accepted too.
  return lax.conv_dimension_numbers(x.shape, k.shape, NHWC)


def _pointwise_reference(x, k, strides):
  """A 1x1 convolution written out in numpy: y[b,h,w,o] = sum_c x[b,h*s,w*t,c] k[0,0,c,o]."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  sh, sw = strides
  b, h, w, _ = x.shape
  ho, wo = -(-h // sh), -(-w // sw)
  y = np.zeros((b, ho, wo, k.shape[3]))
  for i in range(ho):
    for j in range(wo):
      y[:, i, j] = x[:, i * sh, j * sw] @ k[0, 0]
  return y


def _hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


POINTWISE = [
    ((1, 1), ((0, 0), (0, 0))),
    ((2, 2), ((0, 0), (0, 0))),
    ((2, 3), 'SAME'),
    ((3, 2), 'VALID'),
]


@pytest.mark.parametrize('strides,padding', POINTWISE)
def test_pointwise_convolution_and_its_gradients_equal_xla_and_a_numpy_reference(strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 7, 5)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 1, 5, 6)), jnp.float32)

  def ours(x, k):
    return conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=_dims(x, k))

  def xla(x, k):
    return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC)

  y, vjp = jax.jit(lambda x, k: jax.vjp(ours, x, k))(x, k)
  y_ref, vjp_ref = jax.vjp(xla, x, k)
  np.testing.assert_allclose(y, _pointwise_reference(x, k, strides), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  for got, want in zip(vjp(dy), vjp_ref(dy)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Pixels a strided 1x1 convolution never reads get a zero input gradient.
  if strides != (1, 1):
    dx = np.asarray(vjp(dy)[0])
    read = np.zeros(x.shape, bool)
    read[:, ::strides[0], ::strides[1]] = True
    assert np.all(dx[~read] == 0) and np.any(dx[read] != 0)
  # Forward-mode differentiation works too (no custom_vjp in the way).
  tangent = (jnp.ones_like(x), jnp.ones_like(k))
  np.testing.assert_allclose(jax.jvp(ours, (x, k), tangent)[1], jax.jvp(xla, (x, k), tangent)[1],
                             rtol=1e-5, atol=1e-4)


def test_on_cpu_a_pointwise_convolution_compiles_to_a_product_and_others_stay_convolutions():
  x = jnp.ones((2, 8, 6, 4))
  k1, k3 = jnp.ones((1, 1, 4, 3)), jnp.ones((3, 3, 4, 3))

  def pointwise(x, k):
    return conv.conv_general_dilated(x, k, (2, 2), ((0, 0), (0, 0)), dimension_numbers=_dims(x, k))

  padded = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                  dimension_numbers=_dims(x, k))
  grouped = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)),
                                                   dimension_numbers=_dims(x, k),
                                                   feature_group_count=2)
  assert jax.default_backend() == 'cpu'
  assert 'convolution' not in _hlo(pointwise, x, k1)
  assert 'convolution' not in _hlo(jax.grad(lambda k, x: pointwise(x, k).sum()), k1, x)
  assert 'convolution' in _hlo(lambda x, k: conv.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_dims(x, k)), x, k3)
  assert 'convolution' in _hlo(padded, x, k1)  # zero padding is not a product
  assert 'convolution' in _hlo(grouped, x, jnp.ones((1, 1, 2, 4)))
  # The switch is read when a function is traced (JAX reuses earlier traces): fresh functions.
  with conv.xla_convolutions():
    assert 'convolution' in _hlo(lambda x, k: pointwise(x, k), x, k1)
  assert 'convolution' not in _hlo(lambda x, k: pointwise(x, k), x, k1)  # and restored after


def test_pointwise_gradients_are_two_dimensional_products():
  # XLA:CPU sends a product contracting several axes (the kernel gradient of a product over the
  # 4-D input) through a transposed copy and a generic dot, not its YNNPACK matrix product.
  x, k = jnp.ones((2, 8, 6, 4)), jnp.ones((1, 1, 4, 3))

  def loss(x, k):
    return conv.conv_general_dilated(x, k, (2, 2), 'VALID', dimension_numbers=_dims(x, k)).sum()

  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, k)
  dots = []

  def collect(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        dots.append(eqn)
      for sub in jax.core.jaxprs_in_params(eqn.params):
        collect(sub)

  collect(jaxpr.jaxpr)
  assert len(dots) >= 3  # forward, input gradient, kernel gradient (in the CPU branch)
  for eqn in dots:
    (lhs_contract, rhs_contract), _ = eqn.params['dimension_numbers']
    assert len(lhs_contract) == len(rhs_contract) == 1, eqn
    assert all(v.aval.ndim == 2 for v in eqn.invars), eqn


@pytest.mark.parametrize('kernel,strides,padding,groups,dilation', [
    (3, (2, 2), ((1, 1), (1, 1)), 1, (1, 1)),
    (3, (1, 1), ((2, 2), (2, 2)), 1, (2, 2)),
    (3, (1, 1), ((1, 1), (1, 1)), 5, (1, 1)),
    (1, (1, 1), ((1, 1), (0, 0)), 1, (1, 1)),
    (1, (1, 1), ((0, 0), (0, 0)), 5, (1, 1)),
])
def test_other_convolutions_are_xla_unchanged(kernel, strides, padding, groups, dilation):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 9, 7, 10)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((kernel, kernel, 10 // groups, 5)), jnp.float32)
  kwargs = dict(rhs_dilation=dilation, feature_group_count=groups)
  y = conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=_dims(x, k), **kwargs)
  y_ref = lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC, **kwargs)
  np.testing.assert_array_equal(y, y_ref)


def test_bfloat16_pointwise_convolution_keeps_its_dtype_and_value():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((2, 8, 4, 16)), jnp.bfloat16)
  k = jnp.asarray(rng.standard_normal((1, 1, 16, 8)), jnp.bfloat16)
  y = conv.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=_dims(x, k))
  assert y.dtype == jnp.bfloat16
  ref = _pointwise_reference(np.asarray(x, np.float32), np.asarray(k, np.float32), (1, 1))
  np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=2e-2, atol=5e-2)


def test_flax_conv_layer_has_nn_conv_parameters_and_outputs():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 8, 6, 4)), jnp.float32)
  for layer_args in [dict(features=6, kernel_size=(1, 1), strides=(2, 2), use_bias=True),
                     dict(features=6, kernel_size=(3, 3), padding=((1, 1), (1, 1)))]:
    ours, plain = conv.Conv(**layer_args), nn.Conv(**layer_args)
    variables = plain.init(jax.random.key(0), x)
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x))
            == jax.tree.map(jnp.shape, variables))

    def loss(variables, module):
      return jnp.sum(module.apply(variables, x) ** 2)

    np.testing.assert_allclose(ours.apply(variables, x), plain.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(jax.grad(loss)(variables, ours)),
                         jax.tree.leaves(jax.grad(loss)(variables, plain))):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
