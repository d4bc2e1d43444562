"""ClonedPerson (Wang et al., "Cloning Outfits from Real-World Images to 3D Characters for
Generalizable Person Re-Identification", CVPR 2022) read from a user's extracted folder.

The extracted `clonedperson.tar.gz` holds

  <root>/train/          training images         -> split 'train'
  <root>/test/query/     query images            -> split 'query'
  <root>/test/gallery/   gallery images          -> split 'gallery'

named `PPPPPP_sSS_cCC_fFFFFFF.jpg` (e.g. 700000_s02_c00_f023389.jpg): person, scene SS (00-12),
camera CC within the scene, frame. camid = CLONEDPERSON_CAMERA_OFFSET[scene] + camera (QAConv's
table); `clonedperson_qaconv_camids` gives the camids QAConv's code effectively uses. Session is
scene + 1. The reader shares its name grammar with RandPerson and lives in `randperson`.

  splits = load_clonedperson('~/data/clonedperson')
"""

from data_pipelines.randperson import (  # pylint: disable=unused-import
    CLONEDPERSON_CAMERA_OFFSET, CLONEDPERSON_LAYOUT, CLONEDPERSON_NAME_FORMAT, ClonedPerson,
    clonedperson_qaconv_camids, load_clonedperson, parse_clonedperson_name)
