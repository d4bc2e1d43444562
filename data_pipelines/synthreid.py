"""SynthReID v1: an embedded, procedurally drawn person re-ID dataset in the Market-1501 layout.

The generator draws small cartoon pedestrians seen by several surveillance cameras and writes
them exactly as Market-1501 is stored on disk, so one reader serves the real and the synthetic
data::

  <root>/bounding_box_train/   training identities (odd ids 0001, 0003, ...)
  <root>/bounding_box_test/    gallery: test identities (even ids 0002, 0004, ...), distractors
                               (id 0000) and junk detections (id -1)
  <root>/query/                queries of the test identities (never also in the gallery)
  <root>/synthreid.json        version, spec, counts, camera graph, generation time

File names follow Market-1501: ``PPPP_cCsS_FFFFFF_NN.jpg`` (``-1_cCsS_FFFFFF_NN.jpg`` for junk):
identity, camera 1..num_cameras, session, frame number, and the index of the detection among
those of the same camera and frame (1, 2, ... in generation order).

Identities. Each identity has a body (head size, leg length, build), clothing (upper garment
solid / horizontal stripes / vertical stripes / checks / dots with a second colour, short or
long sleeves; trousers, shorts or a skirt; shoes), hair (colour, short or long), skin tone and
accessories that are visible only from some viewpoints: a backpack (its body from the back and
the sides, its straps from the front), a cross-body shoulder bag carried on one side, a chest
logo (front only) and a hat. Clothing colours come from ``num_colour_groups`` shared outfits
(upper, second and lower colour, shoes), so groups of identities wear the same colours and
differ only by pattern, body shape, hair and accessories: colour statistics alone cannot tell
them apart.

Cameras. Camera c has its own background (horizon, wall and floor textures, clutter objects;
the scene is cut into zones whose wall and floor colours come from one shared palette),
illumination gain, per-channel colour cast (c1 neutral, c2 strongly warm, c3 dim and noisy,
c4 strongly cool, c5 hazy and washed out, c6 bright green fluorescent; cameras 7..9 reuse these
looks, perturbed), lens blur and sensor noise. Every detection has a jittered crop box (shift
and scale; about one in eight cuts off part of the head or the feet), a viewpoint (front, back,
left, right: what is visible changes, side views are mirror images of each other) and a walking
pose (leg and arm phase). People are drawn at twice the output resolution and box-filtered.

Difficulty (default spec, measured on the written JPEGs when v1 was fixed): the colour-histogram
baseline (``jreid.evaluation.histogram`` defaults: HSV 8x8x8, 3 stripes, grey-world) reaches
13.2% mAP under the Market protocol (0.4% without grey-world normalisation; 2% for queries
from the hazy camera c5), while a 4-conv-layer CNN trained for 4 minutes on a 2-core CPU at
64x32 with cross-entropy + batch-hard triplet loss reaches 59%.

Time (the walking model). Cameras stand on a ring around a site; ``camera_graph`` lists the
walkways between them (ring neighbours and opposite cameras) with their lengths in metres. An
identity enters the site at a uniform random time in ``[0, duration_s)``, walks at its own
speed in ``[min_speed_mps, max_speed_mps]`` along a route of 2..4 distinct cameras (a random
walk on the graph), spends a few seconds in view of each camera and needs at least
``ceil(length / speed * fps)`` frames to walk from one camera to the next. Several detections
per camera visit are taken from the visit's tracklet every few frames, so their poses and
positions follow each other. All cameras record one session (``s1``) with a common clock:
an image's time is ``frame / fps`` seconds after the start of the recording (fps = 25).

Determinism. The output is a pure function of the spec: every random draw comes from
``np.random.default_rng([seed, stream, a, b])`` keyed by what it describes (an identity, one
of its images, a camera, a distractor), so the same spec gives byte-identical images, and
adding identities does not change the others. (Only the ``_NN`` suffix depends on which other
detections share a camera and frame; ``synthreid.json`` differs between runs in its
``generation_seconds`` field.) Generating the default spec takes about 20-25 s on 2 CPU cores.

Variants (each its own cached copy, named by the spec hash; the default spec is v1, unchanged):

* Domain B (``domain='b'``, dataset 'synthreid_b'): the same identity and walking model with
  other clothing palettes, outdoor-like scenes, other identities (their own person stream) and
  other camera styles (over-exposure, magenta cast, night, high contrast, fog, low resolution:
  gain, cast, gamma, saturation, blur, noise), so that a model trained on A meets a domain gap.
* Occluded / partial queries (``query_occlusion``, dataset 'synthreid_occluded' = 'mixed'):
  each query is hidden 20-50% by an object (from the floor, from a side, or held across the
  body) or is an upper-body crop stretched to the full size; train and gallery are unchanged.
* Infrared (``generate_synthreid_ir``, dataset 'synthreid_ir'): the same identities seen by
  visible cameras 1, 2, 4, 5 and thermal-like cameras 3, 6 (grey; skin hottest, clothing grey
  levels from emissivity, gear and scene cool), written in the SYSU-MM01 layout.

Use ``ensure_synthreid(cache_dir)`` to get a cached copy (generated on first use), or
``python -m data_pipelines.synthreid --out DIR`` to write one (``--spec domain=b``,
``--spec query_occlusion=mixed``, ``--infrared`` for the SYSU-MM01-layout variant).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from data_pipelines.types import DatasetError

SYNTHREID_VERSION = 1
FPS = 25
SESSION = 1
SPLIT_DIRS = {'train': 'bounding_box_train', 'gallery': 'bounding_box_test', 'query': 'query'}

# Random streams: the second word of every seed key, so no two kinds of draw share a stream.
_CAMERA, _GRAPH, _GROUP, _PERSON, _WALK, _QUERY, _IMAGE, _DISTRACTOR, _JUNK = range(1, 10)
# Streams added after v1 (domain B identities, query occluders, the infrared variant).
_PERSON_B, _OCCLUDE, _IR_PLAN, _THERMAL = range(10, 14)

DOMAINS = ('a', 'b')
QUERY_OCCLUSIONS = ('none', 'occluded', 'partial', 'mixed')
# Spec fields added after v1, with the values that reproduce v1 exactly: `spec_hash` leaves them
# out at these values, so the cache names (and bytes) of v1 datasets do not change.
_V1_DEFAULTS = {'domain': 'a', 'query_occlusion': 'none'}

FRONT, BACK, LEFT, RIGHT = range(4)  # viewpoints: the camera sees the person's front, back, ...
_SOLID, _HSTRIPES, _VSTRIPES, _CHECKS, _DOTS = range(5)
_TROUSERS, _SHORTS, _SKIRT = range(3)

# Clothing palette (RGB) and how often each colour is worn on the upper body / legs.
_CLOTH = np.array([
    (28, 28, 30), (222, 222, 216), (126, 126, 130), (34, 44, 96), (58, 98, 176),
    (176, 38, 44), (44, 116, 64), (186, 166, 116), (106, 70, 44), (222, 190, 58),
    (216, 124, 156), (118, 58, 140), (70, 96, 132)], np.float32)
_UPPER_P = np.array([15, 13, 11, 9, 9, 8, 7, 5, 5, 5, 5, 4, 4], np.float64)
_LOWER_P = np.array([30, 3, 14, 20, 0, 0, 0, 14, 9, 0, 0, 0, 22], np.float64)
_SHOES = np.array([(24, 24, 26), (226, 226, 222), (92, 58, 36), (110, 110, 114)], np.float32)
_HAIR = np.array([(22, 18, 16), (64, 42, 28), (120, 82, 44), (200, 170, 100), (150, 150, 150)],
                 np.float32)
_SKIN = np.array([(240, 200, 170), (214, 170, 130), (170, 120, 86), (110, 74, 52)], np.float32)
_GEAR = np.array([(26, 26, 28), (70, 72, 78), (30, 40, 80), (96, 60, 36), (150, 30, 36)],
                 np.float32)
_BRIGHT = np.array([(240, 240, 240), (236, 200, 40), (40, 190, 220), (226, 60, 50), (60, 190, 80)],
                   np.float32)
_WALLS = np.array([(150, 147, 142), (170, 165, 152), (128, 131, 136), (156, 144, 134),
                   (134, 138, 130), (176, 174, 170), (140, 130, 124)], np.float32)
_FLOORS = np.array([(120, 120, 122), (136, 130, 120), (112, 114, 118), (130, 126, 116),
                    (118, 112, 106), (142, 142, 140)], np.float32)
_CLUTTER = np.concatenate(
    [_CLOTH, np.array([(230, 120, 30), (40, 170, 170), (190, 210, 60)], np.float32)])

# Camera looks: gain, per-channel (R, G, B) cast, haze (blend towards grey), blur radius (output
# pixels), noise standard deviation. Cameras beyond the sixth reuse a look, perturbed.
_CAMERA_LOOKS = (
    (1.00, (1.00, 1.00, 1.00), 0.00, 0.5, 3.0),  # c1 neutral and sharp
    (1.05, (1.24, 1.00, 0.70), 0.00, 0.7, 4.0),  # c2 warm (sodium light)
    (0.45, (0.95, 1.00, 1.08), 0.00, 0.9, 6.0),  # c3 dim
    (0.95, (0.74, 0.96, 1.30), 0.00, 0.6, 4.0),  # c4 cool (blue tint)
    (0.90, (1.02, 1.00, 0.96), 0.45, 1.1, 3.0),  # c5 hazy, washed out, soft
    (1.15, (0.88, 1.12, 0.84), 0.00, 0.4, 5.0),  # c6 bright green fluorescent
)

# Domain B: other clothing colours and frequencies, outdoor-like scenes and other camera styles.
_CLOTH_B = np.array([
    (112, 120, 48), (232, 122, 34), (30, 140, 140), (112, 30, 52), (172, 152, 212),
    (204, 162, 40), (242, 122, 102), (30, 82, 42), (232, 192, 182), (132, 192, 232),
    (62, 50, 44), (152, 202, 62), (246, 236, 212)], np.float32)
_UPPER_P_B = np.array([6, 12, 10, 9, 8, 7, 9, 8, 6, 9, 4, 6, 6], np.float64)
_LOWER_P_B = np.array([18, 0, 6, 10, 0, 8, 0, 16, 4, 6, 24, 0, 8], np.float64)
_WALLS_B = np.array([(84, 122, 62), (152, 82, 62), (202, 182, 122), (62, 72, 92),
                     (182, 162, 142), (92, 122, 162), (222, 222, 214)], np.float32)
_FLOORS_B = np.array([(72, 72, 78), (72, 112, 52), (142, 92, 72), (192, 172, 132),
                      (52, 56, 62), (152, 146, 136)], np.float32)
_CLUTTER_B = np.concatenate(
    [_CLOTH_B, np.array([(250, 210, 0), (200, 0, 120), (0, 90, 220)], np.float32)])
# gain, cast, haze, blur, noise as `_CAMERA_LOOKS`, then gamma and saturation.
_CAMERA_LOOKS_B = (
    (1.35, (1.00, 1.00, 1.00), 0.00, 0.6, 3.0, 0.75, 0.55),  # b1 over-exposed, washed colours
    (1.00, (1.22, 0.80, 1.18), 0.00, 0.5, 4.0, 1.00, 1.15),  # b2 magenta cast
    (0.50, (0.80, 0.92, 1.25), 0.00, 1.3, 9.0, 1.10, 0.35),  # b3 night: dark, blue, noisy
    (1.05, (1.10, 1.16, 0.70), 0.00, 0.4, 3.0, 1.45, 1.30),  # b4 yellow-green, high contrast
    (0.95, (0.90, 1.00, 1.15), 0.50, 1.5, 3.0, 1.00, 0.80),  # b5 blue fog, very soft
    (1.00, (1.30, 0.95, 0.85), 0.00, 1.8, 7.0, 1.00, 1.00),  # b6 red, low resolution, noisy
)
_PALETTES = {
    'a': dict(cloth=_CLOTH, upper_p=_UPPER_P, lower_p=_LOWER_P, walls=_WALLS, floors=_FLOORS,
              clutter=_CLUTTER, person_stream=_PERSON),
    'b': dict(cloth=_CLOTH_B, upper_p=_UPPER_P_B, lower_p=_LOWER_P_B, walls=_WALLS_B,
              floors=_FLOORS_B, clutter=_CLUTTER_B, person_stream=_PERSON_B),
}

# Background texture: a wrapping strip of scene, in person-height units.
_BG_RES = 120
_BG_PERIOD = 8.0
_BG_TOP, _BG_BOTTOM = -1.8, 2.8
# The nominal detection box: head top at v = 0, soles at v = 1, a few per cent margin.
_BOX_HEIGHT = 1.08


@dataclasses.dataclass(frozen=True)
class SynthReIDSpec:
  """Everything that determines a SynthReID dataset; the defaults suit a 10-minute CPU run.

  Attributes:
    seed: master seed.
    num_train_ids: identities in ``bounding_box_train`` (ids 1, 3, 5, ...).
    num_test_ids: identities in query/gallery (ids 2, 4, 6, ...).
    min_images_per_id: fewest images of one identity (all splits together).
    max_images_per_id: most images of one identity.
    min_cameras_per_id: fewest cameras on an identity's route (at least 2).
    max_cameras_per_id: most cameras on a route (at most num_cameras).
    max_query_cameras: a test identity has one query image in each of 1..this many cameras.
    num_distractors: gallery images with id 0000 (background clutter, partial persons).
    num_junk: gallery images with id -1 (tiny, blurred or badly cut detections).
    num_colour_groups: number of shared outfits (clothing colour sets); fewer groups make
      colour histograms less discriminative.
    height: image height in pixels.
    width: image width in pixels.
    num_cameras: cameras 1..num_cameras (at most 9, the Market naming has one digit).
    jpeg_quality: JPEG quality of the written files.
    duration_s: identities enter the site uniformly in [0, duration_s) seconds.
    min_speed_mps: slowest walking speed, metres per second.
    max_speed_mps: fastest walking speed, metres per second.
    domain: 'a' (v1's look) or 'b': other clothing palettes, backgrounds and camera styles
      (colour casts, gamma, saturation, blur, noise) and other identities, for cross-domain
      tests (train on A, test on B).
    query_occlusion: 'none'; 'occluded' (an object covers 20-50% of the body in every query),
      'partial' (queries are upper-body crops stretched to the full image size) or 'mixed'
      (each query one of the two). Train and gallery images are unchanged.
  """

  seed: int = 0
  num_train_ids: int = 200
  num_test_ids: int = 200
  min_images_per_id: int = 12
  max_images_per_id: int = 20
  min_cameras_per_id: int = 2
  max_cameras_per_id: int = 4
  max_query_cameras: int = 3
  num_distractors: int = 250
  num_junk: int = 150
  num_colour_groups: int = 25
  height: int = 128
  width: int = 64
  num_cameras: int = 6
  jpeg_quality: int = 90
  duration_s: float = 3600.0
  min_speed_mps: float = 0.9
  max_speed_mps: float = 1.7
  domain: str = 'a'
  query_occlusion: str = 'none'

  def __post_init__(self):
    problems = []
    if self.domain not in DOMAINS:
      problems.append(f'domain={self.domain!r} must be one of {DOMAINS}')
    if self.query_occlusion not in QUERY_OCCLUSIONS:
      problems.append(f'query_occlusion={self.query_occlusion!r} must be one of '
                      f'{QUERY_OCCLUSIONS}')
    if self.seed < 0:
      problems.append(f'seed={self.seed} must be >= 0')
    if not 1 <= self.num_train_ids <= 4999 or not 1 <= self.num_test_ids <= 4999:
      problems.append('num_train_ids and num_test_ids must be in 1..4999 (4-digit ids)')
    if not 2 <= self.num_cameras <= 9:
      problems.append(f'num_cameras={self.num_cameras} must be in 2..9')
    if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras:
      problems.append('need 2 <= min_cameras_per_id <= max_cameras_per_id <= num_cameras')
    if not 2 * self.min_cameras_per_id <= self.min_images_per_id <= self.max_images_per_id:
      problems.append('need 2 * min_cameras_per_id <= min_images_per_id <= max_images_per_id '
                      '(every camera visit keeps at least 2 images)')
    if self.max_query_cameras < 1:
      problems.append('max_query_cameras must be >= 1')
    if self.num_distractors < 0 or self.num_junk < 0 or self.num_colour_groups < 1:
      problems.append('num_distractors, num_junk must be >= 0 and num_colour_groups >= 1')
    if self.height < 16 or self.width < 8 or not 1 <= self.jpeg_quality <= 100:
      problems.append('need height >= 16, width >= 8 and 1 <= jpeg_quality <= 100')
    if not 0 < self.min_speed_mps <= self.max_speed_mps:
      problems.append('need 0 < min_speed_mps <= max_speed_mps')
    if not 0 < self.duration_s <= 30000:
      problems.append('duration_s must be in (0, 30000] so frame numbers keep 6 digits')
    if problems:
      raise ValueError('Invalid SynthReIDSpec: ' + '; '.join(problems) + '.')


def spec_hash(spec: SynthReIDSpec) -> str:
  """A short stable hash of the spec, used to name cached copies.

  Fields added after v1 are left out while they hold their v1 values, so a v1 spec keeps its hash.
  """
  fields = {k: v for k, v in dataclasses.asdict(spec).items()
            if k not in _V1_DEFAULTS or v != _V1_DEFAULTS[k]}
  text = json.dumps(fields, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def default_cache_dir() -> pathlib.Path:
  """``$JREID_CACHE`` if set, else ``~/.cache/jreid``."""
  return pathlib.Path(os.environ.get('JREID_CACHE') or pathlib.Path.home() / '.cache' / 'jreid')


def _rng(seed: int, stream: int, a: int, b: int = 0) -> np.random.Generator:
  # Fixed-length keys: SeedSequence treats trailing zero words as absent.
  return np.random.default_rng([seed, stream, a, b])


# ---------------------------------------------------------------------------------------------
# Walking model.


def camera_graph(spec: SynthReIDSpec) -> dict[tuple[int, int], float]:
  """Walkways between cameras: {(a, b): length in metres} with 1-based a < b.

  Cameras stand on a ring of radius ~45 m (positions jittered by the seed); walkways join ring
  neighbours and, with five or more cameras, opposite cameras. A walkway is 25% longer than the
  straight line between its cameras.
  """
  return dict(_camera_graph(spec))


@functools.lru_cache(maxsize=16)
def _camera_graph(spec: SynthReIDSpec) -> dict[tuple[int, int], float]:
  rng = _rng(spec.seed, _GRAPH, 0)
  n = spec.num_cameras
  angles = 2 * np.pi * np.arange(n) / n + rng.uniform(-0.2, 0.2, n)
  radius = 45.0 + rng.uniform(-8.0, 8.0, n)
  xy = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
  pairs = {tuple(sorted((i, (i + 1) % n))) for i in range(n)}
  if n >= 5:
    pairs |= {(i, i + n // 2) for i in range(n // 2)}
  return {(a + 1, b + 1): round(1.25 * float(np.linalg.norm(xy[a] - xy[b])), 1)
          for a, b in sorted(pairs)}


def min_transit_frames(spec: SynthReIDSpec, cam_a: int, cam_b: int) -> float:
  """Fewest frames between leaving camera ``cam_a`` and entering ``cam_b`` (fastest walker)."""
  length = _camera_graph(spec)[tuple(sorted((cam_a, cam_b)))]
  return length / spec.max_speed_mps * FPS


@dataclasses.dataclass(frozen=True)
class Shot:
  """One image of the dataset, before it is drawn.

  Attributes:
    split: 'train', 'query' or 'gallery'.
    pid: identity (0 distractor, -1 junk).
    cam: camera, 1-based.
    frame: frame number in session 1 (time = frame / FPS seconds).
    style: 'person' (a regular detection), 'background' or 'partial' (distractors), 'tiny',
      'blurred' or 'cut' (junk).
    person_key: seed key of the person drawn, None for background-only crops.
    image_key: seed key of the per-image draws (crop jitter, lighting, noise).
    view: FRONT, BACK, LEFT or RIGHT.
    phase: gait phase in radians.
    scene_x: the person's position along the camera's scene strip (body-height units).
    nn: index of this detection among those of the same camera and frame, 1-based (in the
      infrared variant: the image's number among those of its identity and camera).
    modality: 'visible' or 'infrared' (thermal-like rendering; the infrared variant only).
  """

  split: str
  pid: int
  cam: int
  frame: int
  style: str
  person_key: tuple[int, int, int, int] | None
  image_key: tuple[int, int, int, int]
  view: int = FRONT
  phase: float = 0.0
  scene_x: float = 0.0
  nn: int = 1
  modality: str = 'visible'

  @property
  def filename(self) -> str:
    pid = '-1' if self.pid < 0 else f'{self.pid:04d}'
    return f'{pid}_c{self.cam}s{SESSION}_{self.frame:06d}_{self.nn:02d}.jpg'


def _identity_shots(spec: SynthReIDSpec, pid: int, test: bool) -> list[Shot]:
  """The route, tracklets and images of one identity (train, or query + gallery)."""
  graph = _camera_graph(spec)
  neighbours = {c: sorted({b for a, b in graph if a == c} | {a for a, b in graph if b == c})
                for c in range(1, spec.num_cameras + 1)}
  rng = _rng(spec.seed, _WALK, pid)
  num_images = int(rng.integers(spec.min_images_per_id, spec.max_images_per_id + 1))
  num_visits = int(rng.integers(spec.min_cameras_per_id, spec.max_cameras_per_id + 1))
  num_visits = min(num_visits, num_images // 2)
  route = [int(rng.integers(1, spec.num_cameras + 1))]
  while len(route) < num_visits:
    options = [c for c in neighbours[route[-1]] if c not in route]
    if not options:
      break
    route.append(int(rng.choice(options)))
  counts = 2 + rng.multinomial(num_images - 2 * len(route), np.full(len(route), 1 / len(route)))
  speed = rng.uniform(spec.min_speed_mps, spec.max_speed_mps)
  cadence = speed / 1.5  # gait cycles per second
  phase0 = rng.uniform(0, 2 * np.pi)
  frame = int(rng.uniform(0, spec.duration_s) * FPS)
  person_key = (spec.seed, _PALETTES[spec.domain]['person_stream'], pid, 0)

  visits = []
  for i, cam in enumerate(route):
    if i:
      length = graph[tuple(sorted((route[i - 1], cam)))]
      frame += math.ceil(length / speed * FPS)
    n = int(counts[i])
    stride = int(rng.integers(2, 9))
    dwell = max(int(rng.uniform(4.0, 9.0) * FPS), (n - 1) * stride + 1)
    first = frame + int(rng.integers(0, dwell - (n - 1) * stride))
    frames = first + stride * np.arange(n)
    view = int(rng.integers(4))
    direction = {LEFT: -1.0, RIGHT: 1.0}.get(view, rng.uniform(-0.2, 0.2))
    x0 = rng.uniform(0, _BG_PERIOD)
    visits.append((cam, frames, view, direction, x0, frame))
    frame += dwell  # leaves the camera's view

  query = set()
  if test:
    qrng = _rng(spec.seed, _QUERY, pid)
    num_query = int(qrng.integers(1, min(spec.max_query_cameras, len(visits)) + 1))
    for v in qrng.choice(len(visits), num_query, replace=False):
      query.add((int(v), int(qrng.integers(len(visits[v][1])))))

  shots = []
  k = 0
  for v, (cam, frames, view, direction, x0, entered) in enumerate(visits):
    for j, f in enumerate(frames):
      seconds = (f - entered) / FPS
      split = ('query' if (v, j) in query else 'gallery') if test else 'train'
      shots.append(Shot(
          split=split, pid=pid, cam=cam, frame=int(f), style='person', person_key=person_key,
          image_key=(spec.seed, _IMAGE, pid, k), view=view,
          phase=float(phase0 + 2 * np.pi * cadence * f / FPS),
          scene_x=float(x0 + direction * speed / 1.7 * seconds)))
      k += 1
  return shots


def _extra_shots(spec: SynthReIDSpec, stream: int, count: int) -> list[Shot]:
  """Distractors (id 0) or junk detections (id -1), all in the gallery."""
  shots = []
  styles = ('background', 'partial') if stream == _DISTRACTOR else ('tiny', 'blurred', 'cut')
  for k in range(count):
    rng = _rng(spec.seed, stream, k)
    style = styles[int(rng.integers(len(styles)))]
    shots.append(Shot(
        split='gallery', pid=0 if stream == _DISTRACTOR else -1,
        cam=int(rng.integers(1, spec.num_cameras + 1)),
        frame=int(rng.uniform(0, spec.duration_s) * FPS), style=style,
        person_key=None if style == 'background' else (
            spec.seed, _PALETTES[spec.domain]['person_stream'], 10000 + stream, k),
        image_key=(spec.seed, stream, k, 1), view=int(rng.integers(4)),
        phase=float(rng.uniform(0, 2 * np.pi)), scene_x=float(rng.uniform(0, _BG_PERIOD))))
  return shots


def plan_shots(spec: SynthReIDSpec) -> list[Shot]:
  """Every image of the dataset, with unique Market-style names (cheap: nothing is drawn)."""
  shots = []
  for i in range(spec.num_train_ids):
    shots += _identity_shots(spec, 2 * i + 1, test=False)
  for i in range(spec.num_test_ids):
    shots += _identity_shots(spec, 2 * i + 2, test=True)
  shots += _extra_shots(spec, _DISTRACTOR, spec.num_distractors)
  shots += _extra_shots(spec, _JUNK, spec.num_junk)
  last = max(shot.frame for shot in shots)
  if last > 999_999:
    raise ValueError(f'SynthReIDSpec gives frame {last}, more than the 6 digits of Market names; '
                     'lower duration_s or raise min_speed_mps.')
  taken: dict[tuple[int, int], int] = {}
  named = []
  for shot in shots:
    nn = taken.get((shot.cam, shot.frame), 0) + 1
    taken[(shot.cam, shot.frame)] = nn
    named.append(dataclasses.replace(shot, nn=nn))
  return named


# ---------------------------------------------------------------------------------------------
# Appearance.


@dataclasses.dataclass(frozen=True)
class _Person:
  head: float  # head height as a fraction of body height
  waist: float  # waist height (0 = head top, 1 = soles)
  build: float  # width factor
  skin: np.ndarray
  hair: np.ndarray
  long_hair: bool
  upper: np.ndarray
  upper2: np.ndarray
  pattern: int
  period: float
  long_sleeves: bool
  lower: np.ndarray
  lower_kind: int
  shoes: np.ndarray
  backpack: np.ndarray | None
  bag: np.ndarray | None
  bag_side: int  # +1: carried on the person's left, -1: on the right
  logo: np.ndarray | None
  logo_round: bool
  hat: np.ndarray | None


@functools.lru_cache(maxsize=128)
def _colour_group(seed: int, group: int, domain: str = 'a') -> tuple[np.ndarray, ...]:
  palette = _PALETTES[domain]
  cloth, upper_p, lower_p = palette['cloth'], palette['upper_p'], palette['lower_p']
  rng = _rng(seed, _GROUP, group)
  upper = int(rng.choice(len(cloth), p=upper_p / upper_p.sum()))
  luma = cloth @ np.array([0.3, 0.59, 0.11], np.float32)
  contrast = np.flatnonzero(np.abs(luma - luma[upper]) > 60)
  upper2 = int(rng.choice(contrast))
  lower = int(rng.choice(len(cloth), p=lower_p / lower_p.sum()))
  shoes = int(rng.integers(len(_SHOES)))
  return cloth[upper], cloth[upper2], cloth[lower], _SHOES[shoes]


@functools.lru_cache(maxsize=512)
def _person(spec: SynthReIDSpec, key: tuple[int, int, int, int]) -> _Person:
  rng = np.random.default_rng(list(key))
  upper, upper2, lower, shoes = _colour_group(
      spec.seed, int(rng.integers(spec.num_colour_groups)), spec.domain)
  cloth = _PALETTES[spec.domain]['cloth']
  tall = rng.uniform()

  def gear(probability: float) -> np.ndarray | None:
    return _GEAR[rng.integers(len(_GEAR))] if rng.uniform() < probability else None

  return _Person(
      head=0.14 - 0.025 * tall, waist=0.44 + 0.06 * rng.uniform(), build=rng.uniform(0.8, 1.3),
      skin=_SKIN[rng.integers(len(_SKIN))], hair=_HAIR[rng.integers(len(_HAIR))],
      long_hair=bool(rng.uniform() < 0.35), upper=upper, upper2=upper2,
      pattern=int(rng.choice(5, p=[0.3, 0.2, 0.15, 0.15, 0.2])), period=rng.uniform(0.07, 0.1),
      long_sleeves=bool(rng.uniform() < 0.5), lower=lower,
      lower_kind=int(rng.choice(3, p=[0.6, 0.2, 0.2])), shoes=shoes, backpack=gear(0.45),
      bag=gear(0.35), bag_side=int(rng.choice([-1, 1])),
      logo=_BRIGHT[rng.integers(len(_BRIGHT))] if rng.uniform() < 0.4 else None,
      logo_round=bool(rng.uniform() < 0.5),
      hat=cloth[rng.integers(len(cloth))] if rng.uniform() < 0.3 else None)


Colour = np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pattern(p: _Person) -> Colour:
  """The upper garment's colour as a function of body coordinates (U right, V down)."""
  c1, c2, per = p.upper, p.upper2, p.period
  if p.pattern == _SOLID:
    return c1

  def fill(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if p.pattern == _HSTRIPES:
      on = (v / per) % 1.0 < 0.5
    elif p.pattern == _VSTRIPES:
      on = (u / per + 0.25) % 1.0 < 0.5
    elif p.pattern == _CHECKS:
      on = ((u / (1.3 * per) + 0.25) % 1.0 < 0.5) ^ ((v / (1.3 * per)) % 1.0 < 0.5)
    else:
      du, dv = (u / per + 0.25) % 1.0 - 0.5, (v / per) % 1.0 - 0.5
      on = du * du + dv * dv < 0.09
    return np.where(on[..., None], c2, c1)
  return fill


def _darker(colour: Colour, factor: float = 0.78) -> Colour:
  if callable(colour):
    return lambda u, v: colour(u, v) * factor
  return colour * factor


class _Canvas:
  """A float RGB image addressed in body coordinates: u right, v down, body height 1.

  ``sign = -1`` mirrors what is drawn (right views are mirrored left views). Each primitive
  only evaluates its bounding box.
  """

  def __init__(self, img: np.ndarray, u: np.ndarray, v: np.ndarray):
    self.img, self.u, self.v = img, u, v
    self.du, self.dv = u[1] - u[0], v[1] - v[0]
    self.sign = 1.0

  def _window(self, u0, u1, v0, v1):
    if self.sign < 0:
      u0, u1 = -u1, -u0
    j0 = max(math.ceil((u0 - self.u[0]) / self.du), 0)
    j1 = min(math.floor((u1 - self.u[0]) / self.du) + 1, len(self.u))
    i0 = max(math.ceil((v0 - self.v[0]) / self.dv), 0)
    i1 = min(math.floor((v1 - self.v[0]) / self.dv) + 1, len(self.v))
    if j0 >= j1 or i0 >= i1:
      return None
    return (slice(i0, i1), slice(j0, j1)), self.sign * self.u[None, j0:j1], self.v[i0:i1, None]

  def _fill(self, window, inside, colour: Colour, clip=None):
    sl, u, v = window
    if clip is not None:
      inside = inside & clip(u, v)
    if callable(colour):
      colour = colour(u, v)
    np.copyto(self.img[sl], colour, where=inside[..., None])

  def ellipse(self, cu, cv, ru, rv, colour: Colour, clip=None):
    window = self._window(cu - ru, cu + ru, cv - rv, cv + rv)
    if window:
      _, u, v = window
      self._fill(window, ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0, colour, clip)

  def capsule(self, p0, p1, r, colour: Colour):
    (u0, v0), (u1, v1) = p0, p1
    window = self._window(min(u0, u1) - r, max(u0, u1) + r, min(v0, v1) - r, max(v0, v1) + r)
    if window:
      _, u, v = window
      du, dv = u1 - u0, v1 - v0
      t = np.clip(((u - u0) * du + (v - v0) * dv) / max(du * du + dv * dv, 1e-9), 0.0, 1.0)
      self._fill(window, (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2 <= r * r, colour)

  def trapezoid(self, v0, v1, c0, h0, c1, h1, colour: Colour, clip=None):
    """Rows v0..v1; centre and half width go linearly from (c0, h0) to (c1, h1)."""
    lo, hi = min(c0 - h0, c1 - h1), max(c0 + h0, c1 + h1)
    window = self._window(lo, hi, v0, v1)
    if window:
      _, u, v = window
      t = (v - v0) / (v1 - v0)
      self._fill(window, np.abs(u - (c0 + t * (c1 - c0))) <= h0 + t * (h1 - h0), colour, clip)

  def rect(self, u0, u1, v0, v1, colour: Colour):
    self.trapezoid(v0, v1, (u0 + u1) / 2, (u1 - u0) / 2, (u0 + u1) / 2, (u1 - u0) / 2, colour)

  def shade(self, cu, cv, ru, rv, factor):
    window = self._window(cu - ru, cu + ru, cv - rv, cv + rv)
    if window:
      sl, u, v = window
      inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0
      self.img[sl] *= np.where(inside, factor, 1.0)[..., None].astype(np.float32)


def _draw_arm(c: _Canvas, p: _Person, shoulder, elbow, hand, arm_r: float, top) -> None:
  """One arm: a long sleeve, or skin with a short sleeve to the elbow; then the hand."""
  if p.long_sleeves:
    c.capsule(shoulder, hand, arm_r, top)
  else:
    c.capsule(shoulder, hand, 0.85 * arm_r, p.skin)
    c.capsule(shoulder, elbow, 1.05 * arm_r, top)
  c.ellipse(hand[0], hand[1] + 0.01, arm_r, 1.2 * arm_r, p.skin)


def _draw_head(c: _Canvas, p: _Person, view: int, shoulder: float):
  """Neck, head, hair and hat; side views face -u."""
  rv, ru = p.head / 2, p.head * 0.4
  hc = rv
  c.capsule((0.0, hc + 0.5 * rv), (0.0, shoulder + 0.01), 0.45 * ru, p.skin)
  side = view in (LEFT, RIGHT)
  if p.long_hair and view == FRONT:
    c.trapezoid(hc - 0.3 * rv, shoulder + 0.06, 0.0, 1.1 * ru, 0.0, 1.3 * ru, p.hair)
  if p.long_hair and side:
    c.trapezoid(hc, shoulder + 0.07, 0.45 * ru, 0.6 * ru, 0.6 * ru, 0.55 * ru, p.hair)
  c.ellipse(0.0, hc, ru, rv, p.hair if view == BACK else p.skin)
  if view == FRONT:
    c.ellipse(0.0, hc - 0.1 * rv, 1.08 * ru, 0.95 * rv, p.hair,
              clip=lambda u, v: (v < hc - 0.35 * rv) | ((np.abs(u) > 0.75 * ru) & p.long_hair))
    c.ellipse(-0.38 * ru, hc + 0.05 * rv, 0.14 * ru, 0.1 * rv, _darker(p.skin, 0.35))
    c.ellipse(0.38 * ru, hc + 0.05 * rv, 0.14 * ru, 0.1 * rv, _darker(p.skin, 0.35))
  elif side:
    c.ellipse(0.1 * ru, hc - 0.08 * rv, 1.05 * ru, 0.98 * rv, p.hair,
              clip=lambda u, v: (v < hc - 0.4 * rv) | (u > -0.05 * ru))
    c.ellipse(-1.0 * ru, hc + 0.1 * rv, 0.2 * ru, 0.18 * rv, p.skin)  # nose
  if p.hat is not None:
    c.ellipse(0.0, hc - 0.3 * rv, 1.1 * ru, 0.78 * rv, p.hat, clip=lambda u, v: v < hc - 0.3 * rv)
    if side:
      c.rect(-1.75 * ru, 0.2 * ru, hc - 0.42 * rv, hc - 0.28 * rv, _darker(p.hat))
    else:
      c.rect(-1.35 * ru, 1.35 * ru, hc - 0.4 * rv, hc - 0.28 * rv, _darker(p.hat))


def _draw_frontal(c: _Canvas, p: _Person, phase: float, front: bool):
  top = _pattern(p)
  sh = p.head + 0.025
  sw, hw = 0.145 * p.build, 0.115 * p.build
  leg_r, arm_r = 0.052 * p.build, 0.036 * p.build
  lift = 0.03 * math.sin(phase)
  for side in (-1.0, 1.0):
    hip = (side * 0.5 * hw, p.waist)
    ankle = (side * 0.55 * hw, 0.965 - max(side * lift, 0.0))
    knee = (hip[0] + 0.5 * (ankle[0] - hip[0]), hip[1] + 0.5 * (ankle[1] - hip[1]))
    if p.lower_kind == _TROUSERS:
      c.capsule(hip, ankle, leg_r, p.lower)
    else:
      c.capsule(hip, ankle, 0.8 * leg_r, p.skin)
      if p.lower_kind == _SHORTS:
        c.capsule(hip, knee, 1.1 * leg_r, p.lower)
    c.ellipse(ankle[0], ankle[1] + 0.012, 0.04, 0.022, p.shoes)
  if p.lower_kind == _SKIRT:
    c.trapezoid(p.waist - 0.03, p.waist + 0.2, 0.0, hw, 0.0, 1.75 * hw, p.lower)
  else:
    c.trapezoid(p.waist - 0.03, p.waist + 0.05, 0.0, hw, 0.0, 1.05 * hw, p.lower)
  swing = 0.025 * math.sin(phase)
  for side in (-1.0, 1.0):
    shoulder = (side * (sw - 0.6 * arm_r), sh + 0.025)
    hand = (side * (sw + 0.012), p.waist + 0.02 - side * swing)
    elbow = (shoulder[0] + 0.45 * (hand[0] - shoulder[0]),
             shoulder[1] + 0.45 * (hand[1] - shoulder[1]))
    _draw_arm(c, p, shoulder, elbow, hand, arm_r, top)
  c.trapezoid(sh, p.waist, 0.0, sw, 0.0, hw, top)
  # The person's left is the viewer's right from the front, the viewer's left from the back.
  bag_u = p.bag_side * (1.0 if front else -1.0)
  if front:
    if p.logo is not None:
      y, r = sh + 0.09, 0.04
      if p.logo_round:
        c.ellipse(0.0, y, r, r, p.logo)
      else:
        c.rect(-r, r, y - r, y + r, p.logo)
    if p.backpack is not None:
      for side in (-1.0, 1.0):
        c.capsule((side * 0.55 * sw, sh + 0.005), (side * 0.6 * sw, sh + 0.17), 0.014, p.backpack)
  elif p.backpack is not None:
    c.trapezoid(sh + 0.02, sh + 0.24, 0.0, 0.8 * sw, 0.0, 0.85 * sw, p.backpack)
    c.rect(-0.45 * sw, 0.45 * sw, sh + 0.14, sh + 0.22, _darker(p.backpack, 0.7))
  if p.bag is not None:
    c.capsule((-bag_u * 0.6 * sw, sh + 0.005), (bag_u * (hw + 0.01), p.waist - 0.04), 0.011,
              _darker(p.bag, 0.8))
    c.rect(bag_u * (hw + 0.01) - 0.05, bag_u * (hw + 0.01) + 0.05, p.waist - 0.05, p.waist + 0.06,
           p.bag)
  if p.long_hair and not front:
    c.trapezoid(p.head * 0.5, sh + 0.08, 0.0, 0.45 * p.head, 0.0, 0.55 * p.head, p.hair)
  _draw_head(c, p, FRONT if front else BACK, sh)


def _draw_side(c: _Canvas, p: _Person, phase: float, near_side: int):
  """A left side view (facing -u); the right view is the same drawn mirrored."""
  top = _pattern(p)
  sh = p.head + 0.025
  tw = 0.1 * p.build
  leg_r, arm_r = 0.052 * p.build, 0.036 * p.build
  length = 0.965 - p.waist
  theta = 0.32 * math.sin(phase)
  arm_len = p.waist + 0.02 - sh
  for depth, angle in ((0, -theta), (1, theta)):  # far leg first
    shade = 1.0 if depth else 0.78
    hip = (0.0, p.waist)
    ankle = (-length * math.sin(angle), p.waist + length * math.cos(angle))
    knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2)
    if p.lower_kind == _TROUSERS:
      c.capsule(hip, ankle, leg_r, p.lower * shade)
    else:
      c.capsule(hip, ankle, 0.8 * leg_r, p.skin * shade)
      if p.lower_kind == _SHORTS:
        c.capsule(hip, knee, 1.1 * leg_r, p.lower * shade)
    c.ellipse(ankle[0] - 0.025, ankle[1] + 0.012, 0.05, 0.022, p.shoes * shade)
    if depth == 0:
      shoulder = (0.0, sh + 0.03)
      hand = (arm_len * math.sin(theta), shoulder[1] + arm_len * math.cos(theta))
      c.capsule(shoulder, hand, arm_r, _darker(top if p.long_sleeves else p.skin))
  has_bag = p.bag is not None
  if has_bag and p.bag_side != near_side:  # carried on the far side: peeks out at the back
    c.rect(tw - 0.04, tw + 0.03, p.waist - 0.05, p.waist + 0.06, _darker(p.bag, 0.7))
  if p.lower_kind == _SKIRT:
    c.trapezoid(p.waist - 0.03, p.waist + 0.2, 0.0, 1.05 * tw, 0.0, 1.9 * tw, p.lower)
  else:
    c.trapezoid(p.waist - 0.03, p.waist + 0.05, 0.0, 1.05 * tw, 0.0, 1.1 * tw, p.lower)
  c.trapezoid(sh, p.waist, -0.01, tw, 0.0, 0.95 * tw, top)
  if p.backpack is not None:
    c.rect(tw - 0.01, tw + 0.075, sh + 0.02, sh + 0.23, p.backpack)
    c.capsule((0.2 * tw, sh + 0.01), (0.1 * tw, sh + 0.16), 0.013, _darker(p.backpack, 0.8))
  if has_bag:
    c.capsule((-0.5 * tw, sh + 0.01), (0.4 * tw, p.waist - 0.04), 0.011, _darker(p.bag, 0.8))
  shoulder = (0.0, sh + 0.03)
  hand = (-arm_len * math.sin(theta), shoulder[1] + arm_len * math.cos(theta))
  elbow = (0.45 * hand[0], shoulder[1] + 0.45 * (hand[1] - shoulder[1]))
  _draw_arm(c, p, shoulder, elbow, hand, arm_r, top)
  if has_bag and p.bag_side == near_side:
    c.rect(-0.04, 0.07, p.waist - 0.05, p.waist + 0.06, p.bag)
  _draw_head(c, p, LEFT, sh)


def _draw_person(c: _Canvas, p: _Person, view: int, phase: float):
  c.shade(0.0, 1.0, 0.16 * p.build, 0.03, 0.6)  # shadow on the floor
  if view in (FRONT, BACK):
    _draw_frontal(c, p, phase, front=view == FRONT)
  else:
    c.sign = 1.0 if view == LEFT else -1.0
    _draw_side(c, p, phase, near_side=1 if view == LEFT else -1)
    c.sign = 1.0


@dataclasses.dataclass(frozen=True)
class _Camera:
  gain: float
  cast: np.ndarray
  haze: float
  blur: float
  noise: float
  background: np.ndarray  # [rows, cols, 3] float32 wrapping scene strip
  gamma: float = 1.0  # domain B only: output = 255 * (x / 255) ** gamma
  saturation: float = 1.0  # domain B only: 0 grey, 1 unchanged, > 1 more saturated


@functools.lru_cache(maxsize=16)
def _camera(spec: SynthReIDSpec, cam: int) -> _Camera:
  rng = _rng(spec.seed, _CAMERA, cam)
  gamma, saturation = 1.0, 1.0
  if spec.domain == 'a':
    gain, cast, haze, blur, noise = _CAMERA_LOOKS[(cam - 1) % len(_CAMERA_LOOKS)]
  else:
    gain, cast, haze, blur, noise, gamma, saturation = _CAMERA_LOOKS_B[
        (cam - 1) % len(_CAMERA_LOOKS_B)]
  cast = np.array(cast, np.float32)
  if cam > len(_CAMERA_LOOKS):
    gain *= rng.uniform(0.8, 1.2)
    cast = cast * rng.uniform(0.9, 1.1, 3).astype(np.float32)
  palette = _PALETTES[spec.domain]
  return _Camera(gain=gain, cast=cast, haze=haze, blur=blur, noise=noise,
                 background=_background_texture(rng, palette['walls'], palette['floors'],
                                                palette['clutter']),
                 gamma=gamma, saturation=saturation)


def _background_texture(rng: np.random.Generator, wall_colours: np.ndarray = _WALLS,
                        floor_colours: np.ndarray = _FLOORS,
                        clutter_colours: np.ndarray = _CLUTTER) -> np.ndarray:
  """A camera's scene strip (wraps horizontally): zones of wall and floor, clutter.

  Each camera has its own horizon, wall texture, floor texture and clutter layout; the strip is
  cut into a few zones (shop fronts, doors, paving patches) whose colours come from one shared
  palette, so the colour statistics of different cameras overlap.
  """
  rows, cols = int((_BG_BOTTOM - _BG_TOP) * _BG_RES), int(_BG_PERIOD * _BG_RES)
  v = (_BG_TOP + (np.arange(rows) + 0.5) / _BG_RES)[:, None].astype(np.float32)
  x = ((np.arange(cols) + 0.5) / _BG_RES)[None, :].astype(np.float32)
  horizon = rng.uniform(0.15, 0.6)
  edges = np.sort(rng.uniform(0, _BG_PERIOD, int(rng.integers(3, 6))))
  zone = np.searchsorted(edges, x[0]) % len(edges)
  zones = len(edges)
  walls = wall_colours[rng.integers(len(wall_colours), size=zones)] * rng.uniform(
      0.8, 1.1, (zones, 1))
  floors = floor_colours[rng.integers(len(floor_colours), size=zones)] * rng.uniform(
      0.85, 1.1, (zones, 1))
  period = _BG_PERIOD / int(rng.integers(6, 16))  # wall panels / bricks / windows, wrap exactly
  kind = int(rng.integers(3))
  if kind == 0:  # panels
    wall_shade = 1.0 + 0.1 * np.sign(np.sin(2 * np.pi * x / period)) + 0 * v
  elif kind == 1:  # bricks
    course = np.floor(v / 0.08)
    mortar = ((v / 0.08) % 1.0 < 0.12) | (((x / 0.2 + 0.5 * course) % 1.0) < 0.06)
    wall_shade = np.where(mortar, 0.72, 1.0)
  else:  # windows
    window = ((x / period) % 1.0 > 0.25) & ((x / period) % 1.0 < 0.75) & (v > horizon - 1.2) & (
        v < horizon - 0.45)
    wall_shade = np.where(window, 1.35, 1.0)
  tile = _BG_PERIOD / int(rng.integers(10, 30))
  if rng.uniform() < 0.5:
    floor_shade = 1.0 + 0.08 * ((np.floor(x / tile) + np.floor(v / (0.5 * tile))) % 2) + 0 * v
  else:
    floor_shade = 1.05 - 0.15 * np.clip(v - horizon, 0.0, 2.0) + 0 * x
  img = np.where((v < horizon)[..., None], walls[zone] * wall_shade[..., None],
                 floors[zone] * floor_shade[..., None])
  for _ in range(int(rng.integers(2, 6))):
    colour = clutter_colours[rng.integers(len(clutter_colours))] * rng.uniform(0.7, 1.0)
    x0, what = rng.uniform(0, _BG_PERIOD), int(rng.integers(3))
    if what == 0:  # box or bench standing on the floor
      w, bottom = rng.uniform(0.2, 0.6), rng.uniform(horizon + 0.05, 1.4)
      top = bottom - rng.uniform(0.15, 0.5)
    elif what == 1:  # pole
      w, bottom, top = rng.uniform(0.03, 0.08), rng.uniform(horizon + 0.05, 1.2), _BG_TOP
    else:  # sign or poster on the wall
      w, top = rng.uniform(0.2, 0.5), rng.uniform(horizon - 1.0, horizon - 0.4)
      bottom = top + rng.uniform(0.15, 0.35)
    for shift in (0.0, -_BG_PERIOD):
      inside = (x >= x0 + shift) & (x < x0 + shift + w) & (v >= top) & (v < bottom)
      img[inside] = colour
  ripple = sum(
      0.04 * np.sin(2 * np.pi * (k * x / _BG_PERIOD + rng.uniform()) + v * rng.uniform(-2, 2))
      for k in rng.integers(1, 12, size=3))
  return (img * (1.0 + ripple)[..., None]).astype(np.float32)


def _crop_box(shot: Shot, rng: np.random.Generator) -> tuple[float, float, float]:
  """The detection box (centre u, centre v, height) in body coordinates for a shot."""
  if shot.style == 'background':
    return rng.uniform(-1.0, 1.0), rng.uniform(0.2, 1.0), rng.uniform(0.6, 1.8)
  if shot.style == 'partial':
    return rng.uniform(-0.12, 0.12), rng.uniform(0.2, 0.85), rng.uniform(0.3, 0.5)
  if shot.style == 'tiny':
    return rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.8), rng.uniform(2.2, 3.5)
  if shot.style == 'cut':
    return rng.uniform(-0.1, 0.1), 0.5 + rng.choice([-1, 1]) * rng.uniform(0.32, 0.45), _BOX_HEIGHT
  cu = float(np.clip(rng.normal(0.0, 0.035), -0.08, 0.08))
  cv = 0.5 + float(np.clip(rng.normal(0.0, 0.02), -0.05, 0.05))
  height = _BOX_HEIGHT * float(np.exp(np.clip(rng.normal(0.0, 0.06), -0.15, 0.15)))
  if rng.uniform() < 0.12:  # the detector cuts off some of the head or the feet
    cv += rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.1)
  return cu, cv, height


@dataclasses.dataclass(frozen=True)
class Occluder:
  """What hides part of a query (``SynthReIDSpec.query_occlusion``).

  Attributes:
    kind: 'partial' (an upper-body crop: the image shows the box from its top down to body
      height ``cut``, stretched to the full image), or an object in front of the person:
      'bottom' (from the floor up), 'side' (from the left or right edge) or 'band' (a sign or
      bag held across the body).
    box: (u0, u1, v0, v1) of the object in body coordinates (u right, v down, body height 1);
      None for 'partial'.
    fraction: the fraction of the nominal body box [-0.2, 0.2] x [0, 1] that is hidden (for
      'partial': the fraction of the body height cut away).
    cut: for 'partial', the body height where the crop ends.
    colour: the object's RGB colour.
  """

  kind: str
  box: tuple[float, float, float, float] | None
  fraction: float
  cut: float = 1.0
  colour: np.ndarray | None = None


_BODY_HALF_WIDTH = 0.2


def query_occluder(spec: SynthReIDSpec, shot: Shot) -> Occluder | None:
  """The occluder of a query under ``spec.query_occlusion``; None for every other image.

  Draws come from their own stream, so the rest of the image (crop, lighting, noise) is that of
  the unoccluded query.
  """
  if spec.query_occlusion == 'none' or shot.split != 'query' or shot.style != 'person':
    return None
  rng = np.random.default_rng([spec.seed, _OCCLUDE, shot.image_key[2], shot.image_key[3]])
  mode = spec.query_occlusion
  if mode == 'mixed':
    mode = 'partial' if rng.uniform() < 0.5 else 'occluded'
  fraction = float(rng.uniform(0.2, 0.5))
  if mode == 'partial':
    return Occluder(kind='partial', box=None, fraction=fraction, cut=1.0 - fraction)
  clutter = _PALETTES[spec.domain]['clutter']
  colour = clutter[rng.integers(len(clutter))] * np.float32(rng.uniform(0.7, 1.0))
  kind = ('bottom', 'side', 'band')[int(rng.integers(3))]
  w = _BODY_HALF_WIDTH
  if kind == 'bottom':  # a bench, bin or car bonnet
    box = (-5.0, 5.0, 1.0 - fraction, 5.0)
  elif kind == 'side':  # a pillar or another person at the edge
    edge = -w + 2 * w * fraction
    box = (-5.0, edge, -5.0, 5.0) if rng.uniform() < 0.5 else (-edge, 5.0, -5.0, 5.0)
  else:  # a sign, umbrella or bag held across the body
    centre = float(rng.uniform(0.25 + fraction / 2, 0.85 - fraction / 2))
    box = (-1.3 * w, 1.3 * w, centre - fraction / 2, centre + fraction / 2)
  return Occluder(kind=kind, box=box, fraction=fraction, colour=colour)


def _draw_occluder(c: _Canvas, occluder: Occluder) -> None:
  """A flat object with a darker rim and faint horizontal slats, so it reads as a thing."""
  u0, u1, v0, v1 = occluder.box
  colour = occluder.colour

  def slats(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shade = np.where((v / 0.06) % 1.0 < 0.2, 0.85, 1.0) + 0 * u
    return colour * shade[..., None].astype(np.float32)
  c.rect(u0, u1, v0, v1, _darker(colour, 0.6))
  rim = 0.015
  c.rect(u0 + rim, u1 - rim, v0 + rim, v1 - rim, slats)


def render_shot(spec: SynthReIDSpec, shot: Shot) -> np.ndarray:
  """Draws one image: uint8 [height, width, 3] (three equal channels for infrared shots)."""
  rng = np.random.default_rng(list(shot.image_key))
  thermal = shot.modality == 'infrared'
  cam = _thermal_camera(spec, shot.cam) if thermal else _camera(spec, shot.cam)
  occluder = query_occluder(spec, shot)
  cu, cv, box_h = _crop_box(shot, rng)
  rows, cols = 2 * spec.height, 2 * spec.width  # 2x supersampling
  box_w = box_h * spec.width / spec.height
  u = (cu - box_w / 2 + (np.arange(cols) + 0.5) * box_w / cols).astype(np.float32)
  v = (cv - box_h / 2 + (np.arange(rows) + 0.5) * box_h / rows).astype(np.float32)
  if occluder is not None and occluder.kind == 'partial':
    top = cv - box_h / 2  # the same box, cut at `cut` and stretched to the full height
    v = (top + (np.arange(rows) + 0.5) * (occluder.cut - top) / rows).astype(np.float32)
  tex_rows, tex_cols, _ = cam.background.shape
  ti = np.clip(((v - _BG_TOP) * _BG_RES).astype(np.intp), 0, tex_rows - 1)
  tj = np.floor((u + shot.scene_x) * _BG_RES).astype(np.intp) % tex_cols
  texels = np.take(cam.background.reshape(-1, 3), ti[:, None] * tex_cols + tj[None, :], axis=0)
  canvas = _Canvas(texels, u, v)
  if shot.person_key is not None:
    person = (_thermal_person(spec, shot.person_key) if thermal
              else _person(spec, shot.person_key))
    _draw_person(canvas, person, shot.view, shot.phase)
  if occluder is not None and occluder.box is not None:
    _draw_occluder(canvas, occluder)
  x = canvas.img
  img = 0.25 * (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2])
  gain = cam.gain * rng.uniform(0.92, 1.08)
  img = img * (gain * cam.cast * rng.normal(1.0, 0.03, 3).astype(np.float32))
  if cam.haze:
    img = (1.0 - cam.haze) * img + cam.haze * 150.0
  if cam.gamma != 1.0 or cam.saturation != 1.0:  # domain B only
    img = 255.0 * (np.clip(img, 0.0, 255.0) / 255.0) ** np.float32(cam.gamma)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + np.float32(cam.saturation) * (img - grey)
  blur = cam.blur + (rng.uniform(2.0, 3.5) if shot.style == 'blurred' else 0.0)
  img = _gaussian_blur(np.clip(img, 0.0, 255.0), blur)
  if thermal:  # one sensor channel, written as three equal ones (as SYSU-MM01 stores them)
    img = img.mean(axis=2, keepdims=True)
  img += rng.standard_normal(img.shape, dtype=np.float32) * cam.noise
  img = np.clip(img, 0.0, 255.0).astype(np.uint8)
  return np.repeat(img, 3, axis=2) if thermal else img


# ---------------------------------------------------------------------------------------------
# Infrared (thermal-like) appearance.

# Grey levels of a thermal camera (0 cold .. 255 hot): exposed skin is the hottest surface,
# clothing is warmed by the body through materials of different emissivity and thickness, carried
# gear is at air temperature, and the scene is cooler than all of them.
_IR_SKIN = (222.0, 248.0)
_IR_HAIR = (128.0, 162.0)
_IR_GARMENT = np.array([96.0, 112.0, 128.0, 146.0, 164.0, 182.0], np.float32)
_IR_SHOES = (62.0, 84.0)
_IR_GEAR = (56.0, 88.0)
_IR_WALLS = np.repeat(np.array([[34.0], [42.0], [50.0], [58.0], [66.0]], np.float32), 3, axis=1)
_IR_FLOORS = np.repeat(np.array([[44.0], [52.0], [60.0], [70.0]], np.float32), 3, axis=1)
# Mostly cold objects; some warm ones (lamps, machines, vents, parked engines).
_IR_CLUTTER = np.repeat(np.array([[40.0], [48.0], [56.0], [64.0], [72.0], [80.0], [120.0],
                                  [150.0]], np.float32), 3, axis=1)


def _grey(level: float) -> np.ndarray:
  return np.full(3, level, np.float32)


@functools.lru_cache(maxsize=512)
def _thermal_person(spec: SynthReIDSpec, key: tuple[int, int, int, int]) -> _Person:
  """The identity ``key`` as a thermal camera sees it: the same body, pose and gear, but grey
  levels from body heat and material emissivity instead of colours; patterns and logos vanish."""
  p = _person(spec, key)
  rng = np.random.default_rng([key[0], _THERMAL, key[1], key[2]])
  skin = float(rng.uniform(*_IR_SKIN))
  upper = float(rng.choice(_IR_GARMENT))
  lower = float(rng.choice(_IR_GARMENT)) * 0.9  # legs are cooler than the torso
  gear = rng.uniform(*_IR_GEAR, size=2)
  return dataclasses.replace(
      p, skin=_grey(skin), hair=_grey(rng.uniform(*_IR_HAIR)), upper=_grey(upper),
      upper2=_grey(upper), pattern=_SOLID, lower=_grey(lower),
      shoes=_grey(rng.uniform(*_IR_SHOES)),
      backpack=None if p.backpack is None else _grey(gear[0]),
      bag=None if p.bag is None else _grey(gear[1]), logo=None,
      hat=None if p.hat is None else _grey(0.8 * float(rng.uniform(*_IR_HAIR))))


@functools.lru_cache(maxsize=16)
def _thermal_camera(spec: SynthReIDSpec, cam: int) -> _Camera:
  """A thermal camera: no colour, a dark and low-contrast scene, soft optics, sensor noise."""
  rng = _rng(spec.seed, _THERMAL, 1000 + cam)
  return _Camera(gain=1.0, cast=np.ones(3, np.float32), haze=0.0, blur=0.9, noise=3.5,
                 background=_background_texture(rng, _IR_WALLS, _IR_FLOORS, _IR_CLUTTER))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of an [H, W, C] float32 image, edges replicated."""
  radius = max(1, math.ceil(3.0 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = (taps / taps.sum()).astype(np.float32)
  h, w, _ = img.shape
  padded = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode='edge')
  img = sum(t * padded[k:k + h] for k, t in enumerate(taps))
  padded = np.pad(img, ((0, 0), (radius, radius), (0, 0)), mode='edge')
  return sum(t * padded[:, k:k + w] for k, t in enumerate(taps))


# ---------------------------------------------------------------------------------------------
# Writing.


def _write_dataset(directory: pathlib.Path, spec: SynthReIDSpec) -> dict[str, int]:
  """Draws and writes every image under ``directory``; returns the counts."""
  for name in SPLIT_DIRS.values():
    (directory / name).mkdir(parents=True, exist_ok=True)
  shots = plan_shots(spec)
  for shot in shots:
    Image.fromarray(render_shot(spec, shot)).save(
        directory / SPLIT_DIRS[shot.split] / shot.filename, quality=spec.jpeg_quality)
  counts = {}
  for split in ('train', 'query', 'gallery'):
    counts[f'{split}_ids'] = len({s.pid for s in shots if s.split == split and s.pid > 0})
    counts[f'{split}_images'] = sum(s.split == split for s in shots)
  return {
      **counts,
      'distractors': sum(s.pid == 0 for s in shots),
      'junk': sum(s.pid == -1 for s in shots),
      'cameras': len({s.cam for s in shots}),
  }


def _is_complete(root: pathlib.Path, marker: str = 'synthreid.json') -> bool:
  return (root / marker).is_file()


def publish_atomically(root: str | os.PathLike, spec: dict, marker: str,
                       write: Callable[[pathlib.Path], dict], *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes a generated dataset to ``root`` atomically and returns ``root``.

  ``write(directory)`` fills a temporary directory next to ``root`` and returns the JSON-able
  info that is written to ``directory / marker`` (with the generation time added); the directory
  is then renamed to ``root``, so ``root`` either does not exist or is complete. If another
  process publishes the same ``spec`` at ``root`` meanwhile, its copy is kept and this one
  discarded. Shared by every synthetic dataset (SynthReID, its infrared variant, SynthVehicle).

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False, or another process
      wrote another spec there meanwhile.
  """
  root = pathlib.Path(root)
  if root.exists() and any(root.iterdir()) and not overwrite:
    raise FileExistsError(f'{root} already exists and is not empty; delete it, choose another '
                          'directory, or pass overwrite=True (--overwrite).')
  root.parent.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
  try:
    info = write(tmp)
    info['generation_seconds'] = round(time.perf_counter() - start, 3)
    (tmp / marker).write_text(json.dumps(info, indent=2) + '\n')
    if overwrite and root.exists():
      trash = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-', dir=root.parent))
      os.replace(root, trash / 'old')
      shutil.rmtree(trash)
    try:
      os.replace(tmp, root)
    except OSError:
      if not _is_complete(root, marker):
        raise
      other = json.loads((root / marker).read_text()).get('spec')
      if other != spec:
        raise FileExistsError(f'{root} was written meanwhile with another spec; delete it or '
                              'choose another directory.') from None
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return root


def ensure_cached(root: pathlib.Path, marker: str,
                  generate: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
  """``root`` if it holds ``marker`` (complete), else ``generate(root)``; refuses foreign dirs."""
  if _is_complete(root, marker):
    return root
  if root.exists() and any(root.iterdir()):
    raise DatasetError(f'{root} exists but has no {marker} (not written by this '
                       'generator, or damaged); delete the directory and run again.')
  return generate(root)


def generate_synthreid(root: str | os.PathLike, spec: SynthReIDSpec = SynthReIDSpec(), *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes the dataset of ``spec`` to ``root`` atomically and returns ``root``.

  The images are written to a temporary directory next to ``root`` that is then renamed to
  ``root``, so ``root`` either does not exist or is complete. If another process publishes the
  same spec at ``root`` meanwhile, its copy is kept and this one discarded.

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False.
  """

  def write(directory: pathlib.Path) -> dict:
    counts = _write_dataset(directory, spec)
    return {
        'name': 'SynthReID', 'version': SYNTHREID_VERSION, 'spec': dataclasses.asdict(spec),
        'spec_hash': spec_hash(spec), 'layout': 'market1501', 'fps': FPS, 'sessions': [SESSION],
        'counts': counts,
        'camera_graph_m': [[a, b, d] for (a, b), d in camera_graph(spec).items()],
    }
  return publish_atomically(root, dataclasses.asdict(spec), 'synthreid.json', write,
                            overwrite=overwrite)


def ensure_synthreid(cache_dir: str | os.PathLike | None = None,
                     spec: SynthReIDSpec = SynthReIDSpec()) -> pathlib.Path:
  """The dataset of ``spec`` under ``cache_dir`` (default ``default_cache_dir()``).

  Returns ``cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'`` at once if it is
  complete, else generates it first. Processes racing to generate it all get the same copy.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'
  return ensure_cached(root, 'synthreid.json', lambda r: generate_synthreid(r, spec))


# ---------------------------------------------------------------------------------------------
# The infrared variant, in the SYSU-MM01 layout.

SYNTHREID_IR_VERSION = 1
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
  person_stream = _PALETTES[spec.domain]['person_stream']
  shots = []
  for pid in sorted(ids['train'] + ids['val'] + ids['test']):
    rng = _rng(spec.seed, _IR_PLAN, pid)
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
            image_key=(spec.seed, _IR_PLAN, pid, k), view=int(rng.integers(4)),
            phase=float(rng.uniform(0, 2 * np.pi)), scene_x=float(rng.uniform(0, _BG_PERIOD)),
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

  Visible images are SynthReID's rendering (``spec.domain``'s cameras 1, 2, 4, 5); infrared
  images are thermal-like: grey, skin brightest, clothing grey levels from material emissivity,
  a dark low-contrast scene. ``spec.num_cameras``, the walking model and the distractor/junk
  fields are not used. Atomic as ``generate_synthreid``.
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
  (``synthreid_ir_v1_<spec_hash>``)."""
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthreid_ir_v{SYNTHREID_IR_VERSION}_{spec_hash(spec)}'
  return ensure_cached(root, IR_MARKER, lambda r: generate_synthreid_ir(r, spec))


def _parse_spec(assignments: list[str]) -> SynthReIDSpec:
  """``['seed=1', 'num_train_ids=50']`` -> SynthReIDSpec; exits with a message on a bad key."""
  defaults = dataclasses.asdict(SynthReIDSpec())
  values = {}
  for item in assignments:
    key, _, value = item.partition('=')
    try:
      values[key] = type(defaults[key])(value)
    except (KeyError, ValueError):
      sys.exit(f'--spec {item!r}: expected KEY=VALUE with a value of the right type and KEY one '
               f'of {", ".join(defaults)}.')
  try:
    return SynthReIDSpec(**values)
  except ValueError as e:
    sys.exit(str(e))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Writes the SynthReID synthetic person re-ID dataset (Market-1501 layout).')
  parser.add_argument('--out', required=True, help='dataset root to write')
  parser.add_argument('--spec', nargs='*', default=[], metavar='KEY=VALUE',
                      help='SynthReIDSpec fields to change, e.g. seed=1 num_train_ids=50')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  parser.add_argument('--infrared', action='store_true',
                      help='write the visible + infrared variant in the SYSU-MM01 layout')
  args = parser.parse_args(argv)
  spec = _parse_spec(args.spec)
  generate = generate_synthreid_ir if args.infrared else generate_synthreid
  try:
    root = generate(args.out, spec, overwrite=args.overwrite)
  except FileExistsError as e:
    sys.exit(str(e))
  info = json.loads((root / (IR_MARKER if args.infrared else 'synthreid.json')).read_text())
  for key, value in info['counts'].items():
    print(f'{key:>15}: {value}')
  print(f'wrote {root} in {info["generation_seconds"]:.1f} s')


if __name__ == '__main__':
  main()
