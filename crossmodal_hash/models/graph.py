"""SCAHN's semantic label graph, and the 2-layer GCN giving label classifiers.

The graph (ML-GCN's, Chen et al. CVPR 2019, as the public SCAHN code builds it):
nodes are the L labels; from the training labels, n_i counts the items with
label i and c_ij the items with both i and j (c_ii = 0); the conditional
probability P(j | i) = c_ij / n_i is binarised at a threshold (0.4), each
column of the binary matrix is rescaled to sum to 0.25 (`neighbour_weight`, the
code's `0.25 / (column sum + 1e-6)`), and the identity is added. The GCN
propagates with D^-1/2 A^T D^-1/2, D = diag(row sums of A).

GCN (Kipf & Welling; the code's `GCN` with MindSpore's defaults): node
features [L, F] -> Dense(no bias) -> propagate -> LeakyReLU(0.2) ->
Dense(no bias) -> propagate -> [L, D] label classifiers; a D-dim feature's
label logits are its dot products with them.
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossmodal_hash.models import layers


def label_adjacency(labels, threshold: float = 0.4,
                    neighbour_weight: float = 0.25):
  """The re-weighted label co-occurrence graph A, with self-loops.

  Args:
    labels: [N, L] multi-hot training labels: a NumPy array (computed in
      float64), or a JAX array (in its float dtype, jit-able: a method's
      `init` may build the graph from the device-resident labels).
    threshold: P(j | i) >= threshold makes j a neighbour of i.
    neighbour_weight: the total weight of a column's neighbours.

  Returns:
    [L, L], NumPy float64 or JAX float: A[i, j] = neighbour_weight * B[i, j]
    / (sum_k B[k, j] + 1e-6) + [i == j], B[i, j] = [c_ij / n_i >= threshold].
    A label that never occurs has no neighbours (its P(. | i) is taken as 0).
  """
  xp = np if isinstance(labels, np.ndarray) else jnp
  y = labels.astype(np.float64 if xp is np else
                    jnp.promote_types(labels.dtype, jnp.float32))
  if y.ndim != 2:
    raise ValueError(f'labels must be [N, L], got shape {y.shape}.')
  co = y.T @ y
  eye = xp.eye(co.shape[0], dtype=co.dtype)
  counts = xp.diagonal(co)[:, None]
  co = co * (1 - eye)
  cond = xp.where(counts > 0, co / xp.maximum(counts, 1), 0)
  binary = (cond >= threshold).astype(co.dtype)
  adj = binary * neighbour_weight / (binary.sum(axis=0, keepdims=True) + 1e-6)
  return adj + eye


def propagation_matrix(adjacency):
  """D^-1/2 A^T D^-1/2 with D = diag(A 1): [L, L] -> [L, L].

  (The code's `get_adj`: `(A D)^T D`.) NumPy in float64, or JAX (jit-able).
  Rows of A must have positive sums, as `label_adjacency`'s self-loops
  ensure (checked for NumPy input).
  """
  if isinstance(adjacency, np.ndarray):
    a = adjacency.astype(np.float64)
    if np.any(a.sum(axis=1) <= 0):
      raise ValueError('Every row of the adjacency needs a positive sum.')
  else:
    a = adjacency
  d = a.sum(axis=1) ** -0.5
  return d[:, None] * a.T * d[None, :]


def load_node_embeddings(path: str, num_labels: int) -> np.ndarray:
  """Reads label node embeddings [L, F] float32 from a .npy file.

  (SCAHN uses 300-d GloVe vectors of the label names.)

  Raises:
    ValueError: naming `path`, when it is missing, unreadable, not [L, F] or
      not finite.
  """
  if not os.path.exists(path):
    raise ValueError(f'{path}: label embedding file not found.')
  try:
    x = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: not a readable .npy array ({e}).') from e
  if x.ndim != 2 or x.shape[0] != num_labels:
    raise ValueError(f'{path}: label embeddings must be [{num_labels}, F] '
                     f'(one row per label), got shape {x.shape}.')
  x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{path}: label embeddings contain NaN or inf.')
  return x


class GCN(nn.Module):
  """Label nodes [L, F] and propagation [L, L] -> label classifiers [L, D].

  Param tree: 'node_embedding' ([L, F], only when no node features are given),
  'layer_0' ({'kernel': [F, hidden]}), 'layer_1' ({'kernel': [hidden, D]}).

  Attributes:
    num_nodes: L.
    input_dim: F, the node embedding width (SCAHN: 300).
    hidden: width of the first layer (SCAHN: 256).
    features: D, the classifier width = the encoders' width.
    negative_slope: of the LeakyReLU after the first layer (0.2).
    dropout_rate: dropout on each layer's input (the code: none).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_nodes: int
  input_dim: int
  hidden: int
  features: int
  negative_slope: float = 0.2
  dropout_rate: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, propagation: jax.Array,
               node_features: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Computes the label classifiers.

    Args:
      propagation: [L, L] `propagation_matrix` of the label graph (a constant).
      node_features: [L, F] fixed node embeddings (e.g. word vectors), or None
        for learned ones (the 'node_embedding' parameter, N(0, 1)).
      train: apply dropout (needs the 'dropout' rng) when `dropout_rate`.

    Returns:
      [L, D] in at least float32.
    """
    if node_features is None:
      node_features = self.param('node_embedding', nn.initializers.normal(1.0),
                                 (self.num_nodes, self.input_dim),
                                 self.param_dtype)
    if node_features.shape != (self.num_nodes, self.input_dim):
      raise ValueError(f'node_features must be [{self.num_nodes}, '
                       f'{self.input_dim}], got {node_features.shape}.')
    prop = jax.lax.stop_gradient(propagation).astype(self.dtype)
    x = node_features.astype(self.dtype)
    for i, width in enumerate((self.hidden, self.features)):
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
      x = nn.Dense(width, use_bias=False,
                   kernel_init=nn.initializers.glorot_uniform(),
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   name=f'layer_{i}')(x)
      x = prop @ x
      if i == 0:
        x = nn.leaky_relu(x, self.negative_slope)
    return layers.at_least_float32(x)


def label_logits(features: jax.Array, classifiers: jax.Array) -> jax.Array:
  """features: [B, D], classifiers: [L, D] -> [B, L] logits (no sigmoid)."""
  return jnp.einsum('bd,ld->bl', layers.at_least_float32(features),
                    layers.at_least_float32(classifiers))
