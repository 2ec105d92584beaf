"""SCAHN on MIRFLICKR-25K (DCMH release), the public code's hyper-parameters.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/scahn_mirflickr.py:bits=64 \
      --config.dataset.path=/data/FLICKR-25K.mat --workdir=DIR
Protocol: 2,000 queries, 18,015 retrieval items, 10,000 training items drawn
from the retrieval set.

As the public code (flickr25k.yaml): width 1024, 2 transformer layers of 4
heads with MLPs of 2,048, PaCo over four directions with queues of 1,024,
temperature 0.05, batches of 32, Adam 4e-5 (GCN 0.2) after 1,000 warm-up
steps, e^-0.9 every 3,120 steps, clipping at 2.0, discriminators Adam(1e-4,
0.5, 0.9) with weight decay 1e-4, 60 epochs (18,750 steps of 32 of the 10,000
training items).

Inputs (data/synthetic_sequences.py): the 224 x 224 images as 196 patches of
16 x 16 pixels (the code's raw-image option has 196 positions too, read by a
pretrained MAE ViT; here the patches go through the encoder's linear map,
trained from scratch, with learned position embeddings); the 1,386-d tag
vectors as sets of at most 64 tags (no item has more than 57) with learned
embeddings (the code reads sentences with a pretrained BERT; a bag of tags
has neither order nor a BERT here). Label node embeddings are learned unless
scahn.label_embeddings names a .npy [24, 300] (e.g. GloVe of the label
names, as the code uses).
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import scahn
from crossmodal_hash.trainers import per_step


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base(
      'scahn', bits=16, dataset=user_files.dataset_config('mirflickr25k'))
  config.model = scahn.default_model_config()
  config.model.image_normalization = 'standardize'
  config.model.image_input = 'patches'
  config.model.patch_size = 16
  config.model.image_positions = 196
  config.model.text_input = 'bow'
  config.model.max_text_tokens = 64
  config.scahn = scahn.default_config()

  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  # An epoch is 312 steps.
  per_step.add_defaults(config, checkpoint_every_steps=1560,
                        eval_every_steps=1560)
  config.train.batch_size = 32
  return config_utils.apply_arg(config, arg)
