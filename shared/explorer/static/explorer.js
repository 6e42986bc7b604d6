// The latent explorer page: header, API helpers, and panels 1 (sliders), 3 (attributes), 4 (denoise),
// 6 (upload). The pad (2) and inpainting (5) live in pad.js and inpaint.js; all of them share one `ctx`.
import { setupPad } from './pad.js';
import { setupInpaint } from './inpaint.js';

const $ = (id) => document.getElementById(id);
const FACE_CHOICES = 24;  // test faces offered in the selects

// ---- API ---------------------------------------------------------------------------------------------

const statusEl = () => $('status');

/** Shows an API (or network) error in the header, in red. */
function showError(message) {
  const el = statusEl();
  el.textContent = message;
  el.classList.add('error');
}

function clearStatus() {
  const el = statusEl();
  el.textContent = '';
  el.classList.remove('error');
}

/**
 * GET (no body) or POST (JSON object, or a Blob sent as raw bytes) to the explorer's API.
 * Errors (`{"error"}` with a 4xx) land in #status and reject; a success clears #status.
 * @param {string} path e.g. 'api/decode'
 * @param {object|Blob|undefined} body
 * @param {'json'|'blob'} kind what the response holds
 */
async function api(path, body, kind = 'json') {
  const init = {};
  if (body instanceof Blob) {
    init.method = 'POST';
    init.headers = { 'Content-Type': body.type || 'application/octet-stream' };
    init.body = body;
  } else if (body !== undefined) {
    init.method = 'POST';
    init.headers = { 'Content-Type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    showError(`The explorer server does not answer (${err.message}). Is it still running?`);
    throw err;
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const data = await res.json();
      if (data && data.error) message = data.error;
    } catch (_) { /* not JSON: keep the status line */ }
    showError(message);
    throw new Error(message);
  }
  clearStatus();
  return kind === 'blob' ? res.blob() : res.json();
}

/**
 * Shows `url` in an <img>. Images start with an empty alt (a missing src with a non-empty alt draws a broken-image
 * icon); their description waits in data-alt until there is something to describe.
 */
function setSrc(img, url) {
  if (img.dataset.alt && !img.alt) img.alt = img.dataset.alt;
  img.src = url;
}

/** Puts a PNG blob into an <img> as a fresh blob: URL, releasing the previous one. */
function setBlobImage(img, blob) {
  const old = img.dataset.blobUrl;
  const url = URL.createObjectURL(blob);
  img.dataset.blobUrl = url;
  setSrc(img, url);
  if (old) URL.revokeObjectURL(old);
}

/**
 * Calls `fn(args)` with only the latest arguments while a call is in flight: moving a slider fast sends one
 * request at a time and never queues stale ones.
 */
function coalesce(fn) {
  let pending = null;
  let busy = false;
  return function request(args) {
    pending = { args };
    if (busy) return;
    busy = true;
    (async () => {
      while (pending) {
        const next = pending;
        pending = null;
        try { await fn(next.args); } catch (_) { /* shown in #status */ }
      }
      busy = false;
    })();
  };
}

/** Debounced and coalesced: waits `ms` after the last call, then sends the latest arguments. */
function debounce(fn, ms) {
  const send = coalesce(fn);
  let timer = null;
  return (args) => {
    clearTimeout(timer);
    timer = setTimeout(() => send(args), ms);
  };
}

/** Runs `task` with the button disabled and a busy label, restoring it afterwards. */
async function withButton(button, busyText, task) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = busyText;
  try {
    return await task();
  } catch (_) {
    return undefined;  // the message is already in #status
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function fillFaceSelect(select, faces, selected = 0) {
  select.replaceChildren(...faces.map((f) => new Option(`#${f.index} · ${f.label}`, String(f.index))));
  if (faces.length) select.value = String(faces[Math.min(selected, faces.length - 1)].index);
}

function fmt(x, digits) {
  return Number.isFinite(x) ? x.toFixed(digits) : '–';
}

// ---- header -----------------------------------------------------------------------------------------------

function renderHeader(info) {
  const name = $('run-name');
  const tags = document.createElement('span');
  tags.className = 'tags';
  tags.textContent = `${info.family} · ${info.backend} · d = ${info.latent_dim}`;
  name.replaceChildren(document.createTextNode(info.run), tags);
  document.title = `${info.run} · facevae explorer`;

  const m = info.metrics || {};
  const items = [
    ['PSNR', m.psnr, (v) => `${fmt(v, 2)} dB`, 'reconstruction PSNR on the test faces'],
    ['SSIM', m.ssim, (v) => fmt(v, 3), 'reconstruction SSIM on the test faces'],
    ['−ELBO', m.neg_elbo, (v) => fmt(v, 1), 'negative ELBO per test face (nats; lower is better)'],
    ['−IWAE', m.neg_iwae, (v) => fmt(v, 1), 'importance-weighted bound per test face (nats; lower is better)'],
    ['rate', m.rate, (v) => `${fmt(v, 1)} nats`, 'mean KL(q(z|x) || p(z)) on the test faces'],
  ].filter(([, v]) => typeof v === 'number');
  const box = $('run-metrics');
  if (!items.length) {
    box.innerHTML = '<span class="metric muted">not evaluated yet (facevae evaluate)</span>';
    return;
  }
  box.replaceChildren(...items.map(([key, value, show, title]) => {
    const el = document.createElement('span');
    el.className = 'metric';
    el.title = title;
    el.innerHTML = `<span class="key"></span><span class="val"></span>`;
    el.firstChild.textContent = key;
    el.lastChild.textContent = show(value);
    return el;
  }));
}

// ---- labels (cvae) ---------------------------------------------------------------------------------------

/** A test face's labels for decoding: `face.labels` when the server sends them, else parsed from "F 34y Asian". */
function faceLabels(ctx, face) {
  if (!ctx.info.conditional || !face) return undefined;
  if (face.labels) return face.labels;
  const m = /^([MF])\s+(\d+)y\s+(.+)$/.exec(face.label || '');
  if (!m) return undefined;
  const ethnicity = ctx.info.ethnicities.indexOf(m[3].trim());
  if (ethnicity < 0) return undefined;
  return { gender: m[1] === 'F' ? 1 : 0, ethnicity, age: Number(m[2]) };
}

// ---- 1 latent sliders -------------------------------------------------------------------------------------

function setupSliders(ctx) {
  const { info } = ctx;
  const range = info.slider_range;
  const dims = info.dims.slice(0, info.top_k);
  const maxKl = Math.max(1e-9, ...info.dims.map((d) => d.kl));
  let origin = new Array(info.latent_dim).fill(0);
  let labels;  // cvae: the origin face's labels
  const touched = new Set();  // dims moved since the origin was set: the others keep the origin's exact value

  const ranking = $('dim-ranking');
  const sliders = dims.map(({ dim, kl }, rank) => {
    const row = document.createElement('div');
    row.className = 'dim-row';
    row.innerHTML = `
      <label class="dim-name"><span class="dim-id"></span><span class="kl"></span></label>
      <input type="range" class="latent-slider">
      <output class="value"></output>`;
    const [label, input, out] = row.children;
    input.id = `slider-z${dim}`;
    input.dataset.dim = String(dim);
    Object.assign(input, { min: -range, max: range, step: 0.05, value: 0 });
    label.htmlFor = input.id;
    label.title = `rank ${rank + 1}: mean KL ${kl.toFixed(3)} nats on the test faces`;
    label.firstChild.textContent = `z${dim}`;
    label.lastChild.textContent = `KL ${kl.toFixed(2)}`;
    // The KL as a bar under the name (its share of the largest KL): the ranking is visible at a glance.
    label.style.setProperty('--kl', `${Math.max(3, (100 * kl) / maxKl)}%`);
    out.htmlFor = input.id;
    out.textContent = '0.00';
    ranking.appendChild(row);
    input.addEventListener('input', () => {
      touched.add(dim);
      out.textContent = Number(input.value).toFixed(2);
      send();
    });
    return { dim, input, out };
  });
  const rest = info.latent_dim - dims.length;
  $('ranking-note').textContent = rest > 0
    ? `Top ${dims.length} of ${info.latent_dim} dimensions by mean KL (nats); the other ${rest} keep the origin's values.`
    : `All ${info.latent_dim} dimensions, ranked by mean KL (nats).`;

  const face = $('slider-face');
  const send = coalesce(async () => {
    const z = origin.slice();
    for (const s of sliders) if (touched.has(s.dim)) z[s.dim] = Number(s.input.value);
    const body = labels ? { z, labels } : { z };
    setBlobImage(face, await api('api/decode', body, 'blob'));
  });

  function setOrigin(z, caption, newLabels) {
    origin = z.slice();
    labels = newLabels;
    touched.clear();
    for (const s of sliders) {
      const v = Math.max(-range, Math.min(range, origin[s.dim]));
      s.input.value = String(v);
      s.out.textContent = v.toFixed(2);
    }
    $('slider-caption').textContent = caption;
    send();
  }

  const select = $('slider-origin');
  for (const f of ctx.faces) select.appendChild(new Option(`test face #${f.index} · ${f.label}`, String(f.index)));
  async function chooseOrigin() {
    const v = select.value;
    if (v === 'zero') return setOrigin(new Array(info.latent_dim).fill(0), 'decoded from z = 0');
    if (v === 'upload') return setOrigin(ctx.upload.z, 'your face, moved by the sliders');
    const f = ctx.faces.find((x) => String(x.index) === v);
    try {
      const { z } = await api('api/encode', { face: Number(v) });
      setOrigin(z, `test face #${v}, moved by the sliders`, faceLabels(ctx, f));
    } catch (_) { /* in #status */ }
  }
  select.addEventListener('change', chooseOrigin);
  $('slider-reset').addEventListener('click', chooseOrigin);

  setOrigin(origin, 'decoded from z = 0');
  return {
    /** Offers the uploaded face as an origin and selects it. */
    useUpload() {
      if (!select.querySelector('option[value="upload"]')) select.add(new Option('uploaded face', 'upload'), 1);
      select.value = 'upload';
      chooseOrigin();
    },
  };
}

// ---- 3 attributes -------------------------------------------------------------------------------------------

function setupAttributes(ctx) {
  const { info } = ctx;
  if (!info.conditional) {
    $('attr-controls').remove();
    return;
  }
  $('attributes-unavailable').remove();
  const gender = $('attr-gender');
  const ethnicity = $('attr-ethnicity');
  const age = $('attr-age');
  info.genders.forEach((g, i) => gender.add(new Option(g, String(i))));
  info.ethnicities.forEach((e, i) => ethnicity.add(new Option(e, String(i))));
  age.max = String(Math.min(100, info.age_range[1]));
  age.addEventListener('input', () => { $('attr-age-value').textContent = age.value; });
  const chosen = () => ({ gender: Number(gender.value), ethnicity: Number(ethnicity.value), age: Number(age.value) });
  const describe = (a) => `${info.genders[a.gender]}, ${info.ethnicities[a.ethnicity]}, ${a.age}y`;

  const generated = $('attr-generated');
  const generate = () => withButton($('attr-generate'), 'Generating…', async () => {
    const seed = Number($('attr-seed').value) || 0;
    const a = chosen();
    const temperature = Number($('attr-temperature').value);
    const { images } = await api('api/generate', { ...a, seed, count: 4, temperature });
    generated.replaceChildren(...images.map((src, i) => {
      const img = new Image();
      img.className = 'face xs';
      img.alt = `generated face ${i + 1}: ${describe(a)}`;
      img.src = src;
      return img;
    }));
  });
  $('attr-generate').addEventListener('click', generate);
  $('attr-temperature').addEventListener('input', (e) => {
    $('attr-temperature-value').textContent = Number(e.target.value).toFixed(2);
  });

  const faceSelect = $('attr-face');
  fillFaceSelect(faceSelect, ctx.faces);
  const edit = () => withButton($('attr-edit'), 'Editing…', async () => {
    const a = chosen();
    const { images } = await api('api/edit', { face: Number(faceSelect.value), ...a });
    setSrc($('attr-edit-original'), images.original);
    setSrc($('attr-edit-recon'), images.reconstruction);
    setSrc($('attr-edit-result'), images.edited);
    $('attr-edit-caption').textContent = `edited: ${describe(a)}`;
  });
  $('attr-edit').addEventListener('click', edit);
  generate().then(() => { if (ctx.faces.length) edit(); });
}

// ---- 4 denoise --------------------------------------------------------------------------------------------

function setupDenoise(ctx) {
  const select = $('denoise-face');
  const sigma = $('denoise-sigma');
  fillFaceSelect(select, ctx.faces);
  const imgs = {};
  for (const img of $('denoise-results').querySelectorAll('img[data-method]')) imgs[img.dataset.method] = img;
  const names = { noisy: 'noisy', mean: 'mean 3×3', median: 'median 3×3', vae: 'VAE', 'vae+pca': 'VAE ⊕ PCA' };

  const run = debounce(async () => {
    const { images, psnr, blend } = await api('api/denoise', { face: Number(select.value), sigma: Number(sigma.value), seed: 0 });
    const best = Object.keys(psnr).reduce((a, b) => (psnr[a] >= psnr[b] ? a : b));
    for (const [method, img] of Object.entries(imgs)) {
      setSrc(img, images[method]);
      const caption = img.nextElementSibling;
      if (method === 'clean') caption.textContent = 'clean';
      else {
        // "VAE 22.1 dB" as text; the dB value on its own line under the name
        const db = document.createElement('span');
        db.className = 'db';
        db.textContent = `${fmt(psnr[method], 1)} dB`;
        // the blend's weight on the VAE (α = 0: PCA alone), chosen on validation faces at this σ
        const name = method === 'vae+pca' ? `${names[method]} α ${fmt(blend.alpha, 2)}` : names[method];
        caption.replaceChildren(`${name} `, db);
      }
      caption.classList.toggle('best', method === best);
    }
  }, 200);
  sigma.addEventListener('input', () => {
    $('denoise-sigma-value').textContent = Number(sigma.value).toFixed(2);
    run();
  });
  select.addEventListener('change', () => run());
  if (ctx.faces.length) run();
}

// ---- 6 your own face ----------------------------------------------------------------------------------------

function setupUpload(ctx) {
  const drop = $('upload-drop');
  const input = $('upload-input');
  const preview = $('upload-preview');

  async function upload(file) {
    if (!file) return;
    $('upload-caption').textContent = `converting ${file.name}…`;
    try {
      const { image, z } = await api('api/upload', file);
      ctx.upload = { image, z, name: file.name };
      setSrc(preview, image);
      $('upload-caption').textContent = `${file.name} → ${ctx.info.image_size}×${ctx.info.image_size} gray`;
      $('upload-as-origin').disabled = false;
      $('upload-set-corner').disabled = false;
    } catch (_) {
      $('upload-caption').textContent = ctx.upload ? `kept ${ctx.upload.name}` : 'no image yet';
    }
  }
  input.addEventListener('change', () => { upload(input.files[0]); input.value = ''; });
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add('over'); });
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    upload(e.dataTransfer.files[0]);
  });
  $('upload-as-origin').addEventListener('click', () => ctx.sliders.useUpload());
  $('upload-set-corner').addEventListener('click', () => {
    ctx.pad.setCorner(Number($('upload-as-corner').value), ctx.upload.z, 'your face');
  });
}

// ---- start ----------------------------------------------------------------------------------------------

async function main() {
  let info;
  try {
    info = await api('api/info');
  } catch (_) {
    $('run-name').textContent = 'no run loaded';
    return;
  }
  renderHeader(info);
  let faces = [];
  try {
    const count = Math.min(FACE_CHOICES, info.n_test);
    if (count > 0) faces = (await api(`api/faces?start=0&count=${count}`)).faces;
  } catch (_) { /* the panels still work from z = 0 and prior samples */ }
  const ctx = { info, faces, upload: null, api, setSrc, setBlobImage, coalesce, withButton, fillFaceSelect, faceLabels, fmt };
  ctx.sliders = setupSliders(ctx);
  ctx.pad = setupPad(ctx);
  setupAttributes(ctx);
  setupDenoise(ctx);
  setupInpaint(ctx);
  setupUpload(ctx);
}

main();
