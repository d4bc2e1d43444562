"""The walking model: which images a SynthReID dataset holds, before anything is drawn.

Cameras stand on a ring around a site; ``camera_graph`` lists the walkways between them (ring
neighbours and opposite cameras) with their lengths in metres. An identity enters the site at a
uniform random time in ``[0, duration_s)``, walks at its own speed in
``[min_speed_mps, max_speed_mps]`` along a route of 2..4 distinct cameras (a random walk on the
graph), spends a few seconds in view of each camera and needs at least
``ceil(length / speed * fps)`` frames to walk from one camera to the next. Several detections
per camera visit are taken from the visit's tracklet every few frames, so their poses and
positions follow each other. All cameras record one session (``s1``) with a common clock: an
image's time is ``frame / fps`` seconds after the start of the recording (fps = 25).

`plan_shots` lists every image as a `Shot` (split, identity, camera, frame, viewpoint, gait
phase, position along the camera's scene, seed keys) with its Market-1501 file name.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from data_pipelines.synthreid.spec import (
    FPS, PERSON_STREAMS, SESSION, STREAM_DISTRACTOR, STREAM_GRAPH, STREAM_IMAGE, STREAM_JUNK,
    STREAM_QUERY, STREAM_WALK, SynthReIDSpec, keyed_rng)

FRONT, BACK, LEFT, RIGHT = range(4)  # viewpoints: the camera sees the person's front, back, ...
# A camera's scene is a strip that wraps every SCENE_PERIOD body heights; people walk along it.
SCENE_PERIOD = 8.0


def camera_graph(spec: SynthReIDSpec) -> dict[tuple[int, int], float]:
  """Walkways between cameras: {(a, b): length in metres} with 1-based a < b.

  Cameras stand on a ring of radius ~45 m (positions jittered by the seed); walkways join ring
  neighbours and, with five or more cameras, opposite cameras. A walkway is 25% longer than the
  straight line between its cameras.
  """
  return dict(_camera_graph(spec))


@functools.lru_cache(maxsize=16)
def _camera_graph(spec: SynthReIDSpec) -> dict[tuple[int, int], float]:
  rng = keyed_rng(spec.seed, STREAM_GRAPH, 0)
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
  rng = keyed_rng(spec.seed, STREAM_WALK, pid)
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
  person_key = (spec.seed, PERSON_STREAMS[spec.domain], pid, 0)

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
    x0 = rng.uniform(0, SCENE_PERIOD)
    visits.append((cam, frames, view, direction, x0, frame))
    frame += dwell  # leaves the camera's view

  query = set()
  if test:
    qrng = keyed_rng(spec.seed, STREAM_QUERY, pid)
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
          image_key=(spec.seed, STREAM_IMAGE, pid, k), view=view,
          phase=float(phase0 + 2 * np.pi * cadence * f / FPS),
          scene_x=float(x0 + direction * speed / 1.7 * seconds)))
      k += 1
  return shots


def _extra_shots(spec: SynthReIDSpec, stream: int, count: int) -> list[Shot]:
  """Distractors (id 0) or junk detections (id -1), all in the gallery."""
  shots = []
  styles = ('background', 'partial') if stream == STREAM_DISTRACTOR else ('tiny', 'blurred', 'cut')
  for k in range(count):
    rng = keyed_rng(spec.seed, stream, k)
    style = styles[int(rng.integers(len(styles)))]
    shots.append(Shot(
        split='gallery', pid=0 if stream == STREAM_DISTRACTOR else -1,
        cam=int(rng.integers(1, spec.num_cameras + 1)),
        frame=int(rng.uniform(0, spec.duration_s) * FPS), style=style,
        person_key=None if style == 'background' else (
            spec.seed, PERSON_STREAMS[spec.domain], 10000 + stream, k),
        image_key=(spec.seed, stream, k, 1), view=int(rng.integers(4)),
        phase=float(rng.uniform(0, 2 * np.pi)), scene_x=float(rng.uniform(0, SCENE_PERIOD))))
  return shots


def plan_shots(spec: SynthReIDSpec) -> list[Shot]:
  """Every image of the dataset, with unique Market-style names (cheap: nothing is drawn)."""
  shots = []
  for i in range(spec.num_train_ids):
    shots += _identity_shots(spec, 2 * i + 1, test=False)
  for i in range(spec.num_test_ids):
    shots += _identity_shots(spec, 2 * i + 2, test=True)
  shots += _extra_shots(spec, STREAM_DISTRACTOR, spec.num_distractors)
  shots += _extra_shots(spec, STREAM_JUNK, spec.num_junk)
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
