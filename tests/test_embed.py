"""The one embedding path: padded, masked batches in split order, per-image inputs, flip test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jreid import embed
from jreid import parallel


def _fn(variables, images, modality=None):
  """A stand-in model: a 'feature map' and an 'embedding' that depend on position and input."""
  x = images.astype(jnp.float32)
  maps = x[..., :1] * variables['scale'] + jnp.arange(x.shape[2], dtype=jnp.float32)[None, None, :,
                                                                                      None]
  emb = jnp.mean(x, axis=(1, 2))
  if modality is not None:
    emb = emb + 100.0 * modality[:, None]
  return {'map': maps, 'embedding': emb}


@pytest.mark.parametrize('n,batch', [(13, 8), (8, 8), (1, 16)])
def test_outputs_come_back_in_item_order_on_every_device(n, batch):
  mesh = parallel.create_mesh()
  rng = np.random.default_rng(n)
  images = rng.integers(0, 256, (n, 4, 6, 3), dtype=np.uint8)
  modality = rng.integers(0, 2, n).astype(np.int32)
  fn = embed.make_embed_fn(_fn, mesh)
  out = embed.embed_batches(fn, {'scale': 2.0}, embed.array_batches(images, batch), n, mesh,
                            per_image={'modality': modality}, progress=False)
  want = jax.device_get(_fn({'scale': 2.0}, images, modality))
  np.testing.assert_allclose(out['embedding'], want['embedding'], rtol=1e-6)
  np.testing.assert_allclose(out['map'], want['map'], rtol=1e-6)
  assert out['embedding'].dtype == np.float32


def test_flip_average_mirrors_spatial_outputs_back():
  mesh = parallel.create_mesh(jax.devices()[:1])
  images = np.random.default_rng(0).integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
  fn = embed.make_embed_fn(_fn, mesh, flip=True)
  out = embed.embed_batches(fn, {'scale': 1.0}, embed.array_batches(images, 4), 3, mesh,
                            progress=False)
  a = jax.device_get(_fn({'scale': 1.0}, images))
  b = jax.device_get(_fn({'scale': 1.0}, images[:, :, ::-1]))
  # Each location of a map averaged with the same location of the mirrored image's map.
  np.testing.assert_allclose(out['map'], (a['map'] + b['map'][:, :, ::-1]) / 2, rtol=1e-6)
  np.testing.assert_allclose(out['embedding'], (a['embedding'] + b['embedding']) / 2, rtol=1e-6)


def test_a_missed_item_is_an_error():
  mesh = parallel.create_mesh(jax.devices()[:1])
  images = np.zeros((4, 2, 2, 3), np.uint8)
  batches = list(embed.array_batches(images, 4))
  batches[0]['mask'] = batches[0]['mask'] & (batches[0]['index'] != 2)
  with pytest.raises(RuntimeError, match='missed 1 of 4'):
    embed.embed_batches(embed.make_embed_fn(_fn, mesh), {'scale': 1.0}, batches, 4, mesh,
                        progress=False)
