"""transfer_losses.py against float64 NumPy references (1e-10), and the
gradient reversal's sign through a small stem and classifier."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossmodal_hash import transfer_losses


@pytest.fixture(name='rng')
def _rng():
  return np.random.default_rng(0)


def _np_mmd(s, t, kernel_num, kernel_mul, bandwidth):
  joint = np.concatenate([s, t])
  n = len(joint)
  d = np.array([[np.sum((joint[i] - joint[j]) ** 2) for j in range(n)]
                for i in range(n)])
  middle = bandwidth if bandwidth > 0 else d.sum() / (n * n - n)
  sigmas = [middle * kernel_mul ** (j - kernel_num // 2)
            for j in range(kernel_num)]
  k = sum(np.exp(-d / sigma) for sigma in sigmas)
  ns = len(s)
  return (k[:ns, :ns].mean() + k[ns:, ns:].mean() -
          2 * k[:ns, ns:].mean())


@pytest.mark.parametrize('kernel_num,kernel_mul,bandwidth',
                         [(1, 2.0, 0.0), (5, 2.0, 0.0), (3, 1.5, 4.0)])
def test_mmd_matches_numpy(rng, kernel_num, kernel_mul, bandwidth):
  s = rng.normal(size=(6, 5))
  t = rng.normal(0.5, 1.3, size=(4, 5))
  want = _np_mmd(s, t, kernel_num, kernel_mul, bandwidth)
  with jax.enable_x64(True):
    got = transfer_losses.multi_kernel_mmd(
        jnp.asarray(s), jnp.asarray(t), kernel_num=kernel_num,
        kernel_mul=kernel_mul, bandwidth=bandwidth)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), want, rtol=1e-10, atol=1e-12)
  # The biased estimate is 0 for identical batches, > 0 for shifted ones.
  assert abs(_np_mmd(s, s, kernel_num, kernel_mul, bandwidth)) < 1e-12
  assert want > 0


def test_mmd_bandwidth_is_a_constant(rng):
  """fix_gamma: false computes the bandwidth in the forward pass only."""
  s = rng.normal(size=(5, 3))
  t = rng.normal(1.0, 1.0, size=(5, 3))
  with jax.enable_x64(True):
    grad = jax.grad(lambda x: transfer_losses.multi_kernel_mmd(
        x, jnp.asarray(t), kernel_num=1))(jnp.asarray(s))
    eps = 1e-6
    j = (2, 1)
    sigma = np.mean([np.sum((a - b) ** 2) for a in np.concatenate([s, t])
                     for b in np.concatenate([s, t])]) * 100 / 90

    def f(x):  # The same loss with the bandwidth held at its value at s.
      return transfer_losses.multi_kernel_mmd(
          x, jnp.asarray(t), kernel_num=1, bandwidth=sigma)

    plus, minus = s.copy(), s.copy()
    plus[j] += eps
    minus[j] -= eps
    numeric = (float(f(jnp.asarray(plus))) - float(f(jnp.asarray(minus)))) / (
        2 * eps)
  np.testing.assert_allclose(float(grad[j]), numeric, rtol=1e-6)


def test_paired_l2_and_soft_label_ce_match_numpy(rng):
  a = rng.normal(size=(7, 4))
  b = rng.normal(size=(7, 4))
  logits = rng.normal(size=(3, 5))
  labels = np.array([[0, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
  want_l2 = sum(np.sum((a[i] - b[i]) ** 2) for i in range(7)) / 7 / 2
  want_ce = 0.0
  for i in range(3):
    log_p = logits[i] - np.log(np.sum(np.exp(logits[i])))
    if labels[i].sum():
      want_ce -= np.sum(labels[i] / labels[i].sum() * log_p)
  want_ce /= 3
  with jax.enable_x64(True):
    got_l2 = transfer_losses.paired_l2(jnp.asarray(a), jnp.asarray(b))
    got_ce = transfer_losses.soft_label_cross_entropy(jnp.asarray(logits),
                                                      jnp.asarray(labels))
  np.testing.assert_allclose(float(got_l2), want_l2, rtol=1e-10)
  np.testing.assert_allclose(float(got_ce), want_ce, rtol=1e-10)


def test_reversal_scale_is_caffe_grls_coefficient():
  for step in (0, 10, 250, 500, 900):
    p = min(1.0, step / 500)
    want = 0.1 + 0.9 * (2 / (1 + np.exp(-10 * p)) - 1)
    got = transfer_losses.reversal_scale(jnp.asarray(step), lower=0.1,
                                         upper=1.0, alpha=10.0, ramp_steps=500)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
  assert float(transfer_losses.reversal_scale(
      7, lower=0.0, upper=0.3, alpha=10.0, ramp_steps=0)) == pytest.approx(0.3)


class _StemAndClassifier(nn.Module):
  """stem -> (optional reversal) -> classifier: the MHTN discriminator path."""
  reverse: bool
  scale: float = 0.5

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(6, name='stem')(x)
    if self.reverse:
      h = transfer_losses.reverse_gradient(h, self.scale)
    return nn.Dense(2, name='classifier')(jnp.tanh(h))


def test_reversal_flips_the_gradient_reaching_the_stem(rng):
  x = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 2, (8, 2)), jnp.float32)
  params = _StemAndClassifier(False).init(jax.random.PRNGKey(0), x)

  def grads(reverse):
    def loss(p):
      logits = _StemAndClassifier(reverse).apply(p, x)
      return jnp.mean(jax.nn.softplus(logits) - labels * logits)
    value, g = jax.value_and_grad(loss)(params)
    return value, g['params']

  plain_loss, plain = grads(False)
  reversed_loss, rev = grads(True)
  assert float(plain_loss) == float(reversed_loss)  # Identity forward.
  # The classifier above the layer gets the same gradient; the stem below
  # gets it times -0.5.
  np.testing.assert_array_equal(rev['classifier']['kernel'],
                                plain['classifier']['kernel'])
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(rev['stem'][name], -0.5 * plain['stem'][name],
                               rtol=1e-6, atol=1e-8)
    assert np.abs(plain['stem'][name]).max() > 1e-4
