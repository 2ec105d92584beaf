"""DSMHN (video-text) on synthetic clips: a 3-D conv encoder over T frames.

Usage:
  python -m crossmodal_hash.main --config=configs/dsmhn_video_synthetic.py --workdir=DIR
The clips are the synthetic items set in motion (data/synthetic_video.py):
item i has the labels and text of the image dataset's item i, and objects that
move and turn with label-dependent velocities and spins.
"""
import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash import default_configs
from crossmodal_hash.data import builtin
from crossmodal_hash.methods import dsmhn


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default_configs.base(
      'dsmhn', bits=32, dataset=builtin.synthetic_dataset_config(
          'synthetic_video', num_items=3000, num_query=300, num_train=1536))
  config.model = default_configs.synthetic_model(
      text_hidden=1024, init_std=0.05, image_encoder='video3d')
  config.model.video_conv_features = (16, 32, 64)
  config.model.video_temporal_pool = (1, 2, 2)
  config.model.video_fc_features = (256,)

  config.dsmhn = dsmhn.default_config()
  config.dsmhn.num_epochs = 12
  config.dsmhn.learning_rate = 3e-4

  config_utils.add_run_defaults(config, checkpoint_every_passes=4)
  return config_utils.apply_arg(config, arg)
