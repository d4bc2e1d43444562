r"""Cross-modality graph reasoning ("Efficient Cross-modality Graph Reasoning for RGB-Infrared
Person Re-identification", IEEE SPL 2021) on the AGW two-stream network: stem + layer1 per
modality, local/global graph reasoning and modality similarity after layer3; cross-entropy +
2 x hard triplet (margin 0.3).

Default: SynthReID-IR (SynthReID's identities seen by visible and thermal-like cameras in the
SYSU-MM01 layout; infrared queries, visible gallery, the SYSU protocol) on a 2-core CPU:
ResNet-18 width 16, 96x48 input, per-image input standardisation, Adam 1e-3, 8 epochs of 8 ids x
(4 visible + 4 infrared):

  python -m jreid.main --config=configs/cmgr_sysu.py --workdir=/tmp/cmgr_sysu

The recorded run is benchmarks/results/cmgr_sysu_synthreid_ir_cpu.json.

The paper recipe on SYSU-MM01 (288x144, SGD Nesterov lr 0.1 / 0.01 backbone, warmup over 10 epochs
stepped per epoch, x0.1 at 20 and 50, 81 epochs; see jreid.methods.cross_modality.recipe_config),
from the ImageNet weights of torchvision's ResNet-50 (resnet50-0676ba61.pth; the stem is copied
into both modality streams; the non-local / graph modules, GeM and the head start as initialised):

  python -m jreid.main --config=configs/cmgr_sysu.py:paper --workdir=runs/cmgr_sysu \
      --config.dataset.root=/path/to/SYSU-MM01 \
      --config.model.pretrained=/path/to/resnet50-0676ba61.pth

Evaluation: infrared queries against visible galleries sampled per trial (10 trials), all-search
and indoor-search, single-shot (headline) and multi-shot (10 per identity and camera), with the
camera-3 / camera-2 rule and the reference's identity-ranking CMC
(jreid.evaluation.cross_modality).
The non-local inter-channel count defaults to C/2; --config.model.backbone.nl_inter_channels=1
reproduces the reference code's value.
"""

import ml_collections

from jreid.methods.cross_modality import recipe_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipe_config('cmgr', 'sysu', arg)
