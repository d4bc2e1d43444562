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

The package, by concern:

* `spec`: `SynthReIDSpec`, everything that determines a dataset, its hash, the random streams;
* `plan`: the walking model (camera graph, routes, tracklets) and the list of images (`Shot`);
* `render`: people, cameras, occluders and `render_shot`;
* `infrared`: the thermal look and the SYSU-MM01-layout variant;
* `cache`: writing a dataset atomically and caching it by spec hash;
* `cli`: ``python -m data_pipelines.synthreid``.

Variants (each its own cached copy, named by the spec hash; the default spec is v1, unchanged):

* Domain B (``domain='b'``, dataset 'synthreid_b'): the same identity and walking model with
  other clothing palettes, outdoor-like scenes, other identities (their own person stream) and
  other camera styles, so that a model trained on A meets a domain gap.
* Occluded / partial queries (``query_occlusion``, dataset 'synthreid_occluded' = 'mixed'):
  each query is hidden 20-50% by an object (from the floor, from a side, or held across the
  body) or is an upper-body crop stretched to the full size; train and gallery are unchanged.
* Infrared (``generate_synthreid_ir``, dataset 'synthreid_ir'): the same identities seen by
  visible cameras 1, 2, 4, 5 and thermal-like cameras 3, 6 (no hue; skin brightest, garment
  grey levels mostly from the visible lightness and partly from the material, garment
  patterns kept), written in the SYSU-MM01 layout.

Use ``ensure_synthreid(cache_dir)`` to get a cached copy (generated on first use), or
``python -m data_pipelines.synthreid --out DIR`` to write one (``--spec domain=b``,
``--spec query_occlusion=mixed``, ``--infrared`` for the SYSU-MM01-layout variant).
"""

from data_pipelines.synthreid.cache import (
    MARKER, SPLIT_DIRS, default_cache_dir, ensure_cached, ensure_synthreid, generate_synthreid,
    publish_atomically)
from data_pipelines.synthreid.cli import main
from data_pipelines.synthreid.infrared import (
    INFRARED_CAMERAS, IR_MARKER, SYNTHREID_IR_VERSION, VISIBLE_CAMERAS, ensure_synthreid_ir,
    generate_synthreid_ir, ir_filename, ir_ids, plan_ir_shots)
from data_pipelines.synthreid.plan import (
    BACK, FRONT, LEFT, RIGHT, Shot, camera_graph, min_transit_frames, plan_shots)
from data_pipelines.synthreid.render import Occluder, query_occluder, render_shot
from data_pipelines.synthreid.spec import (
    DOMAINS, FPS, QUERY_OCCLUSIONS, SESSION, SYNTHREID_VERSION, SynthReIDSpec, spec_hash)

__all__ = [
    'BACK', 'DOMAINS', 'FPS', 'FRONT', 'INFRARED_CAMERAS', 'IR_MARKER', 'LEFT', 'MARKER',
    'QUERY_OCCLUSIONS', 'RIGHT', 'SESSION', 'SPLIT_DIRS', 'SYNTHREID_IR_VERSION',
    'SYNTHREID_VERSION', 'Occluder', 'Shot', 'SynthReIDSpec', 'VISIBLE_CAMERAS', 'camera_graph',
    'default_cache_dir', 'ensure_cached', 'ensure_synthreid', 'ensure_synthreid_ir',
    'generate_synthreid', 'generate_synthreid_ir', 'ir_filename', 'ir_ids', 'main',
    'min_transit_frames', 'plan_ir_shots', 'plan_shots', 'publish_atomically', 'query_occluder',
    'render_shot', 'spec_hash',
]
