"""SSAH on MIRFLICKR-25K (DCMH release), CNN-F 224x224, official hyper-parameters.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/ssah_mirflickr.py:bits=64 \
      --config.dataset.path=/data/FLICKR-25K.mat --workdir=DIR
The path may also be a folder of mirflickr25k-iall/-yall/-lall.mat split files,
or a converted ArrayRecord folder (--config.dataset.format=array_record).
Protocol: 2,000 queries, 18,015 retrieval items, 10,000 training items drawn
from the retrieval set (seeded by dataset.split_seed, saved in the workdir).
"""
from crossmodal_hash import default_configs

get_config = default_configs.ssah_real_data_file('mirflickr25k')
