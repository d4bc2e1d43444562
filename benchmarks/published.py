"""Published numbers that jreid's benchmark reports put beside its own.

Each entry names its source. Values are percentages as printed in the source; None where the
source gives none.
"""

# FastReID MODEL_ZOO.md ("Market1501/DukeMTMC/MSMT17 Baselines", BoT = configs/*/bagtricks_R50.yml
# and bagtricks_R50-ibn.yml; ImageNet-pretrained, 256x128, 1 GPU).
FASTREID_MODEL_ZOO = {
    ('bagtricks', 'r50', 'market1501'): {'rank1': 93.6, 'mAP': 85.1, 'mINP': 58.1},
    ('bagtricks', 'r50_ibn', 'market1501'): {'rank1': 94.8, 'mAP': 87.3, 'mINP': 63.5},
    ('bagtricks', 'r50', 'dukemtmc'): {'rank1': 86.1, 'mAP': 75.9, 'mINP': 38.7},
    ('bagtricks', 'r50_ibn', 'dukemtmc'): {'rank1': 89.0, 'mAP': 78.8, 'mINP': 43.6},
    ('bagtricks', 'r50', 'msmt17'): {'rank1': 70.4, 'mAP': 47.5, 'mINP': 9.6},
    ('bagtricks', 'r50_ibn', 'msmt17'): {'rank1': 76.9, 'mAP': 55.0, 'mINP': 13.5},
}


def lookup(method: str, backbone: str, dataset: str) -> dict[str, float | None] | None:
  """The published numbers of a (method, backbone, dataset) triple, or None."""
  return FASTREID_MODEL_ZOO.get((method, backbone, dataset))
