"""MHTN on the built-in synthetic dataset (image features), on CPU.

Usage:
  python -m crossmodal_hash.main --config=configs/mhtn_synthetic.py \
      --workdir=DIR

Target: 'synthetic_features' (512-d CNN-feature-like image vectors, 1,000-word
bags of words, 24 labels); source domain: 'synthetic_source_features', 4,000
single-label 512-d feature vectors of 40 classes of their own (seed 1), 64
per step beside each target batch of 64. The image trunk is the identity on
features; pixel variant (a fixed random CNN-F-small trunk, frozen):
  --config='configs/mhtn_synthetic.py:dataset.name=synthetic,\
model.image_encoder=cnnf_small,source_dataset.name=synthetic_source'

The released hyper-parameters (methods/mhtn.py), narrower layers
(default_configs.mhtn_small); the common space is the softmax over the 24
labels, ranked by cosine similarity. 500 validation queries carved out of the
2,000 training items select the checkpoint (every 500 steps).
VALIDATION_TABLE
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import builtin


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base(
      'mhtn', bits=24,
      dataset=builtin.synthetic_dataset_config('synthetic_features'))
  config.dataset.num_val = 500
  default_configs.mhtn_small(config, num_steps=1500, source_feature_dim=512)
  return config_utils.apply_arg(config, arg)
