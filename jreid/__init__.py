"""jreid: object re-identification in JAX/Flax.

`import jreid` stays light: `jreid.FeatureExtractor` (jreid.inference) and `jreid.GalleryIndex`
(jreid.index) are imported on first use.
"""

_LAZY = {'FeatureExtractor': 'jreid.inference', 'GalleryIndex': 'jreid.index'}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
