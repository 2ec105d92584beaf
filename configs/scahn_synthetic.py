"""SCAHN on the built-in synthetic dataset, on CPU.

Usage:
  python -m crossmodal_hash.main --config=configs/scahn_synthetic.py \
      --workdir=DIR
  python -m crossmodal_hash.main --config=configs/scahn_synthetic.py:bits=64 ...

Inputs (data/synthetic_sequences.py): the 32 x 32 images as 16 patches of
8 x 8 pixels (standardised), the bag-of-words texts as sets of at most 32
word tokens with learned embeddings. Feature-input variant:
  --config='configs/scahn_synthetic.py:dataset.name=synthetic_features,\
model.image_input=features'

Sizes and rates differ from the public code's (width 1024, Adam 4e-5 after
1,000 warm-up steps, for fine-tuning pretrained BERT / bottom-up features):
the encoders here are small and trained from scratch, for 2,000 steps of 32
(43 passes over the 1,500 training items), at 4e-4 after 100 warm-up steps,
with no decay within the run. Everything else is the code's: PaCo over four
directions with queues of 1,024, temperature 0.05, the label graph at 0.4 /
0.25, the GCN at 0.2, the discriminators' Adam(1e-4, 0.5, 0.9) with weight
decay 1e-4, clipping at 2.0. 500 validation queries carved out of the 2,000
training items select the checkpoint (every 500 steps). Validation mAP@all
(mean of I->T and T->I) after 500 / 1,000 / 1,500 / 2,000 steps: 0.616 /
0.679 / 0.687 / 0.691; the test queries then score I->T 0.577, T->I 0.622
(random codes 0.387) at 32 bits, in 8 minutes on 2 shared CPU cores.
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import builtin


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base('scahn', bits=32,
                                dataset=builtin.synthetic_dataset_config())
  config.dataset.num_val = 500

  default_configs.scahn_from_scratch(config, num_steps=2000)
  config.model.image_input = 'patches'
  config.model.patch_size = 8
  config.model.text_input = 'bow'
  config.model.max_text_tokens = 32
  return config_utils.apply_arg(config, arg)
