"""eval/examples.png: fixed queries with their top 10, relevant or not."""
import numpy as np
import PIL.Image
import pytest

from crossmodal_hash.data import synthetic
from crossmodal_hash.evaluation import examples

_GREEN = (0x1a, 0x9a, 0x3a)
_RED = (0xd0, 0x20, 0x20)


def _has_colour(pixels, colour, tolerance=12):
  return bool(np.any(np.all(np.abs(pixels[..., :3].astype(int) -
                                   np.array(colour)) <= tolerance, axis=-1)))


@pytest.mark.parametrize('kind', ['pixels', 'features', 'codes_only'])
def test_examples_figure(tmp_path, kind):
  config = synthetic.SyntheticConfig(
      num_labels=6, vocab_size=200, image_size=16,
      feature_dim=32 if kind == 'features' else None)
  data = synthetic.generate(60, config, seed=1)
  rng = np.random.default_rng(0)
  query_rows, db_rows = np.arange(0, 12), np.arange(12, 60)
  # Codes that rank items with a shared label first, plus noise, so that
  # both relevant and irrelevant results appear.
  proj = rng.standard_normal((6, 24))
  def codes_of(rows):
    z = data.labels[rows] @ proj + 0.8 * rng.standard_normal((len(rows), 24))
    return np.where(z >= 0, 1, -1).astype(np.int8)
  codes = {f'{m}_{s}': codes_of(r) for m in ('image', 'text')
           for s, r in (('query', query_rows), ('db', db_rows))}
  out = tmp_path / 'examples.png'
  kwargs = {}
  if kind != 'codes_only':
    kwargs = dict(data=data, query_rows=query_rows, db_rows=db_rows,
                  vocabulary=synthetic.vocabulary(config, 1),
                  label_names=synthetic.label_names(config, 1))
  examples.plot_examples(out, codes, data.labels[query_rows],
                         data.labels[db_rows], **kwargs)
  pixels = np.asarray(PIL.Image.open(out).convert('RGB'))
  # 6 rows (3 queries x 2 directions) of 11 cells.
  assert pixels.shape[0] > 600 and pixels.shape[1] > 1000
  assert _has_colour(pixels, _GREEN) and _has_colour(pixels, _RED)
  if kind == 'pixels':  # Query images and result images are drawn.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
