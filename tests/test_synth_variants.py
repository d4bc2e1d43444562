"""Tests of the SynthReID variants (domain B, occluded queries, infrared) and SynthVehicle."""

import collections
import dataclasses
import hashlib
import io
import json
import pathlib

import ml_collections
import numpy as np
from PIL import Image
import pytest

from data_pipelines import datasets
from data_pipelines import market1501
from data_pipelines import synthreid
from data_pipelines.synthreid import infrared as synthreid_ir
from data_pipelines.synthreid import render
from data_pipelines import synthvehicle
from data_pipelines import sysu_mm01
from data_pipelines import veri

TINY = synthreid.SynthReIDSpec(
    num_train_ids=4, num_test_ids=5, min_images_per_id=4, max_images_per_id=6,
    max_cameras_per_id=3, num_distractors=2, num_junk=2, num_colour_groups=4)
TINY_VEHICLE = synthvehicle.SynthVehicleSpec(
    num_train_ids=4, num_test_ids=4, min_images_per_id=4, max_images_per_id=6,
    max_cameras_per_id=3, num_cameras=6, height=48, width=48)


def jpegs(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*.jpg'))}


def decode(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB')).astype(np.int32)


# --- domain B -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def domain_b(tmp_path_factory) -> pathlib.Path:
  return synthreid.ensure_synthreid(tmp_path_factory.mktemp('b'),
                                    dataclasses.replace(TINY, domain='b'))


def test_domain_b_is_deterministic_and_differs_from_a(domain_b, tmp_path):
  spec_b = dataclasses.replace(TINY, domain='b')
  again = synthreid.generate_synthreid(tmp_path / 'again', spec_b)
  assert jpegs(again) == jpegs(domain_b)
  # Same layout and file names as A (the walking model is shared), other pixels everywhere.
  shots_a, shots_b = synthreid.plan_shots(TINY), synthreid.plan_shots(spec_b)
  assert [s.filename for s in shots_a] == [s.filename for s in shots_b]
  for shot_a, shot_b in zip(shots_a[:10], shots_b[:10]):
    assert not np.array_equal(synthreid.render_shot(TINY, shot_a),
                              synthreid.render_shot(spec_b, shot_b))


def test_domain_b_has_its_own_identities_palettes_and_cameras():
  spec_b = dataclasses.replace(TINY, domain='b')
  palette_a = {tuple(c) for c in render.CLOTH}
  palette_b = {tuple(c) for c in render.CLOTH_B}
  assert not palette_a & palette_b
  shots_a, shots_b = synthreid.plan_shots(TINY), synthreid.plan_shots(spec_b)
  for shot_a, shot_b in zip(shots_a, shots_b):
    if shot_b.person_key is None:
      continue
    person_b = render.person_look(spec_b, shot_b.person_key)
    assert tuple(person_b.upper) in palette_b and tuple(person_b.lower) in palette_b
    assert shot_a.person_key != shot_b.person_key  # other people, not recoloured ones
  for cam in range(1, 7):
    camera_a, camera_b = render.camera_look(TINY, cam), render.camera_look(spec_b, cam)
    assert (camera_a.gamma, camera_a.saturation) == (1.0, 1.0)
    assert not np.array_equal(camera_a.background, camera_b.background)
  looks = {(c.gain, tuple(c.cast), c.gamma, c.saturation)
           for c in (render.camera_look(spec_b, cam) for cam in range(1, 7))}
  assert len(looks) == 6


def test_domain_b_loads_with_the_market_reader(domain_b):
  splits = market1501.load_market1501(domain_b, data_dir=domain_b.parent / 'tfds')
  assert {s.pid for s in synthreid.plan_shots(dataclasses.replace(TINY, domain='b'))
          if s.split == 'train'} == set(splits['train'].pids.tolist())
  assert set(splits['query'].pids.tolist()) <= set(splits['gallery'].pids.tolist())


# --- occluded / partial queries -----------------------------------------------------------------


def test_occluded_queries_hide_20_to_50_percent_and_keep_the_rest():
  spec = dataclasses.replace(TINY, query_occlusion='occluded')
  shots = synthreid.plan_shots(spec)
  queries = [s for s in shots if s.split == 'query']
  assert queries
  for shot in queries:
    occluder = synthreid.query_occluder(spec, shot)
    assert occluder.kind in ('bottom', 'side', 'band') and 0.2 <= occluder.fraction <= 0.5
    # The hidden part of the nominal body box [-0.2, 0.2] x [0, 1] is `fraction`.
    u0, u1, v0, v1 = occluder.box
    hidden = (max(0.0, min(u1, 0.2) - max(u0, -0.2)) * max(0.0, min(v1, 1.0) - max(v0, 0.0)))
    assert hidden / 0.4 == pytest.approx(occluder.fraction, abs=1e-6)
    occluded = synthreid.render_shot(spec, shot).astype(np.int32)
    clean = synthreid.render_shot(TINY, shot).astype(np.int32)
    changed = np.abs(occluded - clean).max(axis=2) > 0
    assert 0.05 < changed.mean() < 0.95  # something is hidden, not everything
  for shot in shots:
    if shot.split != 'query':
      assert synthreid.query_occluder(spec, shot) is None
      assert np.array_equal(synthreid.render_shot(spec, shot), synthreid.render_shot(TINY, shot))


def test_partial_queries_are_stretched_upper_body_crops():
  spec = dataclasses.replace(TINY, query_occlusion='partial')
  for shot in (s for s in synthreid.plan_shots(spec) if s.split == 'query'):
    occluder = synthreid.query_occluder(spec, shot)
    assert occluder.kind == 'partial' and 0.5 <= occluder.cut <= 0.8
    partial = synthreid.render_shot(spec, shot)
    assert partial.shape == (TINY.height, TINY.width, 3)
    assert not np.array_equal(partial, synthreid.render_shot(TINY, shot))
  mixed = dataclasses.replace(TINY, num_test_ids=20, query_occlusion='mixed')
  kinds = {synthreid.query_occluder(mixed, s).kind == 'partial'
           for s in synthreid.plan_shots(mixed) if s.split == 'query'}
  assert kinds == {True, False}


# --- infrared -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def infrared(tmp_path_factory) -> pathlib.Path:
  return synthreid.ensure_synthreid_ir(tmp_path_factory.mktemp('ir'), TINY)


def test_infrared_layout_is_sysu_mm01_and_deterministic(infrared, tmp_path):
  # Version 2 renders garment patterns in the thermal look: caches of version 1 are not reused.
  assert infrared.name == f'synthreid_ir_v2_{synthreid.spec_hash(TINY)}'
  assert sorted(p.name for p in infrared.iterdir()) == [
      'cam1', 'cam2', 'cam3', 'cam4', 'cam5', 'cam6', 'exp', 'synthreid_ir.json']
  ids = {name: (infrared / 'exp' / f'{name}_id.txt').read_text().strip()
         for name in ('train', 'val', 'test')}
  assert ids == {'train': '1,3,5', 'val': '7', 'test': '2,4,6,8,10'}
  for path in infrared.rglob('*.jpg'):
    cam, pid, name = path.relative_to(infrared).parts
    assert cam[:3] == 'cam' and len(pid) == 4 and len(name) == 8 and name[:4].isdigit()
  again = synthreid.generate_synthreid_ir(tmp_path / 'again', TINY)
  assert jpegs(again) == jpegs(infrared)


def test_infrared_loads_with_the_sysu_reader(infrared):
  splits = sysu_mm01.load_sysu_mm01(infrared, data_dir=infrared.parent / 'tfds')
  assert set(splits['query'].camids.tolist()) <= {2, 5}
  assert set(splits['gallery'].camids.tolist()) <= {0, 1, 3, 4}
  assert set(splits['query'].pids.tolist()) == set(splits['gallery'].pids.tolist()) == {
      2, 4, 6, 8, 10}
  assert set(splits['train'].pids.tolist()) == {1, 3, 5, 7}
  assert set(splits['train'].camids.tolist()) & {2, 5} and set(
      splits['train'].camids.tolist()) & {0, 1, 3, 4}  # both modalities to train on


def test_infrared_images_are_grey_with_bright_skin_and_visible_ones_coloured(infrared):
  spreads = collections.defaultdict(list)
  for path in sorted(infrared.rglob('*.jpg')):
    img = decode(path.read_bytes())
    spreads[path.parts[-3]].append(int((img.max(axis=2) - img.min(axis=2)).max()))
  for cam in ('cam3', 'cam6'):
    assert max(spreads.get(cam, [0])) <= 3, cam  # grey up to JPEG rounding
  assert min(max(spreads[c]) for c in ('cam1', 'cam2', 'cam4', 'cam5') if c in spreads) > 30
  # Body heat: exposed skin is the hottest surface, the scene the coldest.
  for shot in (s for s in synthreid.plan_ir_shots(TINY) if s.modality == 'infrared'):
    p = synthreid_ir.thermal_person_look(TINY, shot.person_key)
    parts = [p.hair, p.upper, p.upper2, p.lower, p.shoes] + [
        x for x in (p.backpack, p.bag, p.hat) if x is not None]
    assert p.skin[0] > max(float(x[0]) for x in parts) and p.skin[0] >= 220
    # The garment's pattern stays (two materials, two grey levels); the printed logo does not.
    visible = render.person_look(TINY, shot.person_key)
    assert (p.pattern, p.period, p.long_sleeves, p.lower_kind) == (
        visible.pattern, visible.period, visible.long_sleeves, visible.lower_kind)
    assert 12 - 1e-3 <= abs(float(p.upper2[0]) - float(p.upper[0])) <= 64 and p.logo is None
    # A garment's level: 0.9 x its visible lightness (luma mapped onto 96..182) + 0.1 x a
    # material's level.
    materials = np.array([96.0, 112.0, 128.0, 146.0, 164.0, 182.0])
    for level, colour in ((p.upper[0], visible.upper), (p.lower[0] / 0.9, visible.lower)):
      lightness = 96.0 + 86.0 * float(np.dot(colour, [0.299, 0.587, 0.114])) / 255.0
      assert np.abs((level - 0.9 * lightness) / 0.1 - materials).min() < 1e-2
    img = synthreid.render_shot(TINY, shot)[..., 0].astype(np.float32)
    border = np.concatenate([img[:, :3].ravel(), img[:, -3:].ravel()])
    assert np.percentile(img, 99.5) > 180 and np.median(border) < 100


def test_infrared_images_show_the_garment_pattern(monkeypatch):
  """A striped / checked / dotted garment is textured in the thermal image too: drawing the
  same shot with one grey level for both materials changes only torso and arm pixels."""
  spec = dataclasses.replace(TINY, num_train_ids=12)
  shot = next(s for s in synthreid.plan_ir_shots(spec) if s.modality == 'infrared' and
              render.person_look(spec, s.person_key).pattern == render.HSTRIPES)
  patterned = synthreid.render_shot(spec, shot)[..., 0].astype(np.int32)
  look = synthreid_ir.thermal_person_look(spec, shot.person_key)
  plain = dataclasses.replace(look, upper2=look.upper)
  monkeypatch.setitem(render._MODALITIES, 'infrared', (  # pylint: disable=protected-access
      lambda s, k: plain, render._MODALITIES['infrared'][1]))  # pylint: disable=protected-access
  solid = synthreid.render_shot(spec, shot)[..., 0].astype(np.int32)
  changed = np.abs(patterned - solid) > 8
  rows = np.flatnonzero(changed.any(axis=1))
  assert rows.min() > 0.1 * spec.height and rows.max() < 0.75 * spec.height  # the upper body
  # Horizontal stripes: down the middle of the torso, changed and unchanged rows alternate.
  middle = changed[rows.min():rows.max() + 1, spec.width // 2]
  assert np.count_nonzero(middle[1:] != middle[:-1]) >= 4


# --- vehicles -----------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def vehicles(tmp_path_factory) -> pathlib.Path:
  return synthvehicle.ensure_synthvehicle(tmp_path_factory.mktemp('veh'), TINY_VEHICLE)


def test_vehicle_layout_names_and_lists(vehicles):
  assert sorted(p.name for p in vehicles.iterdir()) == [
      'image_query', 'image_test', 'image_train', 'name_query.txt', 'name_test.txt',
      'name_train.txt', 'synthvehicle.json']
  for folder, listing in (('image_train', 'name_train.txt'), ('image_query', 'name_query.txt'),
                          ('image_test', 'name_test.txt')):
    names = sorted(p.name for p in (vehicles / folder).iterdir())
    assert names == (vehicles / listing).read_text().split()
    for name in names:
      parsed = veri.parse_veri_name(name)
      assert 0 <= parsed.camid < TINY_VEHICLE.num_cameras
  image = Image.open(next((vehicles / 'image_query').iterdir()))
  assert image.format == 'JPEG' and image.size == (48, 48)


def test_vehicles_load_with_the_veri_reader(vehicles):
  splits = veri.load_veri(vehicles, data_dir=vehicles.parent / 'tfds')
  assert set(splits['train'].pids.tolist()) == {1, 2, 3, 4}
  assert set(splits['query'].pids.tolist()) == set(splits['gallery'].pids.tolist()) == {5, 6, 7, 8}
  query, gallery = splits['query'], splits['gallery']
  for pid, cam in zip(query.pids, query.camids):  # every query has a cross-camera match
    assert np.any((gallery.pids == pid) & (gallery.camids != cam))


def test_vehicles_are_deterministic_and_seeded(vehicles, tmp_path):
  again = synthvehicle.generate_synthvehicle(tmp_path / 'again', TINY_VEHICLE)
  assert jpegs(again) == jpegs(vehicles)
  other = dataclasses.replace(TINY_VEHICLE, seed=1)
  shot = synthvehicle.plan_shots(TINY_VEHICLE)[0]
  assert not np.array_equal(synthvehicle.render_shot(TINY_VEHICLE, shot),
                            synthvehicle.render_shot(other, shot))


def test_vehicle_attributes_and_views_vary(monkeypatch):
  spec = dataclasses.replace(TINY_VEHICLE, num_train_ids=150)
  cars = [synthvehicle.vehicle(spec, vid) for vid in range(1, 151)]
  assert {c.kind for c in cars} == set(synthvehicle.TYPES)
  assert {c.roof for c in cars} == {'plain', 'rack', 'sunroof'}
  assert {c.head_lights for c in cars} == {'round', 'rect', 'slim'}
  assert {c.windshield_sticker is None for c in cars} == {True, False}
  assert {s.view for s in synthvehicle.plan_shots(spec)} == set(synthvehicle.VIEWS)
  # A detail changes the pixels of the views that show it: the windshield sticker, the front.
  car = next(vid for vid, c in enumerate(cars, 1) if c.windshield_sticker is not None)
  shot = synthvehicle.VehicleShot(split='train', vid=car, cam=1, frame=1, view='front',
                                  mirror=False, image_key=(0, 99, car, 0))
  with_sticker = synthvehicle.render_shot(spec, shot)
  plain = dataclasses.replace(cars[car - 1], windshield_sticker=None)
  original = synthvehicle.vehicle
  monkeypatch.setattr(synthvehicle, 'vehicle',
                      lambda s, v: plain if v == car else original(s, v))
  without = synthvehicle.render_shot(spec, shot)
  monkeypatch.undo()
  assert not np.array_equal(with_sticker, without)
  assert np.array_equal(with_sticker, synthvehicle.render_shot(spec, shot))


def test_vehicle_spec_validation():
  with pytest.raises(ValueError, match='num_cameras'):
    synthvehicle.SynthVehicleSpec(num_cameras=21)


# --- registry -----------------------------------------------------------------------------------


def test_registered_synthetic_variants_load(tmp_path):
  cfg = ml_collections.ConfigDict({
      'name': '', 'root': '', 'cache_dir': str(tmp_path), 'combine_all': False,
      'synth': dataclasses.asdict(TINY),
      'synth_vehicle': dataclasses.asdict(TINY_VEHICLE)})
  counts = {}
  for name in ('synthreid_b', 'synthreid_occluded', 'synthreid_ir', 'synthvehicle'):
    cfg.name = name
    splits = datasets.load_dataset(cfg)
    counts[name] = {split: len(s) for split, s in splits.items()}
  assert set(counts) == {'synthreid_b', 'synthreid_occluded', 'synthreid_ir', 'synthvehicle'}
  assert counts['synthreid_b'] == counts['synthreid_occluded']  # same plan, other pixels
  assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith('_tfds')) == sorted([
      f'synthreid_v1_{synthreid.spec_hash(dataclasses.replace(TINY, domain="b"))}',
      f'synthreid_v1_{synthreid.spec_hash(dataclasses.replace(TINY, query_occlusion="mixed"))}',
      f'synthreid_ir_v2_{synthreid.spec_hash(TINY)}',
      f'synthvehicle_v1_{synthvehicle.spec_hash(TINY_VEHICLE)}'])


# --- unchanged output ---------------------------------------------------------------------------

# Digests of every variant's file tree, metadata files and image pixels, recorded from the
# reference generators: reorganising the code must leave them unchanged. Pixels (not JPEG bytes)
# are hashed so that another Pillow build does not fail the test.
GENERATED_SHA256 = {
    'a': 'a142158adf28f3e3cd5e485276f90a54bbb7f3a84f79caa088cf99c927aee3bb',
    'b_mixed': '3bc2d6afbf77ce7693d1e7d26c3d987a0ba15d93fc4d80fc10b2a03929c0fd8d',
    'infrared': 'd2b0ec8af72472c895dc84d8b5429bb76f41ec611a2b756c9b099008bc5a996e',
    'vehicle': 'be367140890adc571cf3514981d2a2fbf2326fb5763598ecfbc5056bb95d0ee7',
}


def generated_digest(root: pathlib.Path, images: list[np.ndarray]) -> str:
  """sha256 of the file tree under `root`, its non-JPEG files and the rendered `images`."""
  digest = hashlib.sha256()
  for path in sorted(p for p in root.rglob('*') if p.is_file()):
    digest.update(path.relative_to(root).as_posix().encode() + b'\n')
    if path.suffix == '.json':
      info = json.loads(path.read_text())
      info.pop('generation_seconds')
      digest.update(json.dumps(info, sort_keys=True).encode())
    elif path.suffix != '.jpg':
      digest.update(path.read_bytes())
  for image in images:
    digest.update(image.tobytes())
  return digest.hexdigest()


def test_generated_files_are_unchanged(tmp_path):
  spec_b = dataclasses.replace(TINY, domain='b', query_occlusion='mixed')
  runs = {
      'a': (synthreid.generate_synthreid, TINY, synthreid.plan_shots, synthreid.render_shot),
      'b_mixed': (synthreid.generate_synthreid, spec_b, synthreid.plan_shots,
                  synthreid.render_shot),
      'infrared': (synthreid.generate_synthreid_ir, TINY, synthreid.plan_ir_shots,
                   synthreid.render_shot),
      'vehicle': (synthvehicle.generate_synthvehicle, TINY_VEHICLE, synthvehicle.plan_shots,
                  synthvehicle.render_shot),
  }
  digests = {}
  for name, (generate, spec, plan, render) in runs.items():
    root = generate(tmp_path / name, spec)
    digests[name] = generated_digest(root, [render(spec, shot) for shot in plan(spec)])
  assert digests == GENERATED_SHA256
