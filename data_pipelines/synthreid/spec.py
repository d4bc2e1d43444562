"""The settings of a SynthReID dataset (`SynthReIDSpec`) and the random streams it draws from.

Determinism. The output is a pure function of the spec: every random draw comes from
``keyed_rng(seed, stream, a, b)`` = ``np.random.default_rng([seed, stream, a, b])``, keyed by
what it describes (an identity, one of its images, a camera, a distractor), so the same spec
gives byte-identical images, and adding identities does not change the others. (Only the
``_NN`` suffix of a file name depends on which other detections share a camera and frame;
``synthreid.json`` differs between runs in its ``generation_seconds`` field.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

SYNTHREID_VERSION = 1
FPS = 25
SESSION = 1

# Random streams: the second word of every seed key, so no two kinds of draw share a stream.
(STREAM_CAMERA, STREAM_GRAPH, STREAM_GROUP, STREAM_PERSON, STREAM_WALK, STREAM_QUERY, STREAM_IMAGE,
 STREAM_DISTRACTOR, STREAM_JUNK) = range(1, 10)
# The variants' streams (domain B identities, query occluders, the infrared variant) come after
# v1's, so v1's draws keep their keys.
STREAM_PERSON_B, STREAM_OCCLUDE, STREAM_IR_PLAN, STREAM_THERMAL = range(10, 14)
# The identities of each domain are drawn from their own stream.
PERSON_STREAMS = {'a': STREAM_PERSON, 'b': STREAM_PERSON_B}

DOMAINS = ('a', 'b')
QUERY_OCCLUSIONS = ('none', 'occluded', 'partial', 'mixed')
# The variants' spec fields at the values that reproduce v1 exactly: `spec_hash` leaves them out
# at these values, so v1 datasets keep their cache names (and bytes).
_V1_DEFAULTS = {'domain': 'a', 'query_occlusion': 'none'}


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


def keyed_rng(seed: int, stream: int, a: int, b: int = 0) -> np.random.Generator:
  """The generator of the draws keyed (seed, stream, a, b)."""
  # Fixed-length keys: SeedSequence treats trailing zero words as absent.
  return np.random.default_rng([seed, stream, a, b])
