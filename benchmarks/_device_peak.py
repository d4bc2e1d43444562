"""Dense peak FLOP/s of the accelerators the GPU benchmarks run on, for utilisation figures."""

from __future__ import annotations

# (device kind substring, first match wins) -> peak FLOP/s per compute type, from NVIDIA's data
# sheets, without sparsity. 'float32' is the CUDA-core rate (matmuls at Precision.HIGHEST),
# 'tf32' the tensor-core rate of float32 inputs at the default precision.
PEAKS = (
    ('H100 PCIe', {'bfloat16': 756e12, 'tf32': 378e12, 'float32': 51e12}),
    ('H100 NVL', {'bfloat16': 835e12, 'tf32': 418e12, 'float32': 60e12}),
    ('H100', {'bfloat16': 989.4e12, 'tf32': 494.7e12, 'float32': 66.9e12}),
    ('H200', {'bfloat16': 989.4e12, 'tf32': 494.7e12, 'float32': 66.9e12}),
    ('A100', {'bfloat16': 312e12, 'tf32': 156e12, 'float32': 19.5e12}),
)


def peak_flops(device_kind: str, compute: str) -> float | None:
  """The dense peak of `device_kind` ('NVIDIA H100 80GB HBM3') for `compute` ('bfloat16',
  'tf32', 'float32'), or None for a device not in PEAKS (CPUs)."""
  for name, peaks in PEAKS:
    if name.lower() in device_kind.lower():
      return peaks[compute]
  return None
