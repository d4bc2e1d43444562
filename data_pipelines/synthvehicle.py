"""SynthVehicle: an embedded, procedurally drawn vehicle re-ID dataset in the VeRi-776 layout.

Written exactly as VeRi-776 is stored, so `data_pipelines.veri.load_veri` reads it::

  <root>/image_train/   training vehicles (ids 0001 .. num_train_ids)
  <root>/image_query/   queries of the test vehicles (one per vehicle and camera, 1..3 cameras)
  <root>/image_test/    gallery: every other image of the test vehicles
  <root>/name_train.txt, name_query.txt, name_test.txt   the file names, one a line
  <root>/synthvehicle.json   version, spec, counts, generation time

File names follow VeRi: ``VVVV_cCCC_FFFFFFFF_N.jpg``: vehicle, camera 001..020, frame (25 fps,
one common clock) and an index N (0, or 1, 2, ... when the same vehicle has several images at the
same camera and frame).

Vehicles. A vehicle has a type (sedan, SUV, van, truck, bus: size, cabin shape and proportions
differ), a body colour drawn with realistic frequencies (white, black, silver and grey are most
of them, so colour alone does not identify a vehicle), and details that tell same-looking
vehicles apart and are visible only from some viewpoints: a roof rack or a sunroof (roof: seen
from the elevated front/rear views and as rack bars from the side), head- and tail-light shapes
(round, rectangular, slim), a windshield sticker (front), a rear-window sticker (rear), a side
stripe or a door decal (sides), rim colour, a spare wheel on some SUVs. Trucks have a cargo box of
their own colour; buses rows of windows and a door.

Viewpoints: front, rear, side (left or right, mirror images) and oblique (front or rear face
and a foreshortened side). A camera sees each passing vehicle from one viewpoint (a tracklet of
several images with small changes of scale and position).

Cameras. Each camera has a road scene (asphalt with lane markings, a kerb and pavement, a wall,
hedge or building facade behind; zones of colour per camera) and one of SynthReID's six camera
looks (neutral, warm, dim, cool, hazy, green; cameras beyond six reuse a look, perturbed): gain,
colour cast, haze, lens blur and sensor noise. The drawing primitives, the camera looks and the
atomic, cached writing are SynthReID's (`data_pipelines.synthreid.render` and `.cache`).

Determinism: every draw comes from ``np.random.default_rng([seed, stream, a, b])`` keyed by what
it describes, so the same spec gives byte-identical images.

Use ``ensure_synthvehicle(cache_dir)`` for a cached copy (generated on first use), or
``python -m data_pipelines.synthvehicle --out DIR`` to write one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sys

import numpy as np
from PIL import Image

from data_pipelines.synthreid.cache import default_cache_dir, ensure_cached, publish_atomically
from data_pipelines.synthreid.render import CAMERA_LOOKS, Canvas, darker, gaussian_blur

SYNTHVEHICLE_VERSION = 1
MARKER = 'synthvehicle.json'
FPS = 25
SPLIT_DIRS = {'train': 'image_train', 'query': 'image_query', 'gallery': 'image_test'}
NAME_FILES = {'train': 'name_train.txt', 'query': 'name_query.txt', 'gallery': 'name_test.txt'}

_CAMERA, _VEHICLE, _ROUTE, _QUERY, _IMAGE = range(1, 6)

TYPES = ('sedan', 'suv', 'van', 'truck', 'bus')
_TYPE_P = np.array([45, 25, 14, 10, 6], np.float64)
# Side-view length, body height (without wheels), front width, wheel radius, in vehicle units.
_SIZES = {'sedan': (1.00, 0.30, 0.42, 0.085), 'suv': (1.00, 0.40, 0.46, 0.095),
          'van': (1.05, 0.50, 0.46, 0.085), 'truck': (1.25, 0.56, 0.50, 0.10),
          'bus': (1.55, 0.60, 0.54, 0.10)}
VIEWS = ('front', 'rear', 'side', 'oblique_front', 'oblique_rear')
_VIEW_P = np.array([30, 30, 14, 13, 13], np.float64)

_BODY = np.array([(236, 236, 232), (24, 24, 26), (176, 178, 182), (104, 106, 110), (170, 30, 34),
                  (40, 74, 150), (26, 36, 70), (226, 190, 40), (40, 100, 60), (110, 74, 48),
                  (224, 110, 30), (200, 184, 150)], np.float32)
_BODY_P = np.array([25, 20, 15, 12, 8, 6, 4, 3, 3, 2, 1, 1], np.float64)
_GLASS = np.array([44, 54, 66], np.float32)
_TYRE = np.array([22, 22, 24], np.float32)
_RIMS = np.array([(190, 192, 196), (60, 60, 64), (140, 140, 146)], np.float32)
_DECAL = np.array([(240, 200, 40), (40, 190, 220), (226, 60, 50), (60, 190, 80), (245, 245, 245),
                   (20, 20, 20), (240, 120, 180)], np.float32)
_CARGO = np.array([(236, 236, 232), (176, 178, 182), (40, 74, 150), (170, 30, 34), (40, 100, 60)],
                  np.float32)
_HEAD = np.array([250, 248, 226], np.float32)
_TAIL = np.array([200, 20, 24], np.float32)
_ASPHALT = np.array([(74, 74, 78), (92, 90, 88), (62, 64, 70), (104, 104, 106)], np.float32)
_SIDE = np.array([(150, 146, 140), (70, 110, 60), (160, 120, 100), (120, 126, 134),
                  (186, 180, 166)], np.float32)


@dataclasses.dataclass(frozen=True)
class SynthVehicleSpec:
  """Everything that determines a SynthVehicle dataset.

  Attributes:
    seed: master seed.
    num_train_ids: vehicles in ``image_train`` (ids 1..num_train_ids).
    num_test_ids: vehicles in query/gallery (the ids that follow).
    min_images_per_id: fewest images of a vehicle.
    max_images_per_id: most images of a vehicle.
    min_cameras_per_id: fewest cameras that see a vehicle (at least 2).
    max_cameras_per_id: most cameras that see a vehicle.
    max_query_cameras: a test vehicle has one query in each of 1..this many cameras.
    num_cameras: cameras 1..num_cameras (VeRi names allow 1..20).
    height: image height in pixels.
    width: image width in pixels.
    jpeg_quality: JPEG quality of the written files.
    duration_s: vehicles enter the area uniformly in [0, duration_s) seconds.
  """

  seed: int = 0
  num_train_ids: int = 200
  num_test_ids: int = 100
  min_images_per_id: int = 8
  max_images_per_id: int = 14
  min_cameras_per_id: int = 2
  max_cameras_per_id: int = 5
  max_query_cameras: int = 3
  num_cameras: int = 10
  height: int = 96
  width: int = 96
  jpeg_quality: int = 90
  duration_s: float = 3600.0

  def __post_init__(self):
    problems = []
    if self.seed < 0:
      problems.append(f'seed={self.seed} must be >= 0')
    if self.num_train_ids < 1 or self.num_test_ids < 1 or (
        self.num_train_ids + self.num_test_ids > 9999):
      problems.append('need num_train_ids, num_test_ids >= 1 and their sum <= 9999 (4-digit ids)')
    if not 2 <= self.num_cameras <= 20:
      problems.append(f'num_cameras={self.num_cameras} must be in 2..20 (VeRi names c001-c020)')
    if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras:
      problems.append('need 2 <= min_cameras_per_id <= max_cameras_per_id <= num_cameras')
    if not 2 * self.min_cameras_per_id <= self.min_images_per_id <= self.max_images_per_id:
      problems.append('need 2 * min_cameras_per_id <= min_images_per_id <= max_images_per_id')
    if self.max_query_cameras < 1:
      problems.append('max_query_cameras must be >= 1')
    if self.height < 16 or self.width < 16 or not 1 <= self.jpeg_quality <= 100:
      problems.append('need height, width >= 16 and 1 <= jpeg_quality <= 100')
    if not 0 < self.duration_s <= 100_000:
      problems.append('duration_s must be in (0, 100000]')
    if problems:
      raise ValueError('Invalid SynthVehicleSpec: ' + '; '.join(problems) + '.')


def spec_hash(spec: SynthVehicleSpec) -> str:
  """A short stable hash of the spec, used to name cached copies."""
  text = json.dumps(dataclasses.asdict(spec), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _rng(seed: int, stream: int, a: int, b: int = 0) -> np.random.Generator:
  return np.random.default_rng([seed, stream, a, b])


# ---------------------------------------------------------------------------------------------
# Plan.


@dataclasses.dataclass(frozen=True)
class VehicleShot:
  """One image before it is drawn: split, vehicle, camera (1-based), frame, view, crop jitter."""

  split: str
  vid: int
  cam: int
  frame: int
  view: str
  mirror: bool
  image_key: tuple[int, int, int, int]
  index: int = 0

  @property
  def filename(self) -> str:
    return f'{self.vid:04d}_c{self.cam:03d}_{self.frame:08d}_{self.index}.jpg'


def _vehicle_shots(spec: SynthVehicleSpec, vid: int, test: bool) -> list[VehicleShot]:
  rng = _rng(spec.seed, _ROUTE, vid)
  num_images = int(rng.integers(spec.min_images_per_id, spec.max_images_per_id + 1))
  num_cams = int(rng.integers(spec.min_cameras_per_id, spec.max_cameras_per_id + 1))
  num_cams = min(num_cams, num_images // 2)
  cams = [int(c) for c in rng.choice(np.arange(1, spec.num_cameras + 1), num_cams, False)]
  counts = 2 + rng.multinomial(num_images - 2 * num_cams, np.full(num_cams, 1 / num_cams))
  frame = int(rng.uniform(0, spec.duration_s) * FPS)
  visits = []
  for cam, n in zip(cams, counts):
    frame += int(rng.uniform(20, 150) * FPS)  # driving to the next camera
    view = VIEWS[int(rng.choice(len(VIEWS), p=_VIEW_P / _VIEW_P.sum()))]
    mirror = bool(rng.uniform() < 0.5)
    stride = int(rng.integers(2, 6))
    visits.append((cam, frame + stride * np.arange(int(n)), view, mirror))
    frame += stride * int(n)
  query = set()
  if test:
    qrng = _rng(spec.seed, _QUERY, vid)
    num_query = int(qrng.integers(1, min(spec.max_query_cameras, len(visits)) + 1))
    for v in qrng.choice(len(visits), num_query, replace=False):
      query.add((int(v), int(qrng.integers(len(visits[v][1])))))
  shots, k = [], 0
  for v, (cam, frames, view, mirror) in enumerate(visits):
    for j, f in enumerate(frames):
      split = ('query' if (v, j) in query else 'gallery') if test else 'train'
      shots.append(VehicleShot(split=split, vid=vid, cam=cam, frame=int(f), view=view,
                               mirror=mirror, image_key=(spec.seed, _IMAGE, vid, k)))
      k += 1
  return shots


def plan_shots(spec: SynthVehicleSpec) -> list[VehicleShot]:
  """Every image of the dataset with unique VeRi names (cheap: nothing is drawn)."""
  shots = []
  for i in range(spec.num_train_ids):
    shots += _vehicle_shots(spec, i + 1, test=False)
  for i in range(spec.num_test_ids):
    shots += _vehicle_shots(spec, spec.num_train_ids + i + 1, test=True)
  taken: dict[tuple[int, int, int], int] = {}
  named = []
  for shot in shots:
    key = (shot.vid, shot.cam, shot.frame)
    index = taken.get(key, -1) + 1
    taken[key] = index
    named.append(dataclasses.replace(shot, index=index))
  if max(s.frame for s in named) > 99_999_999 or max(s.index for s in named) > 9:
    raise ValueError('SynthVehicleSpec gives names beyond VeRi\'s 8-digit frames or 1-digit '
                     'index; lower duration_s.')
  return named


# ---------------------------------------------------------------------------------------------
# Appearance.


@dataclasses.dataclass(frozen=True)
class Vehicle:
  """The look of one vehicle (colours RGB float32; None: the detail is absent)."""

  kind: str
  body: np.ndarray
  roof: str  # 'plain', 'rack' or 'sunroof'
  head_lights: str  # 'round', 'rect' or 'slim'
  tail_lights: str
  windshield_sticker: np.ndarray | None
  windshield_sticker_side: int  # -1 left, +1 right (as seen from the front)
  rear_sticker: np.ndarray | None
  stripe: np.ndarray | None
  decal: np.ndarray | None
  rims: np.ndarray
  spare_wheel: bool
  cargo: np.ndarray


@functools.lru_cache(maxsize=1024)
def vehicle(spec: SynthVehicleSpec, vid: int) -> Vehicle:
  """The appearance of vehicle ``vid`` (a pure function of the seed and the id)."""
  rng = _rng(spec.seed, _VEHICLE, vid)
  kind = TYPES[int(rng.choice(len(TYPES), p=_TYPE_P / _TYPE_P.sum()))]
  body = _BODY[int(rng.choice(len(_BODY), p=_BODY_P / _BODY_P.sum()))] * np.float32(
      rng.uniform(0.94, 1.04))
  shapes = ('round', 'rect', 'slim')

  def maybe(probability: float, palette: np.ndarray) -> np.ndarray | None:
    colour = palette[rng.integers(len(palette))]
    return colour if rng.uniform() < probability else None

  return Vehicle(
      kind=kind, body=np.clip(body, 0, 255), roof=('plain', 'rack', 'sunroof')[
          int(rng.choice(3, p=[0.5, 0.25, 0.25]))],
      head_lights=shapes[int(rng.integers(3))], tail_lights=shapes[int(rng.integers(3))],
      windshield_sticker=maybe(0.5, _DECAL), windshield_sticker_side=int(rng.choice([-1, 1])),
      rear_sticker=maybe(0.4, _DECAL), stripe=maybe(0.25, _DECAL), decal=maybe(0.25, _DECAL),
      rims=_RIMS[rng.integers(len(_RIMS))], spare_wheel=kind == 'suv' and rng.uniform() < 0.5,
      cargo=_CARGO[rng.integers(len(_CARGO))])




def _draw_lights(c: Canvas, shape: str, colour: np.ndarray, half_w: float, v: float,
                 size: float) -> None:
  for side in (-1.0, 1.0):
    cu = side * (half_w - 1.4 * size)
    if shape == 'round':
      c.ellipse(cu, v, size, size, colour)
    elif shape == 'rect':
      c.rect(cu - 1.2 * size, cu + 1.2 * size, v - 0.8 * size, v + 0.8 * size, colour)
    else:
      c.rect(cu - 1.8 * size, cu + 1.2 * size, v - 0.35 * size, v + 0.35 * size, colour)


def _draw_face(c: Canvas, veh: Vehicle, front: bool) -> None:
  """The front or rear face, centred at u = 0, ground at v = 0 (v down, so the body is v < 0)."""
  length, height, width, wheel = _SIZES[veh.kind]
  w = width / 2
  top = -wheel * 0.5 - height
  cabin = {'sedan': 0.45, 'suv': 0.45, 'van': 0.55, 'truck': 0.42, 'bus': 0.5}[veh.kind]
  if veh.kind == 'truck' and not front:  # the cargo box hides the cab
    c.rect(-w, w, top - 0.12, -wheel * 0.4, veh.cargo)
    c.rect(-0.02, 0.02, top - 0.1, -wheel * 0.5, darker(veh.cargo, 0.7))
    _draw_lights(c, veh.tail_lights, _TAIL, w, -wheel * 0.7, 0.025)
    c.rect(-0.06, 0.06, -wheel * 0.55, -wheel * 0.2, np.array([235, 235, 225], np.float32))
    return
  for side in (-1.0, 1.0):  # tyres under the corners
    c.rect(side * w * 0.85 - 0.04, side * w * 0.85 + 0.04, -wheel * 0.9, 0.0, _TYRE)
  roof_v = top
  glass_top = roof_v + 0.02
  glass_bottom = top + cabin * height
  # The roof, seen from the elevated camera as a thin band above the glass.
  c.trapezoid(roof_v - 0.05, roof_v + 0.005, 0.0, 0.8 * w, 0.0, 0.86 * w, darker(veh.body, 0.9))
  if veh.roof == 'sunroof' and veh.kind != 'bus':
    c.rect(-0.3 * w, 0.3 * w, roof_v - 0.04, roof_v - 0.008, _GLASS * 0.7)
  elif veh.roof == 'rack':
    for du in (-0.7, 0.7):
      c.rect(du * w - 0.012, du * w + 0.012, roof_v - 0.085, roof_v - 0.01, _TYRE)
    c.rect(-0.82 * w, 0.82 * w, roof_v - 0.085, roof_v - 0.065, _TYRE)
  c.rect(-w, w, top, -wheel * 0.3, veh.body)
  c.trapezoid(glass_top, glass_bottom, 0.0, 0.78 * w, 0.0, 0.9 * w, _GLASS)
  light_v = glass_bottom + 0.45 * (-wheel * 0.3 - glass_bottom)
  if front:
    c.rect(-0.45 * w, 0.45 * w, light_v - 0.02, light_v + 0.035, darker(veh.body, 0.35))
    _draw_lights(c, veh.head_lights, _HEAD, w, light_v, 0.028)
    c.rect(-0.07, 0.07, light_v + 0.045, light_v + 0.075, np.array([235, 235, 225], np.float32))
    for side in (-1.0, 1.0):  # mirrors
      c.rect(side * w - 0.02, side * w + 0.02, glass_bottom - 0.05, glass_bottom - 0.01, veh.body)
    if veh.windshield_sticker is not None:
      su = veh.windshield_sticker_side * 0.6 * w
      c.rect(su - 0.035, su + 0.035, glass_top + 0.02, glass_top + 0.07, veh.windshield_sticker)
  else:
    _draw_lights(c, veh.tail_lights, _TAIL, w, light_v, 0.028)
    c.rect(-0.07, 0.07, light_v + 0.04, light_v + 0.075, np.array([235, 235, 225], np.float32))
    if veh.rear_sticker is not None:
      c.rect(0.2 * w, 0.55 * w, glass_bottom - 0.05, glass_bottom - 0.015, veh.rear_sticker)
    if veh.spare_wheel:
      c.ellipse(0.0, light_v - 0.04, 0.08, 0.07, _TYRE)
      c.ellipse(0.0, light_v - 0.04, 0.04, 0.035, veh.rims)
  if veh.kind == 'bus':
    c.rect(-w, w, top + 0.02, top + 0.06, np.array([250, 140, 20], np.float32))  # route sign


def _draw_side(c: Canvas, veh: Vehicle) -> None:
  """The left side, the front towards -u, centred at u = 0, ground at v = 0."""
  length, height, width, wheel = _SIZES[veh.kind]
  half = length / 2
  bottom = -wheel * 0.45
  top = bottom - height
  if veh.kind == 'truck':
    cab_end = -half + 0.3 * length
    c.rect(cab_end + 0.015, half, top - 0.1, bottom + 0.01, veh.cargo)
    if veh.decal is not None:
      c.rect(cab_end + 0.15, cab_end + 0.45, top, top + 0.15, veh.decal)
    c.rect(-half, cab_end, top + 0.1, bottom, veh.body)
    c.trapezoid(top + 0.14, top + 0.28, -half + 0.16, 0.09, -half + 0.16, 0.12, _GLASS)
  elif veh.kind == 'bus':
    c.rect(-half, half, top, bottom, veh.body)
    for k in range(7):
      u0 = -half + 0.08 + k * (length - 0.12) / 7
      c.rect(u0, u0 + (length - 0.12) / 7 - 0.03, top + 0.05, top + 0.25, _GLASS)
    c.rect(-half + 0.1, -half + 0.22, top + 0.28, bottom - 0.01, darker(veh.body, 0.6))  # door
  else:
    body_top = bottom - 0.55 * height
    c.rect(-half, half, body_top, bottom, veh.body)
    if veh.kind == 'sedan':
      front_u, back_u, roof_front, roof_back = -0.22, 0.28, -0.1, 0.18
    elif veh.kind == 'suv':
      front_u, back_u, roof_front, roof_back = -0.24, 0.47, -0.14, 0.46
    else:  # van
      front_u, back_u, roof_front, roof_back = -0.42, 0.5, -0.3, 0.5
    c.trapezoid(top, body_top + 0.002, (roof_front + roof_back) / 2, (roof_back - roof_front) / 2,
                (front_u + back_u) / 2, (back_u - front_u) / 2, veh.body)
    c.trapezoid(top + 0.025, body_top, (roof_front + roof_back) / 2,
                (roof_back - roof_front) / 2 - 0.02, (front_u + back_u) / 2,
                (back_u - front_u) / 2 - 0.04, _GLASS)
    c.rect(0.02, 0.045, top, body_top, veh.body)  # B-pillar
    c.rect(-half + 0.01, -half + 0.05, body_top + 0.02, body_top + 0.05, _HEAD)
    c.rect(half - 0.04, half - 0.005, body_top + 0.02, body_top + 0.05, _TAIL)
    c.rect(-0.03, -0.025, body_top + 0.01, bottom - 0.01, darker(veh.body, 0.6))  # door line
    if veh.roof == 'rack':
      c.rect(roof_front, roof_back, top - 0.03, top - 0.012, _TYRE)
      for u0 in (roof_front + 0.02, roof_back - 0.04):
        c.rect(u0, u0 + 0.02, top - 0.03, top, _TYRE)
    if veh.decal is not None:
      c.ellipse(-0.1, (body_top + bottom) / 2, 0.06, 0.035, veh.decal)
  if veh.stripe is not None:
    c.rect(-half + 0.02, half - 0.02, bottom - 0.045, bottom - 0.03, veh.stripe)
  axle = half - 0.2 * length if veh.kind != 'bus' else half - 0.25
  for u0 in (-axle, axle):
    c.ellipse(u0, -wheel, wheel, wheel, _TYRE)
    c.ellipse(u0, -wheel, 0.55 * wheel, 0.55 * wheel, veh.rims)


@dataclasses.dataclass(frozen=True)
class _Camera:
  gain: float
  cast: np.ndarray
  haze: float
  blur: float
  noise: float
  background: np.ndarray  # [rows, cols, 3] wrapping road scene


_BG_RES = 100
_BG_PERIOD = 4.0
_BG_TOP, _BG_BOTTOM = -1.2, 0.6


@functools.lru_cache(maxsize=32)
def _camera(spec: SynthVehicleSpec, cam: int) -> _Camera:
  rng = _rng(spec.seed, _CAMERA, cam)
  looks = CAMERA_LOOKS
  gain, cast, haze, blur, noise = looks[(cam - 1) % len(looks)]
  cast = np.array(cast, np.float32)
  if cam > len(looks):
    gain *= rng.uniform(0.8, 1.2)
    cast = cast * rng.uniform(0.9, 1.1, 3).astype(np.float32)
  rows, cols = int((_BG_BOTTOM - _BG_TOP) * _BG_RES), int(_BG_PERIOD * _BG_RES)
  v = (_BG_TOP + (np.arange(rows) + 0.5) / _BG_RES)[:, None].astype(np.float32)
  x = ((np.arange(cols) + 0.5) / _BG_RES)[None, :].astype(np.float32)
  kerb = rng.uniform(-0.75, -0.45)  # where the road ends behind the vehicle
  asphalt = _ASPHALT[rng.integers(len(_ASPHALT))]
  edges = np.sort(rng.uniform(0, _BG_PERIOD, int(rng.integers(2, 5))))
  zone = np.searchsorted(edges, x[0]) % len(edges)
  sides = _SIDE[rng.integers(len(_SIDE), size=len(edges))] * rng.uniform(0.8, 1.1, (len(edges), 1))
  img = np.where((v > kerb)[..., None], asphalt * (1.0 + 0 * x)[..., None],
                 sides[zone] * (1.0 + 0 * v)[..., None])
  img = img.astype(np.float32)
  lane = rng.uniform(kerb + 0.1, 0.4)
  dash = (v > lane - 0.012) & (v < lane + 0.012) & ((x / rng.uniform(0.3, 0.6)) % 1.0 < 0.5)
  img[dash] = (np.array([230, 230, 220], np.float32) if rng.uniform() < 0.7
               else np.array([220, 180, 40], np.float32))
  img[((v > kerb) & (v < kerb + 0.03))[:, 0]] = np.array([170, 168, 160], np.float32)
  ripple = 0.05 * np.sin(2 * np.pi * (int(rng.integers(1, 9)) * x / _BG_PERIOD + rng.uniform())
                         + v * rng.uniform(-3, 3))
  return _Camera(gain=gain, cast=cast, haze=haze, blur=blur, noise=noise,
                 background=(img * (1.0 + ripple)[..., None]).astype(np.float32))


def render_shot(spec: SynthVehicleSpec, shot: VehicleShot) -> np.ndarray:
  """Draws one image: uint8 [height, width, 3]."""
  rng = np.random.default_rng(list(shot.image_key))
  cam = _camera(spec, shot.cam)
  veh = vehicle(spec, shot.vid)
  length, height, width, wheel = _SIZES[veh.kind]
  if shot.view in ('front', 'rear'):
    extent_u, extent_v = width, height + wheel + 0.12
  elif shot.view == 'side':
    extent_u, extent_v = length, height + wheel + 0.05
  else:
    extent_u, extent_v = 0.6 * width + 0.6 * length, height + wheel + 0.12
  aspect = spec.width / spec.height
  box_h = max(extent_v, extent_u / aspect) * rng.uniform(1.1, 1.3)
  box_w = box_h * aspect
  cu = rng.uniform(-0.05, 0.05) * box_w
  cv = -extent_v / 2 + rng.uniform(-0.04, 0.04) * box_h
  rows, cols = 2 * spec.height, 2 * spec.width
  u = (cu - box_w / 2 + (np.arange(cols) + 0.5) * box_w / cols).astype(np.float32)
  v = (cv - box_h / 2 + (np.arange(rows) + 0.5) * box_h / rows).astype(np.float32)
  tex_rows, tex_cols, _ = cam.background.shape
  scene_x = rng.uniform(0, _BG_PERIOD)
  ti = np.clip(((v - _BG_TOP) * _BG_RES).astype(np.intp), 0, tex_rows - 1)
  tj = np.floor((u + scene_x) * _BG_RES).astype(np.intp) % tex_cols
  img = np.take(cam.background.reshape(-1, 3), ti[:, None] * tex_cols + tj[None, :], axis=0)
  canvas = Canvas(img, u, v)
  canvas.shade(0.0, 0.0, 0.55 * extent_u, 0.05, 0.55)  # shadow
  if shot.view in ('front', 'rear'):
    _draw_face(canvas, veh, front=shot.view == 'front')
  elif shot.view == 'side':
    _draw_side(canvas, veh)
  else:  # oblique: the face and the side, both foreshortened to 60%, side by side
    # `_draw_side` has the front at -u and the rear at +u, so [front face | side] and
    # [side | rear face] put each end of the side next to its face.
    face_w, side_w = 0.6 * width, 0.6 * length
    left = -(face_w + side_w) / 2
    front = shot.view == 'oblique_front'
    face_c = left + face_w / 2 if front else left + side_w + face_w / 2
    side_c = left + face_w + side_w / 2 if front else left + side_w / 2
    split = int(np.searchsorted(u, left + face_w if front else left + side_w))
    face_cols = slice(0, split) if front else slice(split, cols)
    side_cols = slice(split, cols) if front else slice(0, split)
    for part, centre, draw in ((face_cols, face_c, lambda c: _draw_face(c, veh, front)),
                               (side_cols, side_c, lambda c: _draw_side(c, veh))):
      if len(u[part]) > 1:
        draw(Canvas(img[:, part], (u[part] - centre) / 0.6, v))
  if shot.mirror and shot.view != 'front' and shot.view != 'rear':
    img = img[:, ::-1]
  x = img
  out = 0.25 * (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2])
  gain = cam.gain * rng.uniform(0.9, 1.1)
  out = out * (gain * cam.cast * rng.normal(1.0, 0.03, 3).astype(np.float32))
  if cam.haze:
    out = (1.0 - cam.haze) * out + cam.haze * 150.0
  out = gaussian_blur(np.clip(out, 0.0, 255.0), cam.blur)
  out += rng.standard_normal(out.shape, dtype=np.float32) * cam.noise
  return np.clip(out, 0.0, 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writing.


def _write_dataset(directory: pathlib.Path, spec: SynthVehicleSpec) -> dict[str, int]:
  for name in SPLIT_DIRS.values():
    (directory / name).mkdir(parents=True, exist_ok=True)
  shots = plan_shots(spec)
  names = {split: [] for split in SPLIT_DIRS}
  for shot in shots:
    Image.fromarray(render_shot(spec, shot)).save(
        directory / SPLIT_DIRS[shot.split] / shot.filename, quality=spec.jpeg_quality)
    names[shot.split].append(shot.filename)
  for split, listed in names.items():
    (directory / NAME_FILES[split]).write_text(''.join(f'{n}\n' for n in sorted(listed)))
  counts = {}
  for split in SPLIT_DIRS:
    counts[f'{split}_ids'] = len({s.vid for s in shots if s.split == split})
    counts[f'{split}_images'] = len(names[split])
  counts['cameras'] = len({s.cam for s in shots})
  return counts


def generate_synthvehicle(root: str | os.PathLike,
                          spec: SynthVehicleSpec = SynthVehicleSpec(), *,
                          overwrite: bool = False) -> pathlib.Path:
  """Writes the dataset of ``spec`` to ``root`` atomically (see
  ``publish_atomically``) and returns ``root``.

  Raises:
    FileExistsError: ``root`` already holds files and ``overwrite`` is False.
  """

  def write(directory: pathlib.Path) -> dict:
    return {'name': 'SynthVehicle', 'version': SYNTHVEHICLE_VERSION,
            'spec': dataclasses.asdict(spec), 'spec_hash': spec_hash(spec), 'layout': 'veri776',
            'fps': FPS, 'counts': _write_dataset(directory, spec)}
  return publish_atomically(root, dataclasses.asdict(spec), MARKER, write, overwrite=overwrite)


def ensure_synthvehicle(cache_dir: str | os.PathLike | None = None,
                        spec: SynthVehicleSpec = SynthVehicleSpec()) -> pathlib.Path:
  """The dataset of ``spec`` under ``cache_dir`` (default ``default_cache_dir()``),
  ``synthvehicle_v1_<spec_hash>``, generated on first use."""
  cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  root = cache_dir / f'synthvehicle_v{SYNTHVEHICLE_VERSION}_{spec_hash(spec)}'
  return ensure_cached(root, MARKER, lambda r: generate_synthvehicle(r, spec))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Writes the SynthVehicle synthetic vehicle re-ID dataset (VeRi-776 layout).')
  parser.add_argument('--out', required=True, help='dataset root to write')
  parser.add_argument('--spec', nargs='*', default=[], metavar='KEY=VALUE',
                      help='SynthVehicleSpec fields to change, e.g. seed=1 num_train_ids=50')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  args = parser.parse_args(argv)
  defaults = dataclasses.asdict(SynthVehicleSpec())
  values = {}
  for item in args.spec:
    key, _, value = item.partition('=')
    try:
      values[key] = type(defaults[key])(value)
    except (KeyError, ValueError):
      sys.exit(f'--spec {item!r}: expected KEY=VALUE with a value of the right type and KEY one '
               f'of {", ".join(defaults)}.')
  try:
    spec = SynthVehicleSpec(**values)
    root = generate_synthvehicle(args.out, spec, overwrite=args.overwrite)
  except (ValueError, FileExistsError) as e:
    sys.exit(str(e))
  info = json.loads((root / MARKER).read_text())
  for key, value in info['counts'].items():
    print(f'{key:>15}: {value}')
  print(f'wrote {root} in {info["generation_seconds"]:.1f} s')


if __name__ == '__main__':
  main()
