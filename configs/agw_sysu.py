r"""AGW cross-modality baseline (Ye et al., "Deep Learning for Person Re-identification: A Survey
and Outlook"): two-stream ResNet-50 with non-local blocks, GeM, BNNeck; cross-entropy + weighted
regularisation triplet.

Default: SynthReID-IR (SynthReID's identities seen by visible and thermal-like cameras in the
SYSU-MM01 layout; infrared queries, visible gallery, the SYSU protocol) on a 2-core CPU:
ResNet-18 width 16, 96x48 input, per-image input standardisation, Adam 1e-3, 16 epochs of 8 ids x
(4 visible + 4 infrared):

  python -m jreid.main --config=configs/agw_sysu.py --workdir=/tmp/agw_sysu

The recorded run is benchmarks/results/agw_sysu_synthreid_ir_cpu.json. SynthReID-IR is hard across
modalities by design: no hue reaches the infrared images, skin is the brightest surface, a garment's
grey level follows its visible lightness only roughly; body shape, garment kinds and patterns, hair
and gear carry over. benchmarks/results/cross_modality_ceiling_cpu.json puts this default beside the
same network trained and tested on visible images only, a single-stream network and no-learning
baselines (benchmarks/cross_modality_ceiling.py).

The paper recipe on SYSU-MM01 (288x144, SGD Nesterov lr 0.1 / 0.01 backbone, warmup over 10 epochs
stepped per epoch, x0.1 at 20 and 50, 81 epochs; see jreid.methods.cross_modality.recipe_config),
from the ImageNet weights of torchvision's ResNet-50 (resnet50-0676ba61.pth; the stem is copied
into both modality streams; the non-local / graph modules, GeM and the head start as initialised):

  python -m jreid.main --config=configs/agw_sysu.py:paper --workdir=runs/agw_sysu \
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
  return recipe_config('agw', 'sysu', arg)
