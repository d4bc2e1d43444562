"""PyTorch reference modules shared by the weight-conversion tests (torchvision/FastReID names).

Import after `pytest.importorskip('torch')`.
"""

import torch
from torch import nn as tnn


class TIBN(tnn.Module):
  """IBN-a: InstanceNorm(affine) on the first half of the channels, BatchNorm on the rest."""

  def __init__(self, planes):
    super().__init__()
    self.half = planes // 2
    self.IN = tnn.InstanceNorm2d(self.half, affine=True)
    self.BN = tnn.BatchNorm2d(planes - self.half)

  def forward(self, x):
    a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
    return torch.cat([self.IN(a), self.BN(b)], 1)


class TBottleneck(tnn.Module):
  """torchvision/FastReID Bottleneck (stride on the 3x3 convolution)."""

  def __init__(self, inplanes, planes, stride, ibn):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = TIBN(planes) if ibn else tnn.BatchNorm2d(planes)
    self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = tnn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                       tnn.BatchNorm2d(planes * 4))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def randomize_running_stats(module: tnn.Module, gen: torch.Generator) -> None:
  """BatchNorm running statistics away from (0, 1): means N(0, 0.1^2), variances in [0.5, 1.5)."""
  for name, b in module.named_buffers():
    if name.endswith('running_mean'):
      b.copy_(0.1 * torch.randn(b.shape, generator=gen))
    elif name.endswith('running_var'):
      b.copy_(0.5 + torch.rand(b.shape, generator=gen))
