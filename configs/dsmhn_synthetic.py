"""DSMHN (image-text) on the built-in synthetic dataset, on CPU.

Usage:
  python -m crossmodal_hash.main --config=configs/dsmhn_synthetic.py --workdir=DIR
  python -m crossmodal_hash.main --config=configs/dsmhn_synthetic.py:dsmhn.pairwise=contrastive ...
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import builtin
from crossmodal_hash.methods import dsmhn


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base('dsmhn', bits=32,
                                dataset=builtin.synthetic_dataset_config())
  config.model = default_configs.synthetic_model(text_hidden=1024,
                                                 init_std=0.05)

  config.dsmhn = dsmhn.default_config()
  config.dsmhn.num_epochs = 20
  config.dsmhn.learning_rate = 3e-4

  config_utils.add_run_defaults(config, checkpoint_every_passes=5)
  return config_utils.apply_arg(config, arg)
