"""DCMH on MIRFLICKR-25K (DCMH release), CNN-F 224x224, official hyper-parameters.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/dcmh_mirflickr.py:bits=64 \
      --config.dataset.path=/data/FLICKR-25K.mat --workdir=DIR
Protocol: 2,000 queries, 18,015 retrieval items, 10,000 training items drawn
from the retrieval set. Official schedule: 500 epochs, each one image-net pass
and one text-net pass, SGD with lr linear from 10^-1.5 to 10^-6.
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

  config.dataset = user_files.dataset_config('mirflickr25k')

  config.model = ml_collections.ConfigDict()
  config.model.image_encoder = 'cnnf'
  config.model.image_mlp_features = (4096,)
  config.model.image_normalization = 'mean'  # CNN-F: pixels minus the mean.
  # MatConvNet's imagenet-vgg-f.mat to start CNN-F (conv1..fc7) from, as the
  # paper does; '' trains it from scratch. With a file, also set
  # image_normalization='pretrained_mean' to subtract its mean image.
  config.model.pretrained_cnnf = ''
  config.model.text_hidden = 8192
  config.model.init_std = 0.01
  config.model.compute_dtype = 'float32'

  config.dcmh = dcmh.default_config()

  config_utils.add_run_defaults(config, checkpoint_every_passes=20)
  return config_utils.apply_arg(config, arg)
