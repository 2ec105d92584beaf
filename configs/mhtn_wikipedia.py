"""MHTN on Wikipedia (pre-extracted features), chosen on a validation split.

  python -m crossmodal_hash.main --config=configs/mhtn_wikipedia.py \
      --config.dataset.path=/data/wikipedia.mat --workdir=DIR
(nothing is downloaded). The data and protocol are those of the other
Wikipedia configs (configs/ssah_wikipedia.py): the full file's fixed 2,173 /
693 split, 500 validation queries carved out of the training items select
the checkpoint, the test queries are ranked once at the end; the training
half alone (../shared/data/wikipedia/wikipedia-train.npz) gives a report of
the validation split.

Source domain: the synthetic single-label feature set with 128-d features
(`synthetic_source_features`, 40 classes, 4,000 items), the only labelled
image-feature set that ships with the package: Wikipedia's images are 128-d
SIFT bags of visual words, and no ImageNet-style set of that kind is at
hand. Any labelled 128-d image-feature set can take its place
(`--config.source_dataset.name=...` of a registered dataset). The common
space is the softmax over the 10 classes (`bits` = 10), ranked by cosine
similarity.
VALIDATION_TABLE
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import user_files


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base('mhtn', bits=10,
                                dataset=user_files.wikipedia_dataset_config())
  default_configs.mhtn_small(config, num_steps=1500, source_feature_dim=128)
  return config_utils.apply_arg(config, arg)
