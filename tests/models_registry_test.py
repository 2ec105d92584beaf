"""Encoders chosen by name from models/registry.py."""
import ast
import inspect

import jax.numpy as jnp
import ml_collections
import pytest

from crossmodal_hash.methods import common
from crossmodal_hash.methods import dcmh
from crossmodal_hash.methods import dsmhn
from crossmodal_hash.models import cnnf
from crossmodal_hash.models import mlp
from crossmodal_hash.models import registry
from crossmodal_hash.models import video


def _model(**kwargs):
  model = ml_collections.ConfigDict(dict(
      image_encoder='feature_mlp', image_mlp_features=(8,), text_hidden=16,
      init_std=0.01, video_conv_features=(4,), video_temporal_pool=(1,),
      video_fc_features=(8,), pretrained_cnnf=''))
  model.update(kwargs)
  return model


@pytest.mark.parametrize('name, kind', [
    ('cnnf', cnnf.CNNF), ('cnnf_small', cnnf.CNNF),
    ('feature_mlp', mlp.MLP), ('video3d', video.Video3DEncoder)])
def test_image_encoders_are_built_by_name(name, kind):
  module = registry.build('image_encoder', _model(image_encoder=name),
                          jnp.float32)
  assert isinstance(module, kind)


def test_an_unknown_encoder_names_the_key_and_the_choices():
  with pytest.raises(ValueError, match=r"config.model.image_encoder 'vit'.*"
                     r"feature_mlp"):
    registry.build('image_encoder', _model(image_encoder='vit'), jnp.float32)


def test_a_pretrained_file_needs_an_encoder_that_takes_it():
  with pytest.raises(ValueError, match='cnnf'):
    registry.check_pretrained(_model(pretrained_cnnf='vgg-f.mat'))
  # Without a file nothing is loaded or merged.
  params = {'img': {'encoder': {'w': jnp.ones(2)}}}
  assert registry.merge_pretrained(params, _model(),
                                   common.PRETRAINED_TRUNKS) is params
  assert registry.mean_image(_model(image_encoder='cnnf')) is None


@pytest.mark.parametrize('module', [common, dcmh, dsmhn])
def test_dcmh_and_dsmhn_do_not_import_ssah(module):
  tree = ast.parse(inspect.getsource(module))
  imported = {alias.name for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) for alias in node.names}
  assert 'ssah' not in imported
