"""Weight files (jreid.checkpoint.load_torch_state_dict): each bad file says what it is."""

from __future__ import annotations

import configparser
import gzip
import json
import pathlib
import re
import sys

import numpy as np
import pytest

from jreid import checkpoint
from jreid.checkpoint import WeightFileError

REPO = pathlib.Path(__file__).resolve().parent.parent
EXPECTED = ('expected PyTorch weights written by torch.save(model.state_dict(), path), a '
            '.safetensors file or an .npz of named arrays.')


def _safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
  """A .safetensors file written from the format's spec: u64 header size, JSON header, data."""
  header, data, offset = {}, b'', 0
  for name, array in tensors.items():
    raw = np.ascontiguousarray(array, '<f4').tobytes()
    header[name] = {'dtype': 'F32', 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(raw)]}
    data, offset = data + raw, offset + len(raw)
  text = json.dumps(header).encode()
  text += b' ' * (-len(text) % 8)
  return len(text).to_bytes(8, 'little') + text + data


def _write(path: pathlib.Path, content: bytes) -> pathlib.Path:
  path.write_bytes(content)
  return path


BAD_FILES = [
    # (content, what the message says the file is)
    (b'', 'an empty file'),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
     'unrecognised binary data (first bytes '),
    (b'conv.weight 0.1 0.2\nconv.bias 0.0\n', "a text file starting 'conv.weight 0.1 0.2'"),
    (b'<!DOCTYPE html>\n<html><body>Sign in to download</body></html>',
     'an HTML page (a failed download?)'),
    (b'version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 94371942\n',
     'a Git LFS pointer, not the file itself (run git lfs pull)'),
    (gzip.compress(b'weights', mtime=0), 'a gzip archive (extract it first)'),
    (b'\x89HDF\r\n\x1a\n' + b'\0' * 64, 'an HDF5 file (Keras/TensorFlow weights?)'),
    (b'PK\x03\x04' + b'\0' * 40, 'a damaged or truncated zip archive'),
]


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors', '.npz', '.bin'])
@pytest.mark.parametrize('content, what', BAD_FILES,
                         ids=[what.split(' (')[0].split(',')[0] for _, what in BAD_FILES])
def test_a_file_that_is_no_weights_says_what_it_is(tmp_path, suffix, content, what):
  path = _write(tmp_path / f'weights{suffix}', content)
  with pytest.raises(WeightFileError) as info:
    checkpoint.load_torch_state_dict(path)
  message = str(info.value)
  assert message.startswith(f'{path} is not a weight file: it is {what}'), message
  assert message.endswith(EXPECTED), message
  assert 'pip install' not in message and 'pickle' not in message  # Nothing to install.


def test_npy_and_other_zip_files(tmp_path):
  np.save(tmp_path / 'w.npy', np.ones(3))
  path = (tmp_path / 'w.npy').rename(tmp_path / 'w.npz')
  with pytest.raises(WeightFileError, match=re.escape(
      'it is a single .npy array without parameter names (save with np.savez instead)')):
    checkpoint.load_torch_state_dict(path)
  import zipfile  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(tmp_path / 'model.pth', 'w') as archive:
    archive.writestr('readme.txt', 'hello')
  with pytest.raises(WeightFileError, match=re.escape(
      'is not a weight file: it is a zip archive of other files (readme.txt)')):
    checkpoint.load_torch_state_dict(tmp_path / 'model.pth')


def test_files_are_read_by_their_content_whatever_their_name(tmp_path):
  torch = pytest.importorskip('torch')
  want = {'conv.weight': np.arange(6, dtype=np.float32).reshape(2, 3)}
  torch.save({k: torch.from_numpy(v) for k, v in want.items()}, tmp_path / 'zip.safetensors')
  torch.save({k: torch.from_numpy(v) for k, v in want.items()}, tmp_path / 'legacy.npz',
             _use_new_zipfile_serialization=False)
  with open(tmp_path / 'arrays.pth', 'wb') as f:
    np.savez(f, **want)
  _write(tmp_path / 'spec.bin', _safetensors_bytes(want))
  assert checkpoint.sniff_weight_file(tmp_path / 'zip.safetensors')[0] == 'torch'
  assert checkpoint.sniff_weight_file(tmp_path / 'legacy.npz')[0] == 'torch'
  assert checkpoint.sniff_weight_file(tmp_path / 'arrays.pth')[0] == 'npz'
  assert checkpoint.sniff_weight_file(tmp_path / 'spec.bin')[0] == 'safetensors'
  names = ['zip.safetensors', 'legacy.npz', 'arrays.pth']
  if _has('safetensors'):
    names.append('spec.bin')
  for name in names:
    got = checkpoint.load_torch_state_dict(tmp_path / name)
    assert set(got) == set(want), name
    np.testing.assert_array_equal(got['conv.weight'], want['conv.weight'])


def _has(module: str) -> bool:
  try:
    __import__(module)
    return True
  except ImportError:
    return False


def test_truncated_safetensors_file(tmp_path):
  pytest.importorskip('safetensors')
  full = _safetensors_bytes({'w': np.ones((4, 4), np.float32)})
  path = _write(tmp_path / 'w.safetensors', full[:-10])
  with pytest.raises(WeightFileError, match=re.escape(
      f'{path} has a .safetensors header but cannot be read (')) as info:
    checkpoint.load_torch_state_dict(path)
  assert 'download it again' in str(info.value)


def test_a_missing_package_names_the_extra(tmp_path, monkeypatch):
  torch = pytest.importorskip('torch')
  torch.save({'w': torch.zeros(2)}, tmp_path / 'w.pth')
  _write(tmp_path / 'w.safetensors', _safetensors_bytes({'w': np.zeros(2, np.float32)}))
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError.
  monkeypatch.setitem(sys.modules, 'safetensors', None)
  monkeypatch.setitem(sys.modules, 'safetensors.numpy', None)
  with pytest.raises(WeightFileError) as info:
    checkpoint.load_torch_state_dict(tmp_path / 'w.pth')
  assert str(info.value) == (
      f'{tmp_path / "w.pth"} is a PyTorch file (torch.save zip format), which needs torch to '
      'read: pip install "jreid[torch]" (or convert it to .safetensors or .npz where torch is '
      'installed).')
  with pytest.raises(WeightFileError) as info:
    checkpoint.load_torch_state_dict(tmp_path / 'w.safetensors')
  assert str(info.value) == (
      f'{tmp_path / "w.safetensors"} is a .safetensors file, which needs the safetensors '
      'package: pip install "jreid[torch]".')


def test_the_torch_extra_installs_both_packages_loading_imports():
  parser = configparser.ConfigParser()
  parser.read(REPO / 'setup.cfg')
  extra = [line.split('#')[0].strip() for line in
           parser['options.extras_require']['torch'].splitlines()]
  names = {re.split(r'[<>=\[ ;]', line)[0] for line in extra if line}
  assert names == {'torch', 'safetensors'}
  source = (REPO / 'jreid' / 'checkpoint.py').read_text()
  imported = set(re.findall(r'^\s*(?:import|from) (torch|safetensors)\b', source, re.M))
  assert imported == names
