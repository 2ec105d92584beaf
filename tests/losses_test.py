"""Each loss term against a plain NumPy computation on small inputs."""
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash import losses


def _np_softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


@pytest.fixture(name='rng')
def _rng():
  return np.random.default_rng(0)


def test_similarity(rng):
  a = rng.integers(0, 2, (5, 4))
  b = rng.integers(0, 2, (7, 4))
  expected = np.zeros((5, 7))
  for i in range(5):
    for j in range(7):
      expected[i, j] = 0.999 if np.any(a[i] & b[j]) else 0.0
  np.testing.assert_allclose(losses.similarity(a, b, 0.999), expected,
                             rtol=1e-6)


@pytest.mark.parametrize('form', ['paper', 'official_code'])
def test_pairwise_likelihood(rng, form):
  a = rng.normal(size=(4, 6))
  b = rng.normal(size=(9, 6))
  sim = (rng.random((4, 9)) > 0.5).astype(np.float64)
  total = 0.0
  for i in range(4):
    for j in range(9):
      theta = 0.5 * np.dot(a[i], b[j])
      nll = np.log(1.0 + np.exp(theta)) - sim[i, j] * theta
      if form == 'paper':
        total += nll
      else:
        total += (sim[i, j] * theta - np.log(1.0 + np.exp(theta)))**2
  np.testing.assert_allclose(losses.pairwise_likelihood(a, b, sim, form),
                             total / 36, rtol=1e-5)


def test_pairwise_likelihood_is_stable_for_huge_inner_products():
  a = jnp.full((2, 64), 30.0)
  b = jnp.full((3, 64), 30.0)
  sim = jnp.ones((2, 3))
  # theta = 28800: log(1 + e^theta) overflows, softplus(theta) - theta = 0.
  value = losses.pairwise_likelihood(a, b, sim, 'paper')
  assert np.isfinite(value) and abs(float(value)) < 1e-3
  value = losses.pairwise_likelihood(a, -b, 0 * sim, 'paper')
  assert np.isfinite(value) and abs(float(value)) < 1e-3


def test_unknown_pairwise_form():
  with pytest.raises(ValueError, match='pairwise form'):
    losses.pairwise_likelihood(jnp.ones((1, 2)), jnp.ones((1, 2)),
                               jnp.ones((1, 1)), 'typo')


def test_quantization(rng):
  h = np.tanh(rng.normal(size=(5, 8)))
  h[0, 0] = 0.0  # sign(0) is +1.
  b = np.where(h >= 0, 1.0, -1.0)
  np.testing.assert_allclose(losses.quantization(h), np.mean((b - h)**2),
                             rtol=1e-6)


def test_bit_balance(rng):
  h = np.tanh(rng.normal(size=(6, 4)))
  expected = sum(np.sum(h[:, k])**2 for k in range(4)) / (36 * 4)
  np.testing.assert_allclose(losses.bit_balance(h), expected, rtol=1e-5)


@pytest.mark.parametrize('kind', ['mse', 'bce'])
def test_label_prediction(rng, kind):
  logits = rng.normal(size=(3, 5)) * 3
  labels = rng.integers(0, 2, (3, 5)).astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-logits))
  if kind == 'mse':
    expected = np.mean((p - labels)**2)
  else:
    expected = np.mean(-labels * np.log(p) - (1 - labels) * np.log(1 - p))
  np.testing.assert_allclose(losses.label_prediction(logits, labels, kind),
                             expected, rtol=1e-5)


def test_adversarial_terms(rng):
  real = rng.normal(size=7) * 4
  fake = rng.normal(size=7) * 4
  sig = lambda x: 1.0 / (1.0 + np.exp(-x))
  np.testing.assert_allclose(losses.adversarial_generator(fake),
                             np.mean(-np.log(sig(fake))), rtol=1e-5)
  expected = 0.5 * (np.mean(-np.log(sig(real))) +
                    np.mean(-np.log(1 - sig(fake))))
  np.testing.assert_allclose(losses.adversarial_discriminator(real, fake),
                             expected, rtol=1e-5)


def test_sigmoid_cross_entropy_is_stable():
  x = jnp.array([-1000.0, 1000.0])
  np.testing.assert_allclose(losses.sigmoid_cross_entropy(x, jnp.array([0.,
                                                                        1.])),
                             [0.0, 0.0], atol=1e-6)
  assert np.allclose(_np_softplus(np.array([1000.0])), 1000.0)
