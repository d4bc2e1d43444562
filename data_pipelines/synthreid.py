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

Use ``ensure_synthreid(cache_dir)`` to get a cached copy (generated on first use), or
``python -m data_pipelines.synthreid --out DIR`` to write one.
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

  def __post_init__(self):
    problems = []
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
  """A short stable hash of the spec, used to name cached copies."""
  text = json.dumps(dataclasses.asdict(spec), sort_keys=True)
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
    nn: index of this detection among those of the same camera and frame, 1-based.
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
  person_key = (spec.seed, _PERSON, pid, 0)

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
        person_key=None if style == 'background' else (spec.seed, _PERSON, 10000 + stream, k),
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


@functools.lru_cache(maxsize=64)
def _colour_group(seed: int, group: int) -> tuple[np.ndarray, ...]:
  rng = _rng(seed, _GROUP, group)
  upper = int(rng.choice(len(_CLOTH), p=_UPPER_P / _UPPER_P.sum()))
  luma = _CLOTH @ np.array([0.3, 0.59, 0.11], np.float32)
  contrast = np.flatnonzero(np.abs(luma - luma[upper]) > 60)
  upper2 = int(rng.choice(contrast))
  lower = int(rng.choice(len(_CLOTH), p=_LOWER_P / _LOWER_P.sum()))
  shoes = int(rng.integers(len(_SHOES)))
  return _CLOTH[upper], _CLOTH[upper2], _CLOTH[lower], _SHOES[shoes]


@functools.lru_cache(maxsize=512)
def _person(spec: SynthReIDSpec, key: tuple[int, int, int, int]) -> _Person:
  rng = np.random.default_rng(list(key))
  upper, upper2, lower, shoes = _colour_group(spec.seed, int(rng.integers(spec.num_colour_groups)))
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
      hat=_CLOTH[rng.integers(len(_CLOTH))] if rng.uniform() < 0.3 else None)


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


@functools.lru_cache(maxsize=16)
def _camera(spec: SynthReIDSpec, cam: int) -> _Camera:
  rng = _rng(spec.seed, _CAMERA, cam)
  gain, cast, haze, blur, noise = _CAMERA_LOOKS[(cam - 1) % len(_CAMERA_LOOKS)]
  cast = np.array(cast, np.float32)
  if cam > len(_CAMERA_LOOKS):
    gain *= rng.uniform(0.8, 1.2)
    cast = cast * rng.uniform(0.9, 1.1, 3).astype(np.float32)
  return _Camera(gain=gain, cast=cast, haze=haze, blur=blur, noise=noise,
                 background=_background_texture(rng))


def _background_texture(rng: np.random.Generator) -> np.ndarray:
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
  walls = _WALLS[rng.integers(len(_WALLS), size=zones)] * rng.uniform(0.8, 1.1, (zones, 1))
  floors = _FLOORS[rng.integers(len(_FLOORS), size=zones)] * rng.uniform(0.85, 1.1, (zones, 1))
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
    colour = _CLUTTER[rng.integers(len(_CLUTTER))] * rng.uniform(0.7, 1.0)
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


def render_shot(spec: SynthReIDSpec, shot: Shot) -> np.ndarray:
  """Draws one image: uint8 [height, width, 3]."""
  rng = np.random.default_rng(list(shot.image_key))
  cam = _camera(spec, shot.cam)
  cu, cv, box_h = _crop_box(shot, rng)
  rows, cols = 2 * spec.height, 2 * spec.width  # 2x supersampling
  box_w = box_h * spec.width / spec.height
  u = (cu - box_w / 2 + (np.arange(cols) + 0.5) * box_w / cols).astype(np.float32)
  v = (cv - box_h / 2 + (np.arange(rows) + 0.5) * box_h / rows).astype(np.float32)
  tex_rows, tex_cols, _ = cam.background.shape
  ti = np.clip(((v - _BG_TOP) * _BG_RES).astype(np.intp), 0, tex_rows - 1)
  tj = np.floor((u + shot.scene_x) * _BG_RES).astype(np.intp) % tex_cols
  texels = np.take(cam.background.reshape(-1, 3), ti[:, None] * tex_cols + tj[None, :], axis=0)
  canvas = _Canvas(texels, u, v)
  if shot.person_key is not None:
    _draw_person(canvas, _person(spec, shot.person_key), shot.view, shot.phase)
  x = canvas.img
  img = 0.25 * (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2])
  gain = cam.gain * rng.uniform(0.92, 1.08)
  img = img * (gain * cam.cast * rng.normal(1.0, 0.03, 3).astype(np.float32))
  if cam.haze:
    img = (1.0 - cam.haze) * img + cam.haze * 150.0
  blur = cam.blur + (rng.uniform(2.0, 3.5) if shot.style == 'blurred' else 0.0)
  img = _gaussian_blur(np.clip(img, 0.0, 255.0), blur)
  img += rng.standard_normal(img.shape, dtype=np.float32) * cam.noise
  return np.clip(img, 0.0, 255.0).astype(np.uint8)


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


def _is_complete(root: pathlib.Path) -> bool:
  return (root / 'synthreid.json').is_file()


def generate_synthreid(root: str | os.PathLike, spec: SynthReIDSpec = SynthReIDSpec(), *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes the dataset of ``spec`` to ``root`` atomically and returns ``root``.

  The images are written to a temporary directory next to ``root`` that is then renamed to
  ``root``, so ``root`` either does not exist or is complete. If another process publishes the
  same spec at ``root`` meanwhile, its copy is kept and this one discarded.

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False.
  """
  root = pathlib.Path(root)
  if root.exists() and any(root.iterdir()) and not overwrite:
    raise FileExistsError(f'{root} already exists and is not empty; delete it, choose another '
                          'directory, or pass overwrite=True (--overwrite).')
  root.parent.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
  try:
    counts = _write_dataset(tmp, spec)
    info = {
        'name': 'SynthReID', 'version': SYNTHREID_VERSION, 'spec': dataclasses.asdict(spec),
        'spec_hash': spec_hash(spec), 'layout': 'market1501', 'fps': FPS, 'sessions': [SESSION],
        'counts': counts,
        'camera_graph_m': [[a, b, d] for (a, b), d in camera_graph(spec).items()],
        'generation_seconds': round(time.perf_counter() - start, 3),
    }
    (tmp / 'synthreid.json').write_text(json.dumps(info, indent=2) + '\n')
    if overwrite and root.exists():
      trash = pathlib.Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-', dir=root.parent))
      os.replace(root, trash / 'old')
      shutil.rmtree(trash)
    try:
      os.replace(tmp, root)
    except OSError:
      if not _is_complete(root):
        raise
      other = json.loads((root / 'synthreid.json').read_text()).get('spec')
      if other != dataclasses.asdict(spec):
        raise FileExistsError(f'{root} was written meanwhile with another spec; delete it or '
                              'choose another directory.') from None
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return root


def ensure_synthreid(cache_dir: str | os.PathLike | None = None,
                     spec: SynthReIDSpec = SynthReIDSpec()) -> pathlib.Path:
  """The dataset of ``spec`` under ``cache_dir`` (default ``default_cache_dir()``).

  Returns ``cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'`` at once if it is
  complete, else generates it first. Processes racing to generate it all get the same copy.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthreid_v{SYNTHREID_VERSION}_{spec_hash(spec)}'
  if _is_complete(root):
    return root
  if root.exists() and any(root.iterdir()):
    raise DatasetError(f'{root} exists but has no synthreid.json (not written by this '
                       'generator, or damaged); delete the directory and run again.')
  return generate_synthreid(root, spec)


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
  args = parser.parse_args(argv)
  spec = _parse_spec(args.spec)
  try:
    root = generate_synthreid(args.out, spec, overwrite=args.overwrite)
  except FileExistsError as e:
    sys.exit(str(e))
  info = json.loads((root / 'synthreid.json').read_text())
  for key, value in info['counts'].items():
    print(f'{key:>15}: {value}')
  print(f'wrote {root} in {info["generation_seconds"]:.1f} s')


if __name__ == '__main__':
  main()
