"""SSAH on MS-COCO (DCMH-style files): 5,000 queries, the rest as the retrieval
set, 10,000 training items drawn from it. Usage:
  python -m crossmodal_hash.main --config=configs/ssah_mscoco.py:bits=64 \
      --config.dataset.path=/data/MS-COCO.mat --workdir=DIR
"""
from crossmodal_hash import default_configs

# CNN-F 224 x 224 and the official hyper-parameters, as the other SSAH
# real-data configs (the path may also be a folder of split files or an
# ArrayRecord conversion).
get_config = default_configs.ssah_real_data_file('mscoco')
