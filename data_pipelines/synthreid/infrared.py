"""The infrared variant of SynthReID, in the SYSU-MM01 layout (`generate_synthreid_ir`).

The same identities as SynthReID of a spec (same person keys) are seen by visible cameras 1, 2,
4, 5 (SynthReID's rendering of ``spec.domain``) and thermal-like cameras 3, 6: grey, skin
hottest, a garment's grey level mostly from its visible lightness and partly from its material
(so light clothes are mostly, not always, lighter), striped, checked and dotted garments still
patterned (two materials, two grey levels), printed logos gone, gear and scene cool, soft optics
and sensor noise. What crosses the modality gap is what crosses it in real infrared images: body
shape, garment kinds and patterns, the rough order of the parts' brightness, exposed skin, hair
and gear; hue never does. Importing this module registers the 'infrared' look with
`render.register_modality`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import numpy as np
from PIL import Image

from data_pipelines.synthreid import render
from data_pipelines.synthreid.cache import default_cache_dir, ensure_cached, publish_atomically
from data_pipelines.synthreid.plan import SCENE_PERIOD, Shot
from data_pipelines.synthreid.render import (
    Camera, Person, background_texture, person_look, render_shot)
from data_pipelines.synthreid.spec import (
    PERSON_STREAMS, STREAM_IR_PLAN, STREAM_THERMAL, SynthReIDSpec, keyed_rng, spec_hash)

# Grey levels of a thermal camera (0 cold .. 255 hot): exposed skin is the hottest surface,
# clothing is warmed by the body through materials of different emissivity and thickness, carried
# gear is at air temperature, and the scene is cooler than all of them.
_IR_SKIN = (222.0, 248.0)
_IR_HAIR = (128.0, 162.0)
_IR_GARMENT = np.array([96.0, 112.0, 128.0, 146.0, 164.0, 182.0], np.float32)
# A garment's grey level is mostly its visible lightness mapped onto the range of _IR_GARMENT,
# partly its material's level (one of _IR_GARMENT drawn per garment): light fabrics mostly stay
# lighter than dark ones (SYSU-MM01's infrared cameras are near-infrared, where most dyes keep
# their order of lightness), but the material can reverse the order of two close garments.
_IR_LIGHTNESS_WEIGHT = 0.9
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# The second material of a striped, checked or dotted garment differs in emissivity by this much
# (either can be warmer); the pattern keeps at least _IR_MIN_PATTERN grey levels of contrast.
_IR_PATTERN_CONTRAST = (18.0, 42.0)
_IR_MIN_PATTERN = 12.0
_IR_SHOES = (62.0, 84.0)
_IR_GEAR = (56.0, 88.0)
_IR_WALLS = np.repeat(np.array([[34.0], [42.0], [50.0], [58.0], [66.0]], np.float32), 3, axis=1)
_IR_FLOORS = np.repeat(np.array([[44.0], [52.0], [60.0], [70.0]], np.float32), 3, axis=1)
# Mostly cold objects; some warm ones (lamps, machines, vents, parked engines).
_IR_CLUTTER = np.repeat(np.array([[40.0], [48.0], [56.0], [64.0], [72.0], [80.0], [120.0],
                                  [150.0]], np.float32), 3, axis=1)


def _grey(level: float) -> np.ndarray:
  return np.full(3, level, np.float32)


def _garment_level(colour: np.ndarray, material: float) -> float:
  """The grey level of a garment of visible RGB `colour` made of a material of grey level
  `material` (see _IR_LIGHTNESS_WEIGHT)."""
  low, high = float(_IR_GARMENT[0]), float(_IR_GARMENT[-1])
  lightness = low + (high - low) * float(np.asarray(colour, np.float32) @ _LUMA) / 255.0
  return _IR_LIGHTNESS_WEIGHT * lightness + (1.0 - _IR_LIGHTNESS_WEIGHT) * material


@functools.lru_cache(maxsize=512)
def thermal_person_look(spec: SynthReIDSpec, key: tuple[int, int, int, int]) -> Person:
  """The identity ``key`` as a thermal camera sees it: the same body, pose, garments and gear, no
  hue. Skin is the hottest surface; a garment's grey level comes mostly from its visible lightness
  and partly from its material; a striped, checked or dotted garment keeps its pattern (its two
  yarns or prints differ in emissivity), at a contrast and polarity of its own; printed logos
  vanish; hair, shoes and gear have levels of their own."""
  p = person_look(spec, key)
  rng = np.random.default_rng([key[0], STREAM_THERMAL, key[1], key[2]])
  skin = float(rng.uniform(*_IR_SKIN))
  upper_material = float(rng.choice(_IR_GARMENT))
  lower_material = float(rng.choice(_IR_GARMENT))
  gear = rng.uniform(*_IR_GEAR, size=2)
  hair = rng.uniform(*_IR_HAIR)
  shoes = rng.uniform(*_IR_SHOES)
  hat = None if p.hat is None else _grey(0.8 * float(rng.uniform(*_IR_HAIR)))
  contrast = float(rng.uniform(*_IR_PATTERN_CONTRAST)) * float(rng.choice([-1.0, 1.0]))
  upper = _garment_level(p.upper, upper_material)
  lower = _garment_level(p.lower, lower_material) * 0.9  # legs are cooler than the torso
  step = _garment_level(p.upper2, upper_material + contrast) - upper
  if abs(step) < _IR_MIN_PATTERN:
    step = _IR_MIN_PATTERN * (np.sign(step) or np.sign(contrast))
  upper2 = float(np.clip(upper + step, _IR_GARMENT[0] - 20.0, _IR_GARMENT[-1] + 20.0))
  return dataclasses.replace(
      p, skin=_grey(skin), hair=_grey(hair), upper=_grey(upper), upper2=_grey(upper2),
      lower=_grey(lower), shoes=_grey(shoes),
      backpack=None if p.backpack is None else _grey(gear[0]),
      bag=None if p.bag is None else _grey(gear[1]), logo=None, hat=hat)


@functools.lru_cache(maxsize=16)
def _thermal_camera_look(spec: SynthReIDSpec, cam: int) -> Camera:
  """A thermal camera: no colour, a dark and low-contrast scene, soft optics, sensor noise."""
  rng = keyed_rng(spec.seed, STREAM_THERMAL, 1000 + cam)
  return Camera(gain=1.0, cast=np.ones(3, np.float32), haze=0.0, blur=0.9, noise=3.5,
                background=background_texture(rng, _IR_WALLS, _IR_FLOORS, _IR_CLUTTER), mono=True)


render.register_modality('infrared', thermal_person_look, _thermal_camera_look)

# Part of the cache folder's name: a change of what the images show bumps it (2: garment levels
# partly from the visible lightness, garment patterns kept), so caches of another version are
# not reused.
SYNTHREID_IR_VERSION = 2
IR_MARKER = 'synthreid_ir.json'
VISIBLE_CAMERAS = (1, 2, 4, 5)  # as SYSU-MM01: cameras 1, 2, 4, 5 are RGB, 3 and 6 infrared
INFRARED_CAMERAS = (3, 6)


def ir_ids(spec: SynthReIDSpec) -> dict[str, list[int]]:
  """The identities of ``exp/{train,val,test}_id.txt``: SynthReID's train ids (odd) split into
  train and val (the last tenth, at least one when there are two or more), and its test ids."""
  train = [2 * i + 1 for i in range(spec.num_train_ids)]
  num_val = max(1, spec.num_train_ids // 10) if spec.num_train_ids >= 2 else 0
  return {'train': train[:len(train) - num_val], 'val': train[len(train) - num_val:],
          'test': [2 * i + 2 for i in range(spec.num_test_ids)]}


def plan_ir_shots(spec: SynthReIDSpec) -> list[Shot]:
  """Every image of the infrared variant (nothing is drawn).

  Each identity (the same person as in SynthReID of ``spec``: same person key) is seen by 1-3
  visible cameras of (1, 2, 4, 5) and 1-2 infrared cameras of (3, 6), about half of its
  ``min_images_per_id..max_images_per_id`` images in each modality, at least one per camera.
  ``nn`` numbers the images of an identity in a camera from 1; ``frame`` equals ``nn``. Test
  identities' infrared images are the queries, their visible images the gallery.
  """
  ids = ir_ids(spec)
  test = set(ids['test'])
  person_stream = PERSON_STREAMS[spec.domain]
  shots = []
  for pid in sorted(ids['train'] + ids['val'] + ids['test']):
    rng = keyed_rng(spec.seed, STREAM_IR_PLAN, pid)
    num_images = int(rng.integers(spec.min_images_per_id, spec.max_images_per_id + 1))
    vis = sorted(int(c) for c in rng.choice(VISIBLE_CAMERAS, int(rng.integers(1, 4)), False))
    ir = sorted(int(c) for c in rng.choice(INFRARED_CAMERAS, int(rng.integers(1, 3)), False))
    num_ir = max(len(ir), min(num_images // 2, num_images - len(vis)))
    counts = []
    for cams, n in ((vis, num_images - num_ir), (ir, num_ir)):
      n = max(n, len(cams))
      counts += list(1 + rng.multinomial(n - len(cams), np.full(len(cams), 1 / len(cams))))
    k = 0
    for cam, n in zip(vis + ir, counts):
      modality = 'infrared' if cam in INFRARED_CAMERAS else 'visible'
      split = ('query' if modality == 'infrared' else 'gallery') if pid in test else 'train'
      for j in range(int(n)):
        k += 1
        shots.append(Shot(
            split=split, pid=pid, cam=cam, frame=j + 1, style='person',
            person_key=(spec.seed, person_stream, pid, 0),
            image_key=(spec.seed, STREAM_IR_PLAN, pid, k), view=int(rng.integers(4)),
            phase=float(rng.uniform(0, 2 * np.pi)), scene_x=float(rng.uniform(0, SCENE_PERIOD)),
            nn=j + 1, modality=modality))
  return shots


def ir_filename(shot: Shot) -> str:
  """``cam<C>/<pid:04d>/<n:04d>.jpg``, the SYSU-MM01 path of an infrared-variant image."""
  return f'cam{shot.cam}/{shot.pid:04d}/{shot.nn:04d}.jpg'


def _write_ir_dataset(directory: pathlib.Path, spec: SynthReIDSpec) -> dict[str, int]:
  shots = plan_ir_shots(spec)
  for shot in shots:
    path = directory / ir_filename(shot)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_shot(spec, shot)).save(path, quality=spec.jpeg_quality)
  (directory / 'exp').mkdir()
  for split, pids in ir_ids(spec).items():
    (directory / 'exp' / f'{split}_id.txt').write_text(','.join(map(str, pids)) + '\n')
  return {
      'ids': len({s.pid for s in shots}),
      'visible_images': sum(s.modality == 'visible' for s in shots),
      'infrared_images': sum(s.modality == 'infrared' for s in shots),
      'query_images': sum(s.split == 'query' for s in shots),
      'gallery_images': sum(s.split == 'gallery' for s in shots),
  }


def generate_synthreid_ir(root: str | os.PathLike, spec: SynthReIDSpec = SynthReIDSpec(), *,
                          overwrite: bool = False) -> pathlib.Path:
  """Writes the infrared variant of ``spec`` to ``root`` in the SYSU-MM01 layout::

    <root>/cam1 .. cam6/<pid:04d>/<n:04d>.jpg   cameras 1, 2, 4, 5 visible, 3 and 6 infrared
    <root>/exp/train_id.txt, val_id.txt, test_id.txt   comma-separated ids
    <root>/synthreid_ir.json

  Visible images are SynthReID's rendering (``spec.domain``'s cameras 1, 2, 4, 5); infrared images
  are thermal-like: grey, skin brightest, garment grey levels mostly from the visible lightness and
  partly from the material, garment patterns kept, a dark low-contrast scene. ``spec.num_cameras``,
  the walking model and the distractor/junk fields are not used. Atomic as ``generate_synthreid``.
  """

  def write(directory: pathlib.Path) -> dict:
    return {'name': 'SynthReID-IR', 'version': SYNTHREID_IR_VERSION,
            'spec': dataclasses.asdict(spec), 'spec_hash': spec_hash(spec), 'layout': 'sysu_mm01',
            'visible_cameras': list(VISIBLE_CAMERAS), 'infrared_cameras': list(INFRARED_CAMERAS),
            'counts': _write_ir_dataset(directory, spec)}
  return publish_atomically(root, dataclasses.asdict(spec), IR_MARKER, write,
                            overwrite=overwrite)


def ensure_synthreid_ir(cache_dir: str | os.PathLike | None = None,
                        spec: SynthReIDSpec = SynthReIDSpec()) -> pathlib.Path:
  """The infrared variant of ``spec`` under ``cache_dir``, generated on first use
  (``synthreid_ir_v<SYNTHREID_IR_VERSION>_<spec_hash>``)."""
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthreid_ir_v{SYNTHREID_IR_VERSION}_{spec_hash(spec)}'
  return ensure_cached(root, IR_MARKER, lambda r: generate_synthreid_ir(r, spec))
