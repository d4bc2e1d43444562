"""``python -m data_pipelines.synthreid --out DIR [--spec KEY=VALUE ...] [--infrared]``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from data_pipelines.synthreid.cache import MARKER, generate_synthreid
from data_pipelines.synthreid.infrared import IR_MARKER, generate_synthreid_ir
from data_pipelines.synthreid.spec import SynthReIDSpec


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
  """Writes a SynthReID dataset (or its infrared variant) as the command line asks."""
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
  info = json.loads((root / (IR_MARKER if args.infrared else MARKER)).read_text())
  for key, value in info['counts'].items():
    print(f'{key:>15}: {value}')
  print(f'wrote {root} in {info["generation_seconds"]:.1f} s')
