"""Tests of crossmodal_hash.models.graph: the label graph and the GCN."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash.models import graph

# Items x labels. Label 3 never occurs.
#   counts n = [3, 3, 2, 0]; co-occurrences c01 = 2, c02 = 1, c12 = 1.
#   P(j | i): row 0 [-, 2/3, 1/3, 0], row 1 [2/3, -, 1/3, 0],
#             row 2 [1/2, 1/2, -, 0], row 3 all 0.
#   Binarised at 0.4: B = [[0,1,0,0], [1,0,0,0], [1,1,0,0], [0,0,0,0]];
#   column sums [2, 2, 0, 0].
_LABELS = np.array([[1, 1, 0, 0],
                    [1, 0, 0, 0],
                    [1, 1, 1, 0],
                    [0, 1, 0, 0],
                    [0, 0, 1, 0]], np.uint8)


def test_label_adjacency_on_a_hand_made_label_matrix():
  w = 0.25 / (2 + 1e-6)
  want = np.array([[1, w, 0, 0],
                   [w, 1, 0, 0],
                   [w, w, 1, 0],
                   [0, 0, 0, 1]], np.float64)
  got = graph.label_adjacency(_LABELS)
  np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


def test_label_graph_in_jax_equals_numpy():
  want = graph.propagation_matrix(graph.label_adjacency(_LABELS))
  fn = jax.jit(lambda y: graph.propagation_matrix(graph.label_adjacency(y)))
  got = fn(jnp.asarray(_LABELS))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_label_adjacency_threshold_is_inclusive_and_configurable():
  # P(2 | 0) = 1/3: a neighbour at threshold 1/3, not above it.
  at = graph.label_adjacency(_LABELS, threshold=1 / 3, neighbour_weight=1.0)
  above = graph.label_adjacency(_LABELS, threshold=0.34, neighbour_weight=1.0)
  assert at[0, 2] > 0 and above[0, 2] == 0
  # Column 2 has neighbours 0 and 1 at threshold 1/3: weight 1 / 2 each.
  np.testing.assert_allclose(at[:2, 2], 1.0 / (2 + 1e-6), rtol=1e-15)


def test_propagation_matrix_is_the_codes_get_adj():
  a = graph.label_adjacency(_LABELS)
  d = np.diag(a.sum(1) ** -0.5)
  np.testing.assert_allclose(graph.propagation_matrix(a), (a @ d).T @ d,
                             rtol=1e-14)
  with pytest.raises(ValueError, match='positive sum'):
    graph.propagation_matrix(np.zeros((2, 2)))


def test_gcn_is_two_propagated_layers_with_leaky_relu():
  num_labels, in_dim, hidden, out = 4, 5, 6, 3
  prop = jnp.asarray(graph.propagation_matrix(graph.label_adjacency(_LABELS)),
                     jnp.float32)
  nodes = jax.random.normal(jax.random.key(1), (num_labels, in_dim))
  model = graph.GCN(num_nodes=num_labels, input_dim=in_dim, hidden=hidden,
                    features=out)
  variables = model.init(jax.random.key(0), prop, nodes)
  assert 'node_embedding' not in variables['params']
  chex.assert_shape([variables['params']['layer_0']['kernel'],
                     variables['params']['layer_1']['kernel']],
                    [(in_dim, hidden), (hidden, out)])
  got = model.apply(variables, prop, nodes)
  w0 = variables['params']['layer_0']['kernel']
  w1 = variables['params']['layer_1']['kernel']
  h = prop @ (nodes @ w0)
  h = jnp.where(h >= 0, h, 0.2 * h)
  np.testing.assert_allclose(got, prop @ (h @ w1), rtol=1e-5, atol=1e-6)


def test_gcn_learns_node_embeddings_without_a_file():
  prop = jnp.eye(4)
  model = graph.GCN(num_nodes=4, input_dim=5, hidden=6, features=3)
  variables = model.init(jax.random.key(0), prop)
  chex.assert_shape(variables['params']['node_embedding'], (4, 5))
  grads = jax.grad(lambda p: jnp.sum(model.apply({'params': p}, prop) ** 2))(
      variables['params'])
  assert float(jnp.abs(grads['node_embedding']).sum()) > 0
  # The graph is a constant.
  g_prop = jax.grad(lambda a: jnp.sum(model.apply(variables, a)))(prop)
  np.testing.assert_array_equal(g_prop, 0.0)


def test_label_logits_are_dot_products():
  feats = jnp.arange(6.0).reshape(2, 3)
  classifiers = jnp.eye(3)[:2]
  np.testing.assert_array_equal(graph.label_logits(feats, classifiers),
                                [[0, 1], [3, 4]])


def test_load_node_embeddings_errors_name_the_file(tmp_path):
  good = tmp_path / 'labels.npy'
  np.save(good, np.ones((4, 3)))
  assert graph.load_node_embeddings(str(good), 4).dtype == np.float32
  with pytest.raises(ValueError, match='missing.npy: label embedding file'):
    graph.load_node_embeddings(str(tmp_path / 'missing.npy'), 4)
  with pytest.raises(ValueError, match=r'labels.npy: .*\[5, F\]'):
    graph.load_node_embeddings(str(good), 5)
  bad = tmp_path / 'nan.npy'
  np.save(bad, np.full((4, 3), np.nan))
  with pytest.raises(ValueError, match='nan.npy: .*NaN'):
    graph.load_node_embeddings(str(bad), 4)
  junk = tmp_path / 'junk.npy'
  junk.write_bytes(b'not an array')
  with pytest.raises(ValueError, match='junk.npy: not a readable'):
    graph.load_node_embeddings(str(junk), 4)
