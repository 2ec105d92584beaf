"""SSAH on IAPR TC-12 (DCMH-style files), CNN-F 224x224, official settings.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/ssah_iaprtc12.py:bits=64 \
      --config.dataset.path=/data/IAPR-TC12.mat --workdir=DIR
The path may also be a folder of <prefix>-iall/-yall/-lall.mat split files, or a
converted ArrayRecord folder (--config.dataset.format=array_record).
Protocol: 2,000 queries, the rest as the retrieval set, 10,000 training items
drawn from it (seeded by dataset.split_seed, saved in the workdir).
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

  config.dataset = user_files.dataset_config('iaprtc12')

  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'cnnf'
  config.model.image_mlp_features = (4096,)
  config.model.image_normalization = 'mean'  # CNN-F: pixels minus the mean.
  # MatConvNet's imagenet-vgg-f.mat to start CNN-F (conv1..fc7) from, as the
  # paper does; '' trains it from scratch. With a file, also set
  # image_normalization='pretrained_mean' to subtract its mean image.
  config.model.pretrained_cnnf = ''
  config.model.semantic_dim = 512
  config.model.label_hidden = 4096
  config.model.text_hidden = 4096
  config.model.text_pool_windows = (5, 10, 15, 30, 50)
  config.model.discriminator_hidden = (512, 256)
  config.model.init_std = 0.01
  config.model.compute_dtype = 'float32'

  config.ssah = ssah.default_config()
  config.ssah.sim_positive = 0.999  # As in the official code.
  config.ssah.num_epochs = 10

  config_utils.add_run_defaults(config, checkpoint_every_passes=5)
  return config_utils.apply_arg(config, arg)
