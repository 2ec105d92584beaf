"""DSMHN on Wikipedia (pre-extracted features), chosen on a validation split.

  python -m crossmodal_hash.main --config=configs/dsmhn_wikipedia.py:bits=64 \
      --config.dataset.path=/data/wikipedia.mat --workdir=DIR
The data, the protocol and the validation split are those of
configs/ssah_wikipedia.py. DSMHN's streams on features: an MLP image stream
(128 -> 4096 -> K tanh) and a BoW MLP text stream (10 -> 4096 -> K tanh),
with the shared linear classifier on the codes.

Choices, each measured on the validation split (README, "Real data"):
  * dsmhn.pair_weighting='balanced' (HashNet's weights): with 10
    single-label classes, 90% of the pairs are dissimilar.
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import dsmhn


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'dsmhn'
  config.seed = 0
  config.bits = 16

  config.dataset = user_files.wikipedia_dataset_config()

  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'feature_mlp'
  config.model.image_mlp_features = (4096,)
  config.model.image_normalization = 'standardize'
  config.model.text_hidden = 4096
  config.model.init_std = 0.01
  config.model.compute_dtype = 'float32'

  config.dsmhn = dsmhn.default_config()
  config.dsmhn.pair_weighting = 'balanced'
  config.dsmhn.num_epochs = 50
  config.dsmhn.learning_rate = 1e-4

  # One joint pass an epoch: evaluate every 5 epochs.
  config_utils.add_run_defaults(config, checkpoint_every_passes=10)
  config.eval.every_passes = 5
  return config_utils.apply_arg(config, arg)
