"""Defaults the configs share, as the Flax examples' configs/default.py.

A config file in configs/ is its dataset, its method's hyper-parameters and
what differs from these; e.g. the four SSAH real-data configs are
`ssah_real_data(dataset)` with their own docstrings.
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from crossmodal_hash import config_utils
from crossmodal_hash.data import builtin
from crossmodal_hash.data import user_files
from crossmodal_hash.methods import mhtn
from crossmodal_hash.methods import scahn
from crossmodal_hash.methods import ssah
from crossmodal_hash.methods import ssal
from crossmodal_hash.trainers import per_step


def base(method: str, *, bits: int,
         dataset: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The top of every config: method, seed 0, bits and the dataset."""
  config = ml_collections.ConfigDict()
  config.method = method
  config.seed = 0
  config.bits = bits
  config.dataset = dataset
  return config


def cnnf_model(*, text_hidden: int) -> ml_collections.ConfigDict:
  """`config.model` of a 224 x 224 CNN-F image net on pixels.

  Trained from scratch unless `pretrained_cnnf` names MatConvNet's
  imagenet-vgg-f.mat (conv1..fc7, as the papers start from); with a file,
  also set image_normalization='pretrained_mean' to subtract its mean image.
  """
  model = ml_collections.ConfigDict()
  model.image_encoder = 'cnnf'
  model.image_mlp_features = (4096,)
  model.image_normalization = 'mean'  # CNN-F: pixels minus the mean.
  model.pretrained_cnnf = ''
  model.text_hidden = text_hidden
  model.init_std = 0.01
  model.compute_dtype = 'float32'
  return model


def synthetic_model(*, text_hidden: int, init_std: float,
                    image_encoder: str = 'cnnf_small'
                   ) -> ml_collections.ConfigDict:
  """`config.model` of the CPU demos on the built-in synthetic data: a small
  CNN-F on 32 x 32 pixels (or `image_encoder`), standardised inputs."""
  model = config_utils.feature_input_model(text_hidden=text_hidden,
                                           init_std=init_std)
  model.image_encoder = image_encoder
  return model


def ssah_model(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`model` with SSAH's own fields, as in the official code."""
  model.semantic_dim = 512
  model.label_hidden = 4096
  model.text_pool_windows = (5, 10, 15, 30, 50)
  model.discriminator_hidden = (512, 256)
  return model


def ssah_real_data(dataset: str) -> ml_collections.ConfigDict:
  """SSAH on a DCMH-style image-text dataset (`user_files.dataset_config`
  name, e.g. 'mirflickr25k'), CNN-F 224 x 224, official hyper-parameters,
  16 bits; not locked (the config file applies its argument)."""
  config = base('ssah', bits=16, dataset=user_files.dataset_config(dataset))
  config.model = ssah_model(cnnf_model(text_hidden=4096))
  config.ssah = ssah.default_config()
  config.ssah.sim_positive = 0.999  # As in the official code.
  config.ssah.num_epochs = 10
  return config_utils.add_run_defaults(config, checkpoint_every_passes=5)


def ssah_real_data_file(dataset: str
                       ) -> Callable[[str | None], ml_collections.ConfigDict]:
  """A config file's `get_config(arg)` of `ssah_real_data(dataset)`."""

  def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return config_utils.apply_arg(ssah_real_data(dataset), arg)

  return get_config


def scahn_from_scratch(config: ml_collections.ConfigDict, *,
                       num_steps: int) -> ml_collections.ConfigDict:
  """`config` (from `base`) with SCAHN's small encoders trained from scratch.

  Width 128 (MLP 256, GCN 64 / 64), Adam 4e-4 after 100 warm-up steps and no
  decay within the run, `num_steps` steps of 32, checkpoints and validation
  every 500 steps; the config file then sets its inputs
  (`model.image_input`, `model.text_input`, ...).
  """
  config.model = scahn.default_model_config()
  config.model.image_normalization = 'standardize'
  config.model.width = 128
  config.model.mlp_dim = 256
  config.model.gcn_input_dim = 64
  config.model.gcn_hidden = 64
  config.scahn = scahn.default_config()
  config.scahn.num_steps = num_steps
  config.scahn.lr = 4e-4
  config.scahn.warmup_steps = 100
  config.scahn.decay_steps = 100_000
  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  per_step.add_defaults(config, checkpoint_every_steps=500,
                        eval_every_steps=500)
  config.train.batch_size = 32
  return config


def mhtn_small(config: ml_collections.ConfigDict, *, num_steps: int,
               source_feature_dim: int) -> ml_collections.ConfigDict:
  """`config` (from `base`) with MHTN on feature inputs, sized for CPU.

  The released hyper-parameters (methods/mhtn.py: SGD 0.01, momentum 0.9,
  weight decay 5e-4, loss weights 1 / 1 / 1 / 1e-4 / 0.1, one Gaussian kernel)
  with narrower layers (stems and semantic subnetwork 1024-1024, bottleneck
  256, discriminator 512-512; the release's 4096s and 512 / 1024 are one
  config line away), batches of 64 target and 64 source items as the
  release, no gradient accumulation, `num_steps` steps, checkpoints and
  validation every 500 steps (cosine mAP; the final report adds the sign
  codes' Hamming mAP). The source domain is the synthetic
  single-label feature set (`source_feature_dim`-d, 40 classes, 4,000 items).
  """
  config.model = mhtn.default_model_config()
  config.model.stem_widths = (1024, 1024)
  config.model.semantic_widths = (1024, 1024)
  config.model.bottleneck = 256
  config.model.discriminator_hidden = (512, 512)
  config.mhtn = mhtn.default_config()
  config.mhtn.num_steps = num_steps
  config.source_dataset = builtin.synthetic_source_config(
      'synthetic_source_features', feature_dim=source_feature_dim,
      batch_size=64)
  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  # Cosine mAP every 500 steps (model selection) and the cosine report with
  # the sign codes' Hamming mAP beside it (trainers/evaluators.py).
  config.evals = config_utils.default_evals(real=True)
  per_step.add_defaults(config, checkpoint_every_steps=500,
                        eval_every_steps=500)
  config.train.batch_size = 64
  return config


def ssal_run(config: ml_collections.ConfigDict,
             model: ml_collections.ConfigDict, *,
             num_steps: int) -> ml_collections.ConfigDict:
  """`config` (from `base`) with SSAL on `model` (its trunks' fields; SSAL's
  own are added): `num_steps` steps of 32, Adam 1e-3 for both networks,
  checkpoints and validation every 500 steps; the cosine evaluators (the
  final report with the sign() codes' Hamming suite beside)."""
  config.model = ssal.add_model_defaults(model)
  config.ssal = ssal.default_config()
  config.ssal.num_steps = num_steps
  config_utils.add_run_defaults(config, checkpoint_every_passes=1)
  per_step.add_defaults(config, checkpoint_every_steps=500,
                        eval_every_steps=500)
  config.evals = config_utils.default_evals(real=True)
  config.train.batch_size = 32
  return config
