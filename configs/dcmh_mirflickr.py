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
from crossmodal_hash import default_configs
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import dcmh


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base(
      'dcmh', bits=16, dataset=user_files.dataset_config('mirflickr25k'))
  config.model = default_configs.cnnf_model(text_hidden=8192)
  config.dcmh = dcmh.default_config()

  config_utils.add_run_defaults(config, checkpoint_every_passes=20)
  return config_utils.apply_arg(config, arg)
