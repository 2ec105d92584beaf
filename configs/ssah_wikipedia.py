"""SSAH on the Wikipedia dataset (pre-extracted features), its fixed split.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/ssah_wikipedia.py:bits=64 \
      --config.dataset.path=/data/wikipedia.mat --workdir=DIR
The file holds I_tr, T_tr, L_tr, I_te, T_te, L_te (.mat v5/v7.3 or .npz): image
features, text features (e.g. 10-d LDA topics) and single-label classes (10).
Protocol (fixed): the 693 test items are the queries; the 2,173 training items
are both the retrieval set and the training set.
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import ssah


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'ssah'
  config.seed = 0
  config.bits = 16

  config.dataset = user_files.dataset_config('wikipedia')
  config.dataset.tfds_config = 'features'

  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'feature_mlp'  # Pre-extracted features.
  config.model.image_mlp_features = (4096,)
  config.model.image_normalization = 'standardize'
  config.model.semantic_dim = 512
  config.model.label_hidden = 4096
  config.model.text_hidden = 4096
  # The text is a short feature vector (10 LDA topics in the classic release):
  # pooling windows must not exceed its length.
  config.model.text_pool_windows = (2, 5, 10)
  config.model.discriminator_hidden = (512, 256)
  config.model.init_std = 0.01
  config.model.compute_dtype = 'float32'

  config.ssah = ssah.default_config()
  config.ssah.sim_positive = 0.999  # As in the official code.
  config.ssah.num_epochs = 10

  config_utils.add_run_defaults(config, checkpoint_every_passes=5)
  return config_utils.apply_arg(config, arg)
