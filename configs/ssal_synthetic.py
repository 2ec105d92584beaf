"""SSAL on the built-in synthetic dataset (pixels, with rotations), on CPU.

Usage:
  python -m crossmodal_hash.main --config=configs/ssal_synthetic.py \
      --workdir=DIR
  python -m crossmodal_hash.main --config=configs/ssal_synthetic.py:bits=64 ...

The 32 x 32 images go through the small CNN-F ('cnnf_small'), so the
adversary has its rotation classifier beside the modality classifier; the
bag-of-words texts through a 1,024-wide ReLU layer. Embeddings of D =
`bits` = 32 dims, ranked by cosine. 500 validation queries carved out of the
2,000 training items select the checkpoint (every 500 steps).
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import builtin


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base('ssal', bits=32,
                                dataset=builtin.synthetic_dataset_config())
  config.dataset.num_val = 500
  model = default_configs.synthetic_model(text_hidden=1024, init_std=0.01)
  default_configs.ssal_run(config, model, num_steps=1000)
  return config_utils.apply_arg(config, arg)
