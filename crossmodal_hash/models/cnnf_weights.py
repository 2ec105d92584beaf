"""MatConvNet's `imagenet-vgg-f.mat` (CNN-F) as `cnnf.CNNF` params + mean image.

The file (users bring it; nothing is downloaded) is a MatConvNet "simplenn"
network saved by MATLAB as a v5/v7 .mat file:
  layers: a 1 x N cell (or struct array) of layer structs with `type` ('conv',
    'relu', 'lrn' or 'normalize', 'pool', 'softmax', ...), `name` ('conv1' ..
    'conv5', 'fc6' .. 'fc8', ...) and, for convolutions, `weights` = {filters,
    biases} (older releases: `filters` and `biases` fields), `stride` and
    `pad`; pools have `method`, `pool`, `stride`, `pad`; LRNs have `param` =
    [N kappa alpha beta].
  meta.normalization (older releases: a top-level `normalization`):
    `averageImage`, the [224, 224, 3] mean image (or a per-channel mean of 3
    values), and `imageSize`.
A file holding one struct `net` with these fields (`save(f, 'net')`) loads too.

Mapping onto `cnnf.cnnf_224()` (shapes as MATLAB shows them):
  * conv1..conv5: filters [h, w, in, out] are the `nn.Conv` kernel [h, w, in,
    out] as they are. MatConvNet holds images as H x W x C (rows, i.e. y,
    first) and filters as H x W x C_in x C_out, the NHWC / HWIO layout of
    `nn.Conv`, and both compute a cross-correlation (no filter flip).
  * fc6: filters [6, 6, 256, 4096] -> Dense kernel [9216, 4096] by a row-major
    (C-order) reshape. MatConvNet's fc6 is a 6 x 6 'valid' convolution of
    pool5's [6, 6, 256] map, out[k] = sum_{y, x, c} F[y, x, c, k] in[y, x, c];
    CNNF flattens pool5's [B, 6, 6, 256] NHWC map row-major, so input (y, x, c)
    is entry (y * 6 + x) * 256 + c, which is the row holding F[y, x, c, :]
    after the C-order reshape. A [1, 1, 9216, 4096] filter would hide that
    order and is rejected.
  * fc7: [1, 1, 4096, 4096] -> [4096, 4096].
  * biases [out], [1, out] or [out, 1] -> [out].
  * fc8 (the ImageNet classifier) and the layers after it are not imported:
    SSAH and DCMH put their own layers there. Files without fc8 (the copy
    DCMH's code ships stops at relu7) load too.

Geometry, checked against the trunk wherever the file records it: conv1 is
11 x 11, stride 4, pad 0 in both (224 -> 54; the last 1 row and column are
unused, (224 - 11) / 4 = 53.25); conv2 pads 2, conv3-5 pad 1, fc6 is 'valid'.
There is no difference in padding: MatConvNet's pads are [top bottom left
right], and pool1's [0 1 0 1] is CNNF's `pool_padding` ((0, 1), (0, 1))
(54 -> 27; unpadded it would give 26). Files pad pool2 and pool5 by either
[0 1 0 1] or 0, which is the same network (27 -> 13 and 13 -> 6 with the same
windows: the extra row and column are never reached), so a pool is accepted
when its window, stride and top/left pad equal CNNF's and it gives the same
output size. The LRN `param` [5 2 1e-4 0.75] is CNNF's depth radius 2, bias
2, alpha 1e-4, beta 0.75 (`vl_nnnormalize` does not divide alpha by N).

Mean image: MatConvNet feeds `single(imread(f)) - averageImage`, RGB pixels in
[0, 255]. The trainer feeds uint8 pixels as float32 without rescaling, so
`config.model.image_normalization='pretrained_mean'` subtracts the returned
mean image as it is.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from absl import logging
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from crossmodal_hash import file_io
from crossmodal_hash.data import mat_files
from crossmodal_hash.data import validation
from crossmodal_hash.models import cnnf

DataFormatError = validation.DataFormatError
Params = dict[str, Any]

IMAGE_SIZE = 224
# The image encoder the file fills (config.model.image_encoder).
ENCODER = 'cnnf'
# Where the image trunk sits in every method's params: SSAH's ImgNet (a
# HashingNet) and DCMH's and DSMHN's image CodeNet all name it 'encoder'.
IMAGE_TRUNK = ('img', 'encoder')
# Layer types between two imported layers that change nothing at inference.
_IGNORED_TYPES = ('dropout',)


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One layer of the file: name, type and fields (raw loadmat values)."""
  name: str
  type: str
  fields: dict[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedCNNF:
  """An imported `imagenet-vgg-f.mat`.

  Attributes:
    path: the file.
    params: the CNNF trunk's params (see `load_matconvnet_cnnf`).
    mean_image: [224, 224, 3] float32, RGB in [0, 255].
  """
  path: str
  params: Params
  mean_image: np.ndarray

  def merge_into(self, params: Params,
                 path_in_tree: Sequence[str] = IMAGE_TRUNK) -> Params:
    """`merge_into(params, self.params, path_in_tree, where=self.path)`."""
    return merge_into(params, self.params, path_in_tree, where=self.path)


def maybe_load(path: str, image_encoder: str) -> PretrainedCNNF | None:
  """The CNN-F that `config.model.pretrained_cnnf` names, or None if it is ''.

  Args:
    path: the `imagenet-vgg-f.mat` file, or '' to train from scratch.
    image_encoder: `config.model.image_encoder`; must be 'cnnf' when a path
      is given.

  Raises:
    ValueError: a path is given for another image encoder.
    FileNotFoundError, DataFormatError: see `load_matconvnet_cnnf`.
  """
  if not path:
    return None
  if image_encoder != ENCODER:
    raise ValueError(
        f'config.model.pretrained_cnnf={path!r} holds the 224 x 224 CNN-F; it '
        f"needs config.model.image_encoder='{ENCODER}', not "
        f'{image_encoder!r}.')
  # A gs://... file is staged to a local copy (scipy.io reads local files).
  params, mean_image = load_matconvnet_cnnf(file_io.local_copy(path))
  logging.info('Loaded the CNN-F trunk (conv1..fc7) and mean image of %s.',
               path)
  return PretrainedCNNF(path, params, mean_image)


def load_matconvnet_cnnf(path: str, trunk: cnnf.CNNF | None = None,
                         image_size: int = IMAGE_SIZE
                        ) -> tuple[Params, np.ndarray]:
  """Reads a MatConvNet CNN-F into the params of `trunk`, and its mean image.

  Args:
    path: the `.mat` file (MatConvNet simplenn, MATLAB v5/v7).
    trunk: the CNNF to fill; `cnnf.cnnf_224()` by default. Its conv geometry,
      LRN and pools must be CNN-F's (checked); other widths are for tests.
    image_size: the trunk's (square) input size.

  Returns:
    (params, mean_image). params has exactly the keys and shapes of
    `trunk.init(key, [1, image_size, image_size, 3])['params']` (float32
    NumPy): for CNN-F {'conv1': {'kernel': [11, 11, 3, 64], 'bias': [64]},
    'conv2': {'kernel': [5, 5, 64, 256], ...}, 'conv3'..'conv5': {'kernel':
    [3, 3, 256, 256], ...}, 'fc6': {'kernel': [9216, 4096], 'bias': [4096]},
    'fc7': {'kernel': [4096, 4096], 'bias': [4096]}}.
    mean_image is [image_size, image_size, 3] float32 (a per-channel mean is
    broadcast).

  Raises:
    FileNotFoundError: no such file.
    DataFormatError: naming the file and the problem: not a v5/v7 .mat file,
      truncated or corrupt, no `layers`, a missing layer, filters of the wrong
      shape, a geometry other than CNN-F's, or no usable mean image.
  """
  trunk = cnnf.cnnf_224() if trunk is None else trunk
  with mat_files.MatFile(path) as mat:
    root = _root(mat)
  layers = _layers(root['layers'], path)
  params = _import(layers, trunk, image_size, path)
  return params, _mean_image(root, image_size, path)


def merge_into(params: Params, pretrained: Params,
               path_in_tree: Sequence[str] = IMAGE_TRUNK, *,
               where: str = 'the pretrained weights') -> Params:
  """`params` with the subtree at `path_in_tree` replaced by `pretrained`.

  Args:
    params: a method's params, e.g. SSAH's {'img': {'encoder': ...,
      'semantic': ..., ...}, 'txt': ..., ...}; arrays or ShapeDtypeStructs.
    pretrained: the trunk's params (`load_matconvnet_cnnf`).
    path_in_tree: the keys leading to the trunk ('img', 'encoder').
    where: the file the weights come from, for errors.

  Returns:
    A new tree; the pretrained leaves are cast to the dtypes of those they
    replace, every other leaf is shared with `params`.

  Raises:
    ValueError: `params` has no subtree at `path_in_tree`.
    DataFormatError: the two trunks differ in a layer or an array's shape.
  """
  prefix = '/'.join(path_in_tree)
  node = params
  for key in path_in_tree:
    if not isinstance(node, Mapping) or key not in node:
      raise ValueError(f'{where}: the model params have no {prefix!r} to '
                       'load the CNN-F trunk into.')
    node = node[key]
  current = traverse_util.flatten_dict(node, sep='/')
  new = traverse_util.flatten_dict(pretrained, sep='/')
  if set(current) != set(new):
    raise DataFormatError(
        f'{where}: the pretrained trunk does not fit {prefix}: arrays only in '
        f'the file: {sorted(set(new) - set(current)) or "none"}; only in the '
        f'model: {sorted(set(current) - set(new)) or "none"}. The file holds '
        f"the 224 x 224 CNN-F (config.model.image_encoder='{ENCODER}').")
  for key, leaf in current.items():
    if tuple(np.shape(new[key])) != tuple(leaf.shape):
      raise DataFormatError(
          f'{where}: layer {prefix}/{key} has shape {tuple(np.shape(new[key]))}'
          f' in the file but {tuple(leaf.shape)} in the model. The file holds '
          f"the 224 x 224 CNN-F (config.model.image_encoder='{ENCODER}' on "
          '224 x 224 images).')
  merged = traverse_util.unflatten_dict(
      {k: np.asarray(new[k], dtype=leaf.dtype) for k, leaf in current.items()},
      sep='/')
  return _replace_at(params, tuple(path_in_tree), merged)


def _replace_at(tree: Params, path: tuple[str, ...], value: Any) -> Any:
  if not path:
    return value
  return {**tree, path[0]: _replace_at(tree[path[0]], path[1:], value)}


# ------------------------------------------------------ reading the struct --


def _unwrap(value: Any) -> Any:
  """Strips the 1 x 1 cells loadmat puts around struct fields."""
  while (isinstance(value, np.ndarray) and value.dtype == object and
         value.size == 1):
    value = value.reshape(-1)[0]
  return value


def _struct(value: Any) -> dict[str, Any] | None:
  """A scalar MATLAB struct as {field: value}; None if `value` is none."""
  value = _unwrap(value)
  if isinstance(value, np.ndarray) and value.dtype.names and value.size == 1:
    value = value.reshape(-1)[0]
  if isinstance(value, np.void) and value.dtype.names:
    return {name: value[name] for name in value.dtype.names}
  return None


def _string(value: Any) -> str:
  """A MATLAB char array as a str ('' if `value` is not one)."""
  value = _unwrap(value)
  if isinstance(value, np.ndarray) and value.dtype.kind == 'U':
    return ''.join(value.reshape(-1).tolist())
  return value if isinstance(value, str) else ''


def _numbers(value: Any, where: str) -> np.ndarray:
  """A numeric MATLAB array (MATLAB's shape); `where` names it in errors."""
  value = _unwrap(value)
  if (not isinstance(value, np.ndarray) or value.dtype.names or
      not np.issubdtype(value.dtype, np.number)):
    raise DataFormatError(f'{where} is not a numeric array.')
  return value


def _ints(value: Any, n: int, where: str) -> tuple[int, ...]:
  """A geometry field of 1 or `n` numbers as `n` ints (a scalar repeats)."""
  numbers = _numbers(value, where).reshape(-1)
  if numbers.size == 1:
    numbers = np.repeat(numbers, n)
  if numbers.size != n:
    raise DataFormatError(f'{where} has {numbers.size} values; expected 1 or '
                          f'{n}.')
  return tuple(int(round(float(v))) for v in numbers)


def _root(mat: mat_files.MatFile) -> dict[str, Any]:
  """The network's top-level fields: the file's variables, or those of `net`."""
  if 'layers' not in mat and 'net' in mat:
    net = _struct(mat.value('net'))
    if net is not None and 'layers' in net:
      return net
  if 'layers' not in mat:
    raise DataFormatError(
        f'{mat.path}: not a MatConvNet simplenn network: no `layers` variable '
        f'(the file holds: {", ".join(mat.keys()) or "nothing"}).')
  return {key: mat.value(key) for key in mat.keys()}


def _layers(value: Any, path: str) -> list[_Layer]:
  """The `layers` cell (or struct array) as a list of `_Layer`s."""
  value = _unwrap(value)
  if not isinstance(value, np.ndarray) or not (value.dtype == object or
                                               value.dtype.names):
    raise DataFormatError(f'{path}: `layers` must be a cell array of layer '
                          'structs (MatConvNet simplenn).')
  layers = []
  for i, item in enumerate(value.reshape(-1)):
    fields = _struct(item)
    if fields is None:
      raise DataFormatError(f'{path}: layers{{{i + 1}}} is not a struct.')
    layers.append(_Layer(_string(fields.get('name')),
                         _string(fields.get('type')), fields))
  return layers


def _filters_and_biases(layer: _Layer,
                        path: str) -> tuple[np.ndarray, np.ndarray]:
  """A conv layer's filters [h, w, in, out] and biases, as stored."""
  where = f'{path}: layer {layer.name}'
  fields = layer.fields
  if 'weights' in fields:
    cell = _unwrap(fields['weights'])
    if not (isinstance(cell, np.ndarray) and cell.dtype == object and
            cell.size == 2):
      raise DataFormatError(f'{where}: `weights` must be a 1x2 cell '
                            '{filters, biases}.')
    filters, biases = cell.reshape(-1)
  elif 'filters' in fields and 'biases' in fields:
    filters, biases = fields['filters'], fields['biases']
  else:
    raise DataFormatError(
        f'{where} has no weights (neither `weights` nor `filters` and '
        f'`biases`; its fields: {", ".join(fields)}).')
  return (_numbers(filters, f'{where} filters'),
          _numbers(biases, f'{where} biases'))


# ------------------------------------------------------------- importing --


def _import(layers: list[_Layer], trunk: cnnf.CNNF, image_size: int,
            path: str) -> Params:
  """The trunk's params from the file's layers, every shape checked."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  expected = jax.eval_shape(lambda x: trunk.init(jax.random.key(0), x),
                            x)['params']
  names = list(expected)
  index = {}
  for name in names:
    found = [i for i, layer in enumerate(layers) if layer.name == name]
    if len(found) != 1:
      problem = (f'has no layer {name}' if not found else
                 f'has {len(found)} layers named {name}')
      raise DataFormatError(
          f'{path} {problem} (CNN-F, imagenet-vgg-f, has one each of conv1..'
          f'conv5, fc6, fc7); its layers: '
          f'{", ".join(layer.name for layer in layers) or "none"}.')
    index[name] = found[0]
  if sorted(index.values()) != [index[name] for name in names]:
    raise DataFormatError(f'{path}: the layers {", ".join(names)} are not in '
                          'that order.')
  _check_geometry(layers, index, trunk, image_size, path)
  filter_shapes = _filter_shapes(expected, trunk, image_size)
  return {name: _import_layer(layers[index[name]], expected[name],
                              filter_shapes[name], path) for name in names}


def _filter_shapes(expected: Params, trunk: cnnf.CNNF,
                   image_size: int) -> dict[str, tuple[int, ...]]:
  """MatConvNet's [h, w, in, out] filter shape of each layer of the trunk."""
  shapes = {}
  h, w = _conv_map_size(trunk, image_size)
  for name, leaves in expected.items():
    kernel = tuple(leaves['kernel'].shape)
    if len(kernel) == 4:
      shapes[name] = kernel
    else:
      # The first fc layer sees the [h, w, C] map, the others [1, 1, in].
      channels = kernel[0] // (h * w)
      shapes[name] = (h, w, channels, kernel[1])
      h = w = 1
  return shapes


def _conv_map_size(trunk: cnnf.CNNF, image_size: int) -> tuple[int, int]:
  """Height and width of the map the trunk flattens before its fc layers."""
  size = [image_size, image_size]
  for i, (k, s, p) in enumerate(zip(trunk.conv_kernels, trunk.conv_strides,
                                    trunk.conv_paddings)):
    size = [cnnf.out_size(d, k, s, p, p) for d in size]
    if trunk.pool_after[i]:
      size = [cnnf.out_size(d, trunk.pool_window, trunk.pool_stride, *pad)
              for d, pad in zip(size, trunk.pool_padding)]
  return size[0], size[1]


def _import_layer(layer: _Layer, expected: Params, filter_shape: tuple[int,
                                                                       ...],
                  path: str) -> Params:
  """{'kernel', 'bias'} of one layer, reshaped to `expected`'s shapes."""
  filters, biases = _filters_and_biases(layer, path)
  where = f'{path}: layer {layer.name}'
  # MATLAB drops trailing singleton dimensions.
  stored = filters.shape + (1,) * (4 - filters.ndim)
  if stored != filter_shape:
    raise DataFormatError(
        f'{where} has filters of shape {filters.shape}; CNN-F '
        f'(imagenet-vgg-f) has {filter_shape} [h, w, in, out] there. Is this '
        'another network (VGG-M, VGG-S, VGG-16, AlexNet)?')
  out = filter_shape[-1]
  if biases.size != out or max(biases.shape, default=1) != out:
    raise DataFormatError(f'{where} has biases of shape {biases.shape}; '
                          f'expected {out} values.')
  for what, array in (('filters', filters), ('biases', biases)):
    if not np.isfinite(array).all():
      raise DataFormatError(f'{where} {what} hold NaN or Inf values; the file '
                            'may be corrupt.')
  kernel, bias = expected['kernel'], expected['bias']
  return {'kernel': np.asarray(filters, kernel.dtype).reshape(kernel.shape),
          'bias': np.asarray(biases, bias.dtype).reshape(bias.shape)}


# --------------------------------------------------------------- geometry --


def _check_geometry(layers: list[_Layer], index: dict[str, int],
                    trunk: cnnf.CNNF, image_size: int, path: str) -> None:
  """Checks the file's strides, pads, ReLUs, LRNs and pools against `trunk`.

  Between two imported layers the file must hold what the trunk applies
  there (ReLU, then LRN and max pool where the trunk has them; dropout is
  ignored). Fields the file lacks are not checked.
  """
  names = list(index)
  size = [image_size, image_size]
  n = len(trunk.conv_features)
  for j, name in enumerate(names):
    conv = j < n
    stride, pad = ((trunk.conv_strides[j], trunk.conv_paddings[j]) if conv
                   else (1, 0))
    _check_conv(layers[index[name]], stride, pad, path)
    if conv:
      k = trunk.conv_kernels[j]
      size = [cnnf.out_size(d, k, stride, pad, pad) for d in size]
    if j + 1 == len(names):
      break
    between = [layer for layer in layers[index[name] + 1:index[names[j + 1]]]
               if layer.type not in _IGNORED_TYPES]
    wanted = ['relu'] + (['lrn'] if conv and trunk.lrn_after[j] else []) + (
        ['pool'] if conv and trunk.pool_after[j] else [])
    found = ['lrn' if layer.type == 'normalize' else layer.type
             for layer in between]
    if found != wanted:
      raise DataFormatError(
          f'{path}: between {name} and {names[j + 1]} the file has layers of '
          f'types {found}; CNN-F has {wanted}.')
    for layer in between:
      if layer.type in ('lrn', 'normalize'):
        _check_lrn(layer, trunk, path)
      elif layer.type == 'pool':
        _check_pool(layer, trunk, size, path)
        size = [cnnf.out_size(d, trunk.pool_window, trunk.pool_stride, *p)
                for d, p in zip(size, trunk.pool_padding)]


def _check_conv(layer: _Layer, stride: int, pad: int, path: str) -> None:
  """A conv's `stride` [y x] and `pad` [top bottom left right], if stored."""
  where = f'{path}: layer {layer.name}'
  fields = layer.fields
  if 'stride' in fields:
    stored = _ints(fields['stride'], 2, f'{where} stride')
    if stored != (stride,) * 2:
      raise DataFormatError(f'{where} has stride {list(stored)}; CNN-F has '
                            f'{stride} there.')
  if 'pad' in fields:
    stored = _ints(fields['pad'], 4, f'{where} pad')
    if stored != (pad,) * 4:
      raise DataFormatError(
          f'{where} has pad {list(stored)} [top bottom left right]; CNN-F pads '
          f'{pad} on every side there.')


def _check_lrn(layer: _Layer, trunk: cnnf.CNNF, path: str) -> None:
  """`param` [N kappa alpha beta] against the trunk's LRN, if stored."""
  if 'param' not in layer.fields:
    return
  where = f'{path}: layer {layer.name}'
  param = _numbers(layer.fields['param'], f'{where} param').reshape(-1)
  lrn = trunk.lrn
  wanted = (2 * lrn.depth_radius + 1, lrn.bias, lrn.alpha, lrn.beta)
  if param.size != 4 or not np.allclose(param, wanted, rtol=1e-5, atol=0):
    raise DataFormatError(f'{where} has LRN param {param.tolist()} [N kappa '
                          f'alpha beta]; CNN-F has {list(wanted)}.')


def _check_pool(layer: _Layer, trunk: cnnf.CNNF, size: list[int],
                path: str) -> None:
  """A pool on a [size] map against the trunk's max pool.

  Equal when the method is max and the window, stride, top/left pad and
  output size agree (the bottom/right pad may then differ: it is never
  reached, or only adds values that never win).
  """
  where = f'{path}: layer {layer.name}'
  fields = layer.fields
  method = _string(fields.get('method'))
  if method not in ('', 'max'):
    raise DataFormatError(f'{where} is a {method} pool; CNN-F max-pools.')
  window = (_ints(fields['pool'], 2, f'{where} pool') if 'pool' in fields
            else (trunk.pool_window,) * 2)
  stride = (_ints(fields['stride'], 2, f'{where} stride') if 'stride' in fields
            else (trunk.pool_stride,) * 2)
  pad = (_ints(fields['pad'], 4, f'{where} pad') if 'pad' in fields
         else tuple(p for pair in trunk.pool_padding for p in pair))
  for axis, d in enumerate(size):
    lo, hi = pad[2 * axis:2 * axis + 2]
    want_lo, want_hi = trunk.pool_padding[axis]
    same = (window[axis] == trunk.pool_window and
            stride[axis] == trunk.pool_stride and lo == want_lo and
            cnnf.out_size(d, window[axis], stride[axis], lo, hi) ==
            cnnf.out_size(d, trunk.pool_window, trunk.pool_stride, want_lo,
                          want_hi))
    if not same:
      raise DataFormatError(
          f'{where} pools {list(window)} with stride {list(stride)} and pad '
          f'{list(pad)} [top bottom left right]; on its {size[0]} x {size[1]} '
          f'input that differs from CNN-F\'s {trunk.pool_window} x '
          f'{trunk.pool_window} max pool, stride {trunk.pool_stride}, padding '
          f'{trunk.pool_padding}.')


# ------------------------------------------------------------- mean image --


def _mean_image(root: dict[str, Any], image_size: int, path: str) -> np.ndarray:
  """normalization.averageImage as [image_size, image_size, 3] float32."""
  meta = _struct(root['meta']) if 'meta' in root else None
  norm = _struct(meta['normalization']) if meta and (
      'normalization' in meta) else None
  if norm is None and 'normalization' in root:
    norm = _struct(root['normalization'])
  if norm is None or 'averageImage' not in norm:
    raise DataFormatError(
        f'{path} has no mean image: expected meta.normalization.averageImage '
        '(or normalization.averageImage in older MatConvNet files).')
  mean = _numbers(norm['averageImage'],
                  f'{path}: normalization.averageImage').astype(np.float32)
  if not np.isfinite(mean).all():
    raise DataFormatError(f'{path}: normalization.averageImage holds NaN or '
                          'Inf values.')
  shape = (image_size, image_size, 3)
  if mean.size == 3:
    return np.ascontiguousarray(np.broadcast_to(mean.reshape(3), shape))
  if mean.shape != shape:
    raise DataFormatError(
        f'{path}: normalization.averageImage has shape {mean.shape}; expected '
        f'the {list(shape)} mean image or a per-channel mean of 3 values.')
  return np.ascontiguousarray(mean)
