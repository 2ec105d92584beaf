"""SSAH on NUS-WIDE (21 concepts, DCMH-style files), CNN-F 224x224, official
hyper-parameters.

Point it at your copy of the data (nothing is downloaded):
  python -m crossmodal_hash.main --config=configs/ssah_nuswide.py:bits=64 \
      --config.dataset.path=/data/NUS-WIDE.mat --workdir=DIR
The path may also be a folder of <prefix>-iall/-yall/-lall.mat split files (e.g.
nus-wide-tc21-*.mat; set dataset.file_prefix if there are several), or a
converted ArrayRecord folder (--config.dataset.format=array_record).
Protocol: 2,100 queries, the rest as the retrieval set, 10,500 training items
drawn from it (seeded by dataset.split_seed, saved in the workdir).
"""
from crossmodal_hash import default_configs

get_config = default_configs.ssah_real_data_file('nuswide')
