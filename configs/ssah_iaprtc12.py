"""SSAH on IAPR TC-12, as DCMH's files hold it.

Its protocol has 2,000 queries; the other items are the database, and 10,000
of them are trained on. Everything else is `default_configs.ssah_real_data`.
  python -m crossmodal_hash.main --config=configs/ssah_iaprtc12.py:bits=64 \
      --config.dataset.path=/data/IAPR-TC12.mat --workdir=DIR
"""
from crossmodal_hash import default_configs

get_config = default_configs.ssah_real_data_file('iaprtc12')
