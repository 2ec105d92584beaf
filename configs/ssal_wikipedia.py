"""SSAL on Wikipedia (pre-extracted features), chosen on a validation split.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/ssal_wikipedia.py:bits=64 \
      --config.dataset.path=/data/wikipedia.mat --workdir=DIR
The data, the protocol and the validation split are those of
configs/ssah_wikipedia.py (500 validation queries carved out of the 2,173
training items; the best checkpoint by validation mAP is ranked on the test
queries once, at the end).

The images are 128-d SIFT vectors, where a rotation is undefined: the
adversary is the modality classifier alone (logged, and stated in the
report's `ssal` entry).
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import user_files


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base('ssal', bits=32,
                                dataset=user_files.wikipedia_dataset_config())
  model = config_utils.feature_input_model(text_hidden=1024, init_std=0.05)
  model.image_mlp_features = (1024,)
  default_configs.ssal_run(config, model, num_steps=3000)
  config.ssal.label_weight = 3.0
  return config_utils.apply_arg(config, arg)
