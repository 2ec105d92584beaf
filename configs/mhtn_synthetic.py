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
Validation cosine mAP@all (index-order ties) after 500 / 1,000 / 1,500
steps: I->T 0.815 / 0.844 / 0.868, T->I 0.830 / 0.853 / 0.861 (step 1,500
selected); the 500 test queries against the 4,500 retrieval items then score
cosine mAP@all I->T 0.753, T->I 0.761, I->I 0.778, T->T 0.739 (random codes
0.387; SCAHN's 32-bit codes 0.577 / 0.622 on the same split), in 26 minutes
on 2 heavily shared CPU cores. The sign codes of a softmax are +1
everywhere (sign-code mAP 0.382, the random level; the periodic code
statistics say so); `mhtn.embedding=centered_softmax` gives sign codes that
measured 0.656 / 0.652 on the validation split at step 1,000.
(Measured before the text input's BatchNorm scale took Caffe's weight
multipliers, lr_mult 1 and decay, instead of a bias's; not re-measured.)
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
