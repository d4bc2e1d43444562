"""Tests of the SynthReID generator: layout, protocol invariants, walking model, caching."""

import collections
import dataclasses
import hashlib
import json
import pathlib
import re
import subprocess
import sys

from PIL import Image
import pytest

from data_pipelines import synthreid
from data_pipelines.synthreid import cache
from data_pipelines.types import DatasetError

TINY = synthreid.SynthReIDSpec(
    num_train_ids=6, num_test_ids=8, min_images_per_id=4, max_images_per_id=7,
    max_cameras_per_id=3, num_distractors=5, num_junk=5, num_colour_groups=4)
NAME = re.compile(r'^(-1|\d{4})_c([1-9])s(\d)_(\d{6})_(\d{2})\.jpg$')


def parse(root: pathlib.Path, split: str) -> list[tuple[str, int, int, int, int]]:
  """(file name, pid, camera, session, frame) of every file of a split, names checked."""
  rows = []
  for path in sorted((root / synthreid.SPLIT_DIRS[split]).iterdir()):
    match = NAME.match(path.name)
    assert match, f'bad name {path.name}'
    pid, cam, session, frame, _ = map(int, match.groups())
    rows.append((path.name, pid, cam, session, frame))
  return rows


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> pathlib.Path:
  return synthreid.generate_synthreid(tmp_path_factory.mktemp('gen') / 'synth', TINY)


def test_layout_names_and_images(root):
  assert sorted(p.name for p in root.iterdir()) == [
      'bounding_box_test', 'bounding_box_train', 'query', 'synthreid.json']
  info = json.loads((root / 'synthreid.json').read_text())
  assert info['version'] == synthreid.SYNTHREID_VERSION == 1
  assert info['spec'] == dataclasses.asdict(TINY)
  for split in ('train', 'query', 'gallery'):
    rows = parse(root, split)
    assert info['counts'][f'{split}_images'] == len(rows)
    assert info['counts'][f'{split}_ids'] == len({pid for _, pid, *_ in rows if pid > 0})
    assert {session for *_, session, _ in rows} == {1}
  assert info['counts']['train_ids'] == 6 and info['counts']['query_ids'] == 8
  image = Image.open(next((root / 'query').iterdir()))
  assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (64, 128)


def test_train_and_test_identities_are_disjoint(root):
  train = {pid for _, pid, *_ in parse(root, 'train')}
  test = {pid for _, pid, *_ in parse(root, 'query') + parse(root, 'gallery') if pid > 0}
  assert train == {1, 3, 5, 7, 9, 11}
  assert test == {2, 4, 6, 8, 10, 12, 14, 16}


def test_every_query_has_a_cross_camera_match_and_is_not_in_gallery(root):
  query, gallery = parse(root, 'query'), parse(root, 'gallery')
  assert not {name for name, *_ in query} & {name for name, *_ in gallery}
  gallery_cams = collections.defaultdict(set)
  for _, pid, cam, _, _ in gallery:
    gallery_cams[pid].add(cam)
  per_id = collections.Counter()
  for _, pid, cam, _, _ in query:
    assert gallery_cams[pid] - {cam}, f'query of {pid} in camera {cam} has no valid match'
    per_id[(pid, cam)] += 1
  assert max(per_id.values()) == 1  # one query per identity and camera
  queried = collections.Counter(pid for pid, _ in per_id)
  assert 1 <= min(queried.values()) and max(queried.values()) <= TINY.max_query_cameras


def test_distractors_and_junk_only_in_gallery(root):
  gallery = collections.Counter(pid for _, pid, *_ in parse(root, 'gallery'))
  assert gallery[0] == TINY.num_distractors and gallery[-1] == TINY.num_junk
  for split in ('train', 'query'):
    assert all(pid > 0 for _, pid, *_ in parse(root, split))


def test_six_cameras_are_used(root):
  cams = {cam for split in ('train', 'query', 'gallery') for _, _, cam, _, _ in parse(root, split)}
  assert cams == {1, 2, 3, 4, 5, 6}


def test_timestamps_follow_the_walking_model(root):
  graph = synthreid.camera_graph(TINY)
  tracks = collections.defaultdict(list)
  for split in ('train', 'query', 'gallery'):
    for _, pid, cam, _, frame in parse(root, split):
      if pid > 0:
        tracks[pid].append((frame, cam))
  for pid, track in tracks.items():
    track.sort()
    route = [track[0][1]]
    for (frame0, cam0), (frame1, cam1) in zip(track, track[1:]):
      if cam1 == cam0:
        continue
      assert cam1 not in route, f'identity {pid} comes back to camera {cam1}'
      assert tuple(sorted((cam0, cam1))) in graph, f'no walkway {cam0}-{cam1}'
      assert frame1 - frame0 >= synthreid.min_transit_frames(TINY, cam0, cam1)
      route.append(cam1)
    assert TINY.min_cameras_per_id <= len(route) <= TINY.max_cameras_per_id


def test_camera_graph_is_connected():
  graph = synthreid.camera_graph(TINY)
  reached, frontier = {1}, [1]
  while frontier:
    cam = frontier.pop()
    for a, b in graph:
      for x, y in ((a, b), (b, a)):
        if x == cam and y not in reached:
          reached.add(y)
          frontier.append(y)
  assert reached == set(range(1, 7))
  assert all(a < b and length > 0 for (a, b), length in graph.items())


def read_all(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*.jpg'))}


def test_same_spec_is_byte_identical_and_seed_changes_it(root, tmp_path):
  again = synthreid.generate_synthreid(tmp_path / 'again', TINY)
  assert read_all(again) == read_all(root)
  info1, info2 = (json.loads((r / 'synthreid.json').read_text()) for r in (root, again))
  info1.pop('generation_seconds'), info2.pop('generation_seconds')
  assert info1 == info2
  other = synthreid.generate_synthreid(tmp_path / 'other', dataclasses.replace(TINY, seed=1))
  assert read_all(other) != read_all(root)


def test_adding_identities_keeps_the_others(tmp_path):
  small = synthreid.SynthReIDSpec(num_train_ids=2, num_test_ids=2, min_images_per_id=4,
                                  max_images_per_id=5, num_distractors=1, num_junk=1)
  big = dataclasses.replace(small, num_train_ids=3, num_test_ids=3)
  images = [{(s.pid, s.cam, s.frame): synthreid.render_shot(spec, s).tobytes()
             for s in synthreid.plan_shots(spec)} for spec in (small, big)]
  assert images[0].items() <= images[1].items()
  assert len(images[1]) > len(images[0])


def test_generate_refuses_to_overwrite_unless_asked(root, tmp_path):
  with pytest.raises(FileExistsError, match='overwrite=True'):
    synthreid.generate_synthreid(root, TINY)
  target = tmp_path / 'target'
  target.mkdir()
  (target / 'stale.txt').write_text('old')
  synthreid.generate_synthreid(target, TINY, overwrite=True)
  assert not (target / 'stale.txt').exists() and (target / 'synthreid.json').is_file()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['target']  # no temporary dirs left


def test_ensure_caches(tmp_path, monkeypatch):
  calls = []
  generate = cache.generate_synthreid
  monkeypatch.setattr(cache, 'generate_synthreid',
                      lambda *args, **kwargs: calls.append(args) or generate(*args, **kwargs))
  first = synthreid.ensure_synthreid(tmp_path, TINY)
  assert first.name == f'synthreid_v1_{synthreid.spec_hash(TINY)}' and first.parent == tmp_path
  mtime = (first / 'synthreid.json').stat().st_mtime_ns
  second = synthreid.ensure_synthreid(tmp_path, TINY)
  assert second == first and len(calls) == 1
  assert (first / 'synthreid.json').stat().st_mtime_ns == mtime


def test_ensure_race_keeps_the_winner_and_cleans_up(tmp_path, monkeypatch):
  write = cache.write_dataset

  def slow_write(directory, spec):
    # While this process draws, another one publishes the same dataset.
    monkeypatch.setattr(cache, 'write_dataset', write)
    winner = synthreid.ensure_synthreid(tmp_path, spec)
    (winner / 'winner').write_text('')
    return write(directory, spec)

  monkeypatch.setattr(cache, 'write_dataset', slow_write)
  root = synthreid.ensure_synthreid(tmp_path, TINY)
  assert (root / 'winner').exists()
  assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_ensure_rejects_a_foreign_directory(tmp_path):
  root = tmp_path / f'synthreid_v1_{synthreid.spec_hash(TINY)}'
  root.mkdir()
  (root / 'something').write_text('')
  with pytest.raises(DatasetError, match='delete the directory'):
    synthreid.ensure_synthreid(tmp_path, TINY)


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('JREID_CACHE', str(tmp_path))
  assert synthreid.default_cache_dir() == tmp_path
  monkeypatch.delenv('JREID_CACHE')
  assert synthreid.default_cache_dir() == pathlib.Path.home() / '.cache' / 'jreid'


def test_spec_validation():
  with pytest.raises(ValueError, match='num_cameras'):
    synthreid.SynthReIDSpec(num_cameras=12)
  with pytest.raises(ValueError, match='min_images_per_id'):
    synthreid.SynthReIDSpec(min_images_per_id=3)
  assert synthreid.spec_hash(TINY) != synthreid.spec_hash(synthreid.SynthReIDSpec())


def test_cli(tmp_path, capsys):
  out = tmp_path / 'cli'
  synthreid.main(['--out', str(out), '--spec', 'num_train_ids=2', 'num_test_ids=2',
                  'num_distractors=1', 'num_junk=1', 'min_images_per_id=4',
                  'max_images_per_id=4'])
  printed = capsys.readouterr().out
  assert 'train_ids: 2' in printed and f'wrote {out}' in printed
  assert len(list((out / 'bounding_box_train').iterdir())) == 8
  with pytest.raises(SystemExit, match='KEY=VALUE'):
    synthreid.main(['--out', str(tmp_path / 'x'), '--spec', 'num_trian_ids=2'])


def test_cli_runs_as_a_module(tmp_path):
  out = tmp_path / 'module'
  result = subprocess.run(
      [sys.executable, '-m', 'data_pipelines.synthreid', '--out', str(out), '--spec',
       'num_train_ids=1', 'num_test_ids=1', 'num_distractors=0', 'num_junk=0',
       'min_images_per_id=4', 'max_images_per_id=4'],
      cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
      check=False)
  assert result.returncode == 0, result.stderr
  assert 'train_ids: 1' in result.stdout and 'Warning' not in result.stderr
  assert len(list((out / 'bounding_box_train').iterdir())) == 4



def test_detections_in_the_same_frame_get_distinct_indices():
  crowded = dataclasses.replace(TINY, duration_s=0.2, num_distractors=30, num_junk=30)
  shots = synthreid.plan_shots(crowded)
  names = [shot.filename for shot in shots]
  assert len(set(names)) == len(names)
  assert max(shot.nn for shot in shots) > 1


# Recorded from the v1 generator before domains, occlusion and infrared were added: the default
# spec (domain A) must keep its cache name and its exact pixels.
V1_DEFAULT_HASH = 'fee6f30548'
V1_DEFAULT_SHOTS = (0, 1, 777, 2500, 4000, 6445, 6744)
V1_DEFAULT_PIXELS_SHA256 = '7d45fd6e3a4d56ffd68bc9b49323ffabe59f1a10ac37ef5462efd47ec53eb6ab'
V1_DEFAULT_NAMES_SHA256 = '0878fa55ded36adf9580779ba2b985adc73496678b5350851dcddd2b4388ce54'


def test_default_domain_a_is_unchanged_since_v1():
  spec = synthreid.SynthReIDSpec()
  assert synthreid.spec_hash(spec) == V1_DEFAULT_HASH
  shots = synthreid.plan_shots(spec)
  names = '\n'.join(shot.filename + shot.split for shot in shots)
  assert hashlib.sha256(names.encode()).hexdigest() == V1_DEFAULT_NAMES_SHA256
  pixels = hashlib.sha256()
  for i in V1_DEFAULT_SHOTS:
    pixels.update(synthreid.render_shot(spec, shots[i]).tobytes())
  assert pixels.hexdigest() == V1_DEFAULT_PIXELS_SHA256
  # New fields count in the hash only away from their v1 values.
  assert synthreid.spec_hash(dataclasses.replace(spec, domain='b')) != V1_DEFAULT_HASH
  assert synthreid.spec_hash(dataclasses.replace(spec, query_occlusion='mixed')) != V1_DEFAULT_HASH


def test_new_spec_fields_are_validated():
  with pytest.raises(ValueError, match="domain='c'"):
    synthreid.SynthReIDSpec(domain='c')
  with pytest.raises(ValueError, match='query_occlusion'):
    synthreid.SynthReIDSpec(query_occlusion='half')
