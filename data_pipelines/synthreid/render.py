"""Drawing a SynthReID image: people, cameras, occluders (`render_shot`).

Identities. Each identity has a body (head size, leg length, build), clothing (upper garment
solid / horizontal stripes / vertical stripes / checks / dots with a second colour, short or
long sleeves; trousers, shorts or a skirt; shoes), hair (colour, short or long), skin tone and
accessories that are visible only from some viewpoints: a backpack (its body from the back and
the sides, its straps from the front), a cross-body shoulder bag carried on one side, a chest
logo (front only) and a hat. Clothing colours come from ``num_colour_groups`` shared outfits
(upper, second and lower colour, shoes), so groups of identities wear the same colours and
differ only by pattern, body shape, hair and accessories: colour statistics alone cannot tell
them apart (the colour-histogram baseline beside a trained network on the default spec is in
benchmarks/results/bagtricks_synthreid_cpu.json).

Cameras. Camera c has its own background (horizon, wall and floor textures, clutter objects;
the scene is cut into zones whose wall and floor colours come from one shared palette),
illumination gain, per-channel colour cast (c1 neutral, c2 strongly warm, c3 dim and noisy,
c4 strongly cool, c5 hazy and washed out, c6 bright green fluorescent; cameras 7..9 reuse these
looks, perturbed), lens blur and sensor noise. Every detection has a jittered crop box (shift
and scale; about one in eight cuts off part of the head or the feet), a viewpoint (front, back,
left, right: what is visible changes, side views are mirror images of each other) and a walking
pose (leg and arm phase). People are drawn at twice the output resolution and box-filtered.

Domain B (``spec.domain='b'``) has other clothing palettes, outdoor-like scenes and other camera
styles (over-exposure, magenta cast, night, high contrast, fog, low resolution: gain, cast,
gamma, saturation, blur, noise). Occluded / partial queries (``spec.query_occlusion``) are
hidden 20-50% by an object or are upper-body crops stretched to the full size
(`query_occluder`).

How a modality looks (its people and cameras) is registered by name (`register_modality`):
'visible' here, 'infrared' by `data_pipelines.synthreid.infrared`. `Canvas`, `darker`,
`gaussian_blur` and `CAMERA_LOOKS` are shared with `data_pipelines.synthvehicle`.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import math

import numpy as np

from data_pipelines.synthreid.plan import BACK, FRONT, LEFT, RIGHT, SCENE_PERIOD, Shot
from data_pipelines.synthreid.spec import (
    STREAM_CAMERA, STREAM_GROUP, STREAM_OCCLUDE, SynthReIDSpec, keyed_rng)

SOLID, HSTRIPES, VSTRIPES, CHECKS, DOTS = range(5)
TROUSERS, SHORTS, SKIRT = range(3)

# Clothing palette (RGB) and how often each colour is worn on the upper body / legs.
CLOTH = np.array([
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
    [CLOTH, np.array([(230, 120, 30), (40, 170, 170), (190, 210, 60)], np.float32)])

# Camera looks: gain, per-channel (R, G, B) cast, haze (blend towards grey), blur radius (output
# pixels), noise standard deviation. Cameras beyond the sixth reuse a look, perturbed.
CAMERA_LOOKS = (
    (1.00, (1.00, 1.00, 1.00), 0.00, 0.5, 3.0),  # c1 neutral and sharp
    (1.05, (1.24, 1.00, 0.70), 0.00, 0.7, 4.0),  # c2 warm (sodium light)
    (0.45, (0.95, 1.00, 1.08), 0.00, 0.9, 6.0),  # c3 dim
    (0.95, (0.74, 0.96, 1.30), 0.00, 0.6, 4.0),  # c4 cool (blue tint)
    (0.90, (1.02, 1.00, 0.96), 0.45, 1.1, 3.0),  # c5 hazy, washed out, soft
    (1.15, (0.88, 1.12, 0.84), 0.00, 0.4, 5.0),  # c6 bright green fluorescent
)

# Domain B: other clothing colours and frequencies, outdoor-like scenes and other camera styles.
CLOTH_B = np.array([
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
    [CLOTH_B, np.array([(250, 210, 0), (200, 0, 120), (0, 90, 220)], np.float32)])
# gain, cast, haze, blur, noise as `CAMERA_LOOKS`, then gamma and saturation.
_CAMERA_LOOKS_B = (
    (1.35, (1.00, 1.00, 1.00), 0.00, 0.6, 3.0, 0.75, 0.55),  # b1 over-exposed, washed colours
    (1.00, (1.22, 0.80, 1.18), 0.00, 0.5, 4.0, 1.00, 1.15),  # b2 magenta cast
    (0.50, (0.80, 0.92, 1.25), 0.00, 1.3, 9.0, 1.10, 0.35),  # b3 night: dark, blue, noisy
    (1.05, (1.10, 1.16, 0.70), 0.00, 0.4, 3.0, 1.45, 1.30),  # b4 yellow-green, high contrast
    (0.95, (0.90, 1.00, 1.15), 0.50, 1.5, 3.0, 1.00, 0.80),  # b5 blue fog, very soft
    (1.00, (1.30, 0.95, 0.85), 0.00, 1.8, 7.0, 1.00, 1.00),  # b6 red, low resolution, noisy
)
_PALETTES = {
    'a': dict(cloth=CLOTH, upper_p=_UPPER_P, lower_p=_LOWER_P, walls=_WALLS, floors=_FLOORS,
              clutter=_CLUTTER),
    'b': dict(cloth=CLOTH_B, upper_p=_UPPER_P_B, lower_p=_LOWER_P_B, walls=_WALLS_B,
              floors=_FLOORS_B, clutter=_CLUTTER_B),
}

# Background texture: a wrapping strip of scene (SCENE_PERIOD wide), in person-height units.
_BG_RES = 120
_BG_TOP, _BG_BOTTOM = -1.8, 2.8
# The nominal detection box: head top at v = 0, soles at v = 1, a few per cent margin.
_BOX_HEIGHT = 1.08


@dataclasses.dataclass(frozen=True)
class Person:
  """How one identity looks: body proportions, colours, garment kinds and accessories."""

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
  rng = keyed_rng(seed, STREAM_GROUP, group)
  upper = int(rng.choice(len(cloth), p=upper_p / upper_p.sum()))
  luma = cloth @ np.array([0.3, 0.59, 0.11], np.float32)
  contrast = np.flatnonzero(np.abs(luma - luma[upper]) > 60)
  upper2 = int(rng.choice(contrast))
  lower = int(rng.choice(len(cloth), p=lower_p / lower_p.sum()))
  shoes = int(rng.integers(len(_SHOES)))
  return cloth[upper], cloth[upper2], cloth[lower], _SHOES[shoes]


@functools.lru_cache(maxsize=512)
def person_look(spec: SynthReIDSpec, key: tuple[int, int, int, int]) -> Person:
  """The visible look of the person with seed key `key` (`Shot.person_key`)."""
  rng = np.random.default_rng(list(key))
  upper, upper2, lower, shoes = _colour_group(
      spec.seed, int(rng.integers(spec.num_colour_groups)), spec.domain)
  cloth = _PALETTES[spec.domain]['cloth']
  tall = rng.uniform()

  def gear(probability: float) -> np.ndarray | None:
    return _GEAR[rng.integers(len(_GEAR))] if rng.uniform() < probability else None

  return Person(
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


def _pattern(p: Person) -> Colour:
  """The upper garment's colour as a function of body coordinates (U right, V down)."""
  c1, c2, per = p.upper, p.upper2, p.period
  if p.pattern == SOLID:
    return c1

  def fill(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if p.pattern == HSTRIPES:
      on = (v / per) % 1.0 < 0.5
    elif p.pattern == VSTRIPES:
      on = (u / per + 0.25) % 1.0 < 0.5
    elif p.pattern == CHECKS:
      on = ((u / (1.3 * per) + 0.25) % 1.0 < 0.5) ^ ((v / (1.3 * per)) % 1.0 < 0.5)
    else:
      du, dv = (u / per + 0.25) % 1.0 - 0.5, (v / per) % 1.0 - 0.5
      on = du * du + dv * dv < 0.09
    return np.where(on[..., None], c2, c1)
  return fill


def darker(colour: Colour, factor: float = 0.78) -> Colour:
  """`colour` (an RGB array or a pattern function) scaled by `factor`."""
  if callable(colour):
    return lambda u, v: colour(u, v) * factor
  return colour * factor


class Canvas:
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


def _draw_arm(c: Canvas, p: Person, shoulder, elbow, hand, arm_r: float, top) -> None:
  """One arm: a long sleeve, or skin with a short sleeve to the elbow; then the hand."""
  if p.long_sleeves:
    c.capsule(shoulder, hand, arm_r, top)
  else:
    c.capsule(shoulder, hand, 0.85 * arm_r, p.skin)
    c.capsule(shoulder, elbow, 1.05 * arm_r, top)
  c.ellipse(hand[0], hand[1] + 0.01, arm_r, 1.2 * arm_r, p.skin)


def _draw_head(c: Canvas, p: Person, view: int, shoulder: float):
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
    c.ellipse(-0.38 * ru, hc + 0.05 * rv, 0.14 * ru, 0.1 * rv, darker(p.skin, 0.35))
    c.ellipse(0.38 * ru, hc + 0.05 * rv, 0.14 * ru, 0.1 * rv, darker(p.skin, 0.35))
  elif side:
    c.ellipse(0.1 * ru, hc - 0.08 * rv, 1.05 * ru, 0.98 * rv, p.hair,
              clip=lambda u, v: (v < hc - 0.4 * rv) | (u > -0.05 * ru))
    c.ellipse(-1.0 * ru, hc + 0.1 * rv, 0.2 * ru, 0.18 * rv, p.skin)  # nose
  if p.hat is not None:
    c.ellipse(0.0, hc - 0.3 * rv, 1.1 * ru, 0.78 * rv, p.hat, clip=lambda u, v: v < hc - 0.3 * rv)
    if side:
      c.rect(-1.75 * ru, 0.2 * ru, hc - 0.42 * rv, hc - 0.28 * rv, darker(p.hat))
    else:
      c.rect(-1.35 * ru, 1.35 * ru, hc - 0.4 * rv, hc - 0.28 * rv, darker(p.hat))


def _draw_frontal(c: Canvas, p: Person, phase: float, front: bool):
  top = _pattern(p)
  sh = p.head + 0.025
  sw, hw = 0.145 * p.build, 0.115 * p.build
  leg_r, arm_r = 0.052 * p.build, 0.036 * p.build
  lift = 0.03 * math.sin(phase)
  for side in (-1.0, 1.0):
    hip = (side * 0.5 * hw, p.waist)
    ankle = (side * 0.55 * hw, 0.965 - max(side * lift, 0.0))
    knee = (hip[0] + 0.5 * (ankle[0] - hip[0]), hip[1] + 0.5 * (ankle[1] - hip[1]))
    if p.lower_kind == TROUSERS:
      c.capsule(hip, ankle, leg_r, p.lower)
    else:
      c.capsule(hip, ankle, 0.8 * leg_r, p.skin)
      if p.lower_kind == SHORTS:
        c.capsule(hip, knee, 1.1 * leg_r, p.lower)
    c.ellipse(ankle[0], ankle[1] + 0.012, 0.04, 0.022, p.shoes)
  if p.lower_kind == SKIRT:
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
    c.rect(-0.45 * sw, 0.45 * sw, sh + 0.14, sh + 0.22, darker(p.backpack, 0.7))
  if p.bag is not None:
    c.capsule((-bag_u * 0.6 * sw, sh + 0.005), (bag_u * (hw + 0.01), p.waist - 0.04), 0.011,
              darker(p.bag, 0.8))
    c.rect(bag_u * (hw + 0.01) - 0.05, bag_u * (hw + 0.01) + 0.05, p.waist - 0.05, p.waist + 0.06,
           p.bag)
  if p.long_hair and not front:
    c.trapezoid(p.head * 0.5, sh + 0.08, 0.0, 0.45 * p.head, 0.0, 0.55 * p.head, p.hair)
  _draw_head(c, p, FRONT if front else BACK, sh)


def _draw_side(c: Canvas, p: Person, phase: float, near_side: int):
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
    if p.lower_kind == TROUSERS:
      c.capsule(hip, ankle, leg_r, p.lower * shade)
    else:
      c.capsule(hip, ankle, 0.8 * leg_r, p.skin * shade)
      if p.lower_kind == SHORTS:
        c.capsule(hip, knee, 1.1 * leg_r, p.lower * shade)
    c.ellipse(ankle[0] - 0.025, ankle[1] + 0.012, 0.05, 0.022, p.shoes * shade)
    if depth == 0:
      shoulder = (0.0, sh + 0.03)
      hand = (arm_len * math.sin(theta), shoulder[1] + arm_len * math.cos(theta))
      c.capsule(shoulder, hand, arm_r, darker(top if p.long_sleeves else p.skin))
  has_bag = p.bag is not None
  if has_bag and p.bag_side != near_side:  # carried on the far side: peeks out at the back
    c.rect(tw - 0.04, tw + 0.03, p.waist - 0.05, p.waist + 0.06, darker(p.bag, 0.7))
  if p.lower_kind == SKIRT:
    c.trapezoid(p.waist - 0.03, p.waist + 0.2, 0.0, 1.05 * tw, 0.0, 1.9 * tw, p.lower)
  else:
    c.trapezoid(p.waist - 0.03, p.waist + 0.05, 0.0, 1.05 * tw, 0.0, 1.1 * tw, p.lower)
  c.trapezoid(sh, p.waist, -0.01, tw, 0.0, 0.95 * tw, top)
  if p.backpack is not None:
    c.rect(tw - 0.01, tw + 0.075, sh + 0.02, sh + 0.23, p.backpack)
    c.capsule((0.2 * tw, sh + 0.01), (0.1 * tw, sh + 0.16), 0.013, darker(p.backpack, 0.8))
  if has_bag:
    c.capsule((-0.5 * tw, sh + 0.01), (0.4 * tw, p.waist - 0.04), 0.011, darker(p.bag, 0.8))
  shoulder = (0.0, sh + 0.03)
  hand = (-arm_len * math.sin(theta), shoulder[1] + arm_len * math.cos(theta))
  elbow = (0.45 * hand[0], shoulder[1] + 0.45 * (hand[1] - shoulder[1]))
  _draw_arm(c, p, shoulder, elbow, hand, arm_r, top)
  if has_bag and p.bag_side == near_side:
    c.rect(-0.04, 0.07, p.waist - 0.05, p.waist + 0.06, p.bag)
  _draw_head(c, p, LEFT, sh)


def _draw_person(c: Canvas, p: Person, view: int, phase: float):
  c.shade(0.0, 1.0, 0.16 * p.build, 0.03, 0.6)  # shadow on the floor
  if view in (FRONT, BACK):
    _draw_frontal(c, p, phase, front=view == FRONT)
  else:
    c.sign = 1.0 if view == LEFT else -1.0
    _draw_side(c, p, phase, near_side=1 if view == LEFT else -1)
    c.sign = 1.0


@dataclasses.dataclass(frozen=True)
class Camera:
  """How one camera renders: illumination, colour cast, haze, optics, noise and its scene."""

  gain: float
  cast: np.ndarray
  haze: float
  blur: float
  noise: float
  background: np.ndarray  # [rows, cols, 3] float32 wrapping scene strip
  gamma: float = 1.0  # domain B only: output = 255 * (x / 255) ** gamma
  saturation: float = 1.0  # domain B only: 0 grey, 1 unchanged, > 1 more saturated
  mono: bool = False  # one sensor channel (thermal), written as three equal ones


@functools.lru_cache(maxsize=16)
def camera_look(spec: SynthReIDSpec, cam: int) -> Camera:
  """Visible camera `cam` (1-based) of `spec.domain`."""
  rng = keyed_rng(spec.seed, STREAM_CAMERA, cam)
  gamma, saturation = 1.0, 1.0
  if spec.domain == 'a':
    gain, cast, haze, blur, noise = CAMERA_LOOKS[(cam - 1) % len(CAMERA_LOOKS)]
  else:
    gain, cast, haze, blur, noise, gamma, saturation = _CAMERA_LOOKS_B[
        (cam - 1) % len(_CAMERA_LOOKS_B)]
  cast = np.array(cast, np.float32)
  if cam > len(CAMERA_LOOKS):
    gain *= rng.uniform(0.8, 1.2)
    cast = cast * rng.uniform(0.9, 1.1, 3).astype(np.float32)
  palette = _PALETTES[spec.domain]
  return Camera(gain=gain, cast=cast, haze=haze, blur=blur, noise=noise,
                 background=background_texture(rng, palette['walls'], palette['floors'],
                                                palette['clutter']),
                 gamma=gamma, saturation=saturation)


# Shot.modality -> (person look, camera look): how people and cameras appear in that modality.
_MODALITIES: dict[str, tuple[Callable[[SynthReIDSpec, tuple[int, int, int, int]], Person],
                             Callable[[SynthReIDSpec, int], Camera]]] = {}


def register_modality(name: str,
                      person: Callable[[SynthReIDSpec, tuple[int, int, int, int]], Person],
                      camera: Callable[[SynthReIDSpec, int], Camera]) -> None:
  """Registers how shots of `Shot.modality == name` look.

  Args:
    name: the modality.
    person: `person(spec, person_key) -> Person`.
    camera: `camera(spec, cam) -> Camera`.
  """
  if name in _MODALITIES:
    raise ValueError(f'modality {name!r} is registered twice.')
  _MODALITIES[name] = (person, camera)


register_modality('visible', person_look, camera_look)


def background_texture(rng: np.random.Generator, wall_colours: np.ndarray = _WALLS,
                        floor_colours: np.ndarray = _FLOORS,
                        clutter_colours: np.ndarray = _CLUTTER) -> np.ndarray:
  """A camera's scene strip (wraps horizontally): zones of wall and floor, clutter.

  Each camera has its own horizon, wall texture, floor texture and clutter layout; the strip is
  cut into a few zones (shop fronts, doors, paving patches) whose colours come from one shared
  palette, so the colour statistics of different cameras overlap.
  """
  rows, cols = int((_BG_BOTTOM - _BG_TOP) * _BG_RES), int(SCENE_PERIOD * _BG_RES)
  v = (_BG_TOP + (np.arange(rows) + 0.5) / _BG_RES)[:, None].astype(np.float32)
  x = ((np.arange(cols) + 0.5) / _BG_RES)[None, :].astype(np.float32)
  horizon = rng.uniform(0.15, 0.6)
  edges = np.sort(rng.uniform(0, SCENE_PERIOD, int(rng.integers(3, 6))))
  zone = np.searchsorted(edges, x[0]) % len(edges)
  zones = len(edges)
  walls = wall_colours[rng.integers(len(wall_colours), size=zones)] * rng.uniform(
      0.8, 1.1, (zones, 1))
  floors = floor_colours[rng.integers(len(floor_colours), size=zones)] * rng.uniform(
      0.85, 1.1, (zones, 1))
  period = SCENE_PERIOD / int(rng.integers(6, 16))  # wall panels / bricks / windows, wrap exactly
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
  tile = SCENE_PERIOD / int(rng.integers(10, 30))
  if rng.uniform() < 0.5:
    floor_shade = 1.0 + 0.08 * ((np.floor(x / tile) + np.floor(v / (0.5 * tile))) % 2) + 0 * v
  else:
    floor_shade = 1.05 - 0.15 * np.clip(v - horizon, 0.0, 2.0) + 0 * x
  img = np.where((v < horizon)[..., None], walls[zone] * wall_shade[..., None],
                 floors[zone] * floor_shade[..., None])
  for _ in range(int(rng.integers(2, 6))):
    colour = clutter_colours[rng.integers(len(clutter_colours))] * rng.uniform(0.7, 1.0)
    x0, what = rng.uniform(0, SCENE_PERIOD), int(rng.integers(3))
    if what == 0:  # box or bench standing on the floor
      w, bottom = rng.uniform(0.2, 0.6), rng.uniform(horizon + 0.05, 1.4)
      top = bottom - rng.uniform(0.15, 0.5)
    elif what == 1:  # pole
      w, bottom, top = rng.uniform(0.03, 0.08), rng.uniform(horizon + 0.05, 1.2), _BG_TOP
    else:  # sign or poster on the wall
      w, top = rng.uniform(0.2, 0.5), rng.uniform(horizon - 1.0, horizon - 0.4)
      bottom = top + rng.uniform(0.15, 0.35)
    for shift in (0.0, -SCENE_PERIOD):
      inside = (x >= x0 + shift) & (x < x0 + shift + w) & (v >= top) & (v < bottom)
      img[inside] = colour
  ripple = sum(
      0.04 * np.sin(2 * np.pi * (k * x / SCENE_PERIOD + rng.uniform()) + v * rng.uniform(-2, 2))
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
  rng = np.random.default_rng([spec.seed, STREAM_OCCLUDE, shot.image_key[2], shot.image_key[3]])
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


def _draw_occluder(c: Canvas, occluder: Occluder) -> None:
  """A flat object with a darker rim and faint horizontal slats, so it reads as a thing."""
  u0, u1, v0, v1 = occluder.box
  colour = occluder.colour

  def slats(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shade = np.where((v / 0.06) % 1.0 < 0.2, 0.85, 1.0) + 0 * u
    return colour * shade[..., None].astype(np.float32)
  c.rect(u0, u1, v0, v1, darker(colour, 0.6))
  rim = 0.015
  c.rect(u0 + rim, u1 - rim, v0 + rim, v1 - rim, slats)


def render_shot(spec: SynthReIDSpec, shot: Shot) -> np.ndarray:
  """Draws one image: uint8 [height, width, 3] (three equal channels from a mono camera).

  People and the camera look as registered for `shot.modality` (`register_modality`).
  """
  rng = np.random.default_rng(list(shot.image_key))
  if shot.modality not in _MODALITIES:
    raise ValueError(f'Shot.modality {shot.modality!r} has no registered look; known: '
                     f'{sorted(_MODALITIES)}.')
  look_person, look_camera = _MODALITIES[shot.modality]
  cam = look_camera(spec, shot.cam)
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
  canvas = Canvas(texels, u, v)
  if shot.person_key is not None:
    _draw_person(canvas, look_person(spec, shot.person_key), shot.view, shot.phase)
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
  img = gaussian_blur(np.clip(img, 0.0, 255.0), blur)
  if cam.mono:  # written as three equal channels, as SYSU-MM01 stores infrared images
    img = img.mean(axis=2, keepdims=True)
  img += rng.standard_normal(img.shape, dtype=np.float32) * cam.noise
  img = np.clip(img, 0.0, 255.0).astype(np.uint8)
  return np.repeat(img, 3, axis=2) if cam.mono else img


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of an [H, W, C] float32 image, edges replicated."""
  radius = max(1, math.ceil(3.0 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = (taps / taps.sum()).astype(np.float32)
  h, w, _ = img.shape
  padded = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode='edge')
  img = sum(t * padded[k:k + h] for k, t in enumerate(taps))
  padded = np.pad(img, ((0, 0), (radius, radius), (0, 0)), mode='edge')
  return sum(t * padded[:, k:k + w] for k, t in enumerate(taps))

