"""The web page of `serve.py`: type tags or drop an image, see the results.

One self-contained HTML document (no external scripts, styles or fonts). It
calls the service's JSON API: GET /health for the run and example tags,
GET /api/search?text=... for a text query, POST /api/search/image for an
image; results show each item's image (a text query searches images), its
Hamming distance (or, for a cosine index, its cosine similarity), its labels
and tags. Element ids the browser test uses: `query`, `k`, `search`, `drop`,
`file`, `status`, `results`; every result is a `.result` with `data-id` and
`data-distance` (Hamming) or `data-similarity` (cosine).
"""

HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>crossmodal_hash search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  #run { color: #666; font-size: .9em; margin-bottom: 1em; }
  form { display: flex; gap: .5em; align-items: center; flex-wrap: wrap; }
  #query { width: 28em; padding: .4em; font-size: 1em; }
  #k { width: 4em; padding: .4em; }
  button { padding: .45em 1.2em; font-size: 1em; }
  #drop { margin: .8em 0; padding: 1em; border: 2px dashed #aaa;
          border-radius: 8px; color: #666; text-align: center; }
  #drop.over { border-color: #36c; color: #36c; }
  #drop img { max-height: 96px; image-rendering: pixelated;
              vertical-align: middle; margin-left: 1em; }
  #status { margin: .6em 0; min-height: 1.2em; }
  #status.error { color: #b00; }
  #results { display: grid; gap: 12px;
             grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); }
  .result { border: 1px solid #ddd; border-radius: 6px; padding: 6px;
            font-size: .8em; overflow-wrap: anywhere; }
  .result img { width: 100%; image-rendering: pixelated; display: block;
                background: #eee; }
  .rank { font-weight: bold; }
  .dist { float: right; color: #36c; }
  .labels { color: #070; margin-top: 3px; }
  .tags { color: #666; margin-top: 3px; }
  .examples a { margin-right: .6em; cursor: pointer; color: #36c; }
</style>
</head>
<body>
<h1>Cross-modal search</h1>
<div id="run">loading...</div>
<form id="form">
  <input id="query" placeholder="tags, e.g. red_disc blue_ring" autocomplete="off">
  k <input id="k" type="number" value="10" min="1">
  <button id="search" type="submit">Search</button>
</form>
<div class="examples" id="examples"></div>
<div id="drop">or drop an image here (or <label><u>choose a file</u>
  <input id="file" type="file" accept="image/*" hidden></label>)</div>
<div id="status"></div>
<div id="results"></div>
<script>
const $ = (id) => document.getElementById(id);

function setStatus(text, error) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function show(answer) {
  const box = $('results');
  box.replaceChildren();
  for (const r of answer.results) {
    const card = el('div', 'result');
    card.dataset.id = r.id;
    const cosine = r.similarity !== undefined;
    if (cosine) card.dataset.similarity = r.similarity;
    else card.dataset.distance = r.distance;
    if (answer.searched === 'image') {
      const img = el('img');
      img.alt = 'item ' + r.id;
      img.src = '/api/items/image/' + r.index + '/image';
      img.onerror = () => img.replaceWith(el('div', 'tags', '(no pixels)'));
      card.append(img);
    }
    const head = el('div');
    head.append(el('span', 'rank', '#' + r.rank + ' '), el('span', '', r.id),
                el('span', 'dist', cosine ? 'cos=' + r.similarity.toFixed(3)
                                          : 'd=' + r.distance));
    card.append(head);
    card.append(el('div', 'labels', (r.labels || []).join(', ') || '-'));
    if (answer.searched === 'text' && r.tags)
      card.append(el('div', 'tags', r.tags.slice(0, 12).join(' ')));
    box.append(card);
  }
  let text = answer.results.length + ' results (' + answer.modality + ' -> ' +
             answer.searched + ')';
  if (answer.unknown_tags && answer.unknown_tags.length)
    text += '; unknown tags ignored: ' + answer.unknown_tags.join(' ');
  setStatus(text, false);
}

async function call(promise) {
  setStatus('searching...', false);
  try {
    const response = await promise;
    const body = await response.json();
    if (!response.ok) {
      $('results').replaceChildren();
      const detail = typeof body.detail === 'string' ? body.detail :
                     JSON.stringify(body.detail);
      setStatus('Error ' + response.status + ': ' + detail, true);
      return;
    }
    show(body);
  } catch (e) {
    setStatus('Error: ' + e, true);
  }
}

$('form').addEventListener('submit', (event) => {
  event.preventDefault();
  const params = new URLSearchParams({text: $('query').value,
                                      k: $('k').value});
  call(fetch('/api/search?' + params));
});

function searchImage(file) {
  const preview = el('img');
  preview.src = URL.createObjectURL(file);
  $('drop').replaceChildren('query image: ' + file.name, preview);
  const form = new FormData();
  form.append('image', file);
  form.append('k', $('k').value);
  call(fetch('/api/search/image', {method: 'POST', body: form}));
}

const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault();
                                           drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files.length) searchImage(e.dataTransfer.files[0]);
});
$('file').addEventListener('change', (e) => {
  if (e.target.files.length) searchImage(e.target.files[0]);
});

fetch('/health').then((r) => r.json()).then((h) => {
  const sizes = Object.entries(h.indexes).map(([m, n]) => n + ' ' + m)
                      .join(', ');
  const space = h.ranking === 'cosine' ?
      h.dim + '-d embeddings, cosine' : h.dim + ' bits, Hamming';
  $('run').textContent = h.method.toUpperCase() + ', ' + space +
      ', checkpoint ' + h.checkpoint + ' (' + h.workdir + '); index: ' +
      sizes;
  $('k').max = h.max_k;
  const ex = $('examples');
  if (h.example_tags.length) ex.append('try: ');
  for (const tag of h.example_tags) {
    const a = el('a', '', tag);
    a.onclick = () => { $('query').value = tag;
                        $('form').requestSubmit(); };
    ex.append(a);
  }
});
</script>
</body>
</html>
"""
