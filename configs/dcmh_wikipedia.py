"""DCMH on Wikipedia (pre-extracted features), chosen on a validation split.

  python -m crossmodal_hash.main --config=configs/dcmh_wikipedia.py:bits=64 \
      --config.dataset.path=/data/wikipedia.mat --workdir=DIR
The data, the protocol and the validation split are those of
configs/ssah_wikipedia.py (500 validation queries carved out of the 2,173
training items; the best checkpoint by validation mAP is ranked on the test
queries once, at the end). DCMH's nets on features: an MLP image stream
(128 -> 4096 -> K) and its BoW text stream (10 -> 8192 -> K).

Choices, each measured on the validation split (README, "Real data"):
  * dcmh.pair_weighting='balanced' (HashNet's weights, not DCMH's): with 10
    single-label classes, 90% of the pairs are dissimilar.
  * SGD from 10^-lr_start over fewer epochs than the official 500.
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import dcmh


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'dcmh'
  config.seed = 0
  config.bits = 16

  config.dataset = user_files.wikipedia_dataset_config()

  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'feature_mlp'
  config.model.image_mlp_features = (4096,)
  config.model.image_normalization = 'standardize'
  config.model.text_hidden = 8192
  config.model.init_std = 0.01
  config.model.compute_dtype = 'float32'

  config.dcmh = dcmh.default_config()
  config.dcmh.pair_weighting = 'balanced'
  config.dcmh.num_epochs = 100
  config.dcmh.lr_start = 10.0 ** -1.5

  # Two passes (image, text) an epoch: evaluate every 10 epochs.
  config_utils.add_run_defaults(config, checkpoint_every_passes=20)
  config.eval.every_passes = 20
  return config_utils.apply_arg(config, arg)
