// Panel 2, the interpolation pad: four corner latents, a draggable point whose bilinear (or spherical) mix is
// computed here and decoded live by the server, and the full n×n matrix rendered by the server.

const $ = (id) => document.getElementById(id);
const NAMES = ['A', 'B', 'C', 'D'];  // top-left, top-right, bottom-left, bottom-right
const THUMB = 0.25;                   // corner thumbnail side, as a fraction of the pad

function lerp(a, b, t) {
  return a.map((x, i) => (1 - t) * x + t * b[i]);
}

/** Spherical interpolation as shared.grids.slerp: falls back to lerp for (anti)parallel or zero vectors. */
function slerp(a, b, t) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  const denom = Math.sqrt(na * nb);
  const cos = denom > 0 ? Math.min(1, Math.max(-1, dot / denom)) : 1;
  const omega = Math.acos(cos);
  const sin = Math.sin(omega);
  if (Math.abs(sin) < 1e-6) return lerp(a, b, t);
  const wa = Math.sin((1 - t) * omega) / sin;
  const wb = Math.sin(t * omega) / sin;
  return a.map((x, i) => wa * x + wb * b[i]);
}

/**
 * The latent at column fraction `t` (x) and row fraction `s` (y), as shared.grids.interpolation_matrix:
 * bilinear, or slerp down the left and right edges, then across.
 */
export function mix(corners, s, t, spherical) {
  const [tl, tr, bl, br] = corners;
  if (spherical) return slerp(slerp(tl, bl, s), slerp(tr, br, s), t);
  return tl.map((x, i) => (1 - s) * (1 - t) * x + (1 - s) * t * tr[i] + s * (1 - t) * bl[i] + s * t * br[i]);
}

export function setupPad(ctx) {
  const { api, setBlobImage, coalesce, withButton } = ctx;
  const canvas = $('pad');
  const g = canvas.getContext('2d');
  const corners = [null, null, null, null];  // {z, bitmap, label}
  const point = { t: 0.5, s: 0.5 };          // x = column fraction, y = row fraction
  const slerpBox = $('pad-slerp');

  // Sharp on high-density screens: the backing store follows devicePixelRatio, drawing stays in CSS pixels.
  const side = canvas.width;
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = canvas.style.height = `${side}px`;
  canvas.width = canvas.height = Math.round(side * dpr);
  g.scale(dpr, dpr);

  function draw() {
    g.clearRect(0, 0, side, side);
    g.fillStyle = '#f1f3f7';
    g.fillRect(0, 0, side, side);
    g.strokeStyle = '#dde2ea';
    g.lineWidth = 1;
    for (let k = 1; k < 4; k++) {
      const p = Math.round((k * side) / 4) + 0.5;
      g.beginPath(); g.moveTo(p, 0); g.lineTo(p, side); g.stroke();
      g.beginPath(); g.moveTo(0, p); g.lineTo(side, p); g.stroke();
    }
    const th = Math.round(side * THUMB);
    g.imageSmoothingEnabled = false;
    corners.forEach((c, k) => {
      const x = k % 2 ? side - th : 0;
      const y = k >= 2 ? side - th : 0;
      if (c && c.bitmap) g.drawImage(c.bitmap, x, y, th, th);
      else { g.fillStyle = '#e2e6ee'; g.fillRect(x, y, th, th); }
      g.fillStyle = 'rgba(20, 28, 45, 0.72)';
      g.fillRect(x + (k % 2 ? th - 14 : 0), y + (k >= 2 ? th - 14 : 0), 14, 14);
      g.fillStyle = '#fff';
      g.font = '600 10px system-ui, sans-serif';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(NAMES[k], x + (k % 2 ? th - 7 : 7), y + (k >= 2 ? th - 7 : 7));
    });
    g.strokeStyle = '#c5ccd8';
    g.strokeRect(0.5, 0.5, side - 1, side - 1);
    const px = point.t * side;
    const py = point.s * side;
    g.strokeStyle = 'rgba(59, 91, 219, 0.35)';
    g.setLineDash([3, 3]);
    g.beginPath(); g.moveTo(px, 0); g.lineTo(px, side); g.moveTo(0, py); g.lineTo(side, py); g.stroke();
    g.setLineDash([]);
    g.beginPath();
    g.arc(px, py, 7, 0, 2 * Math.PI);
    g.fillStyle = '#fff';
    g.fill();
    g.lineWidth = 3;
    g.strokeStyle = '#3b5bdb';
    g.stroke();
    g.lineWidth = 1;
  }

  const face = $('pad-face');
  const decodePoint = coalesce(async () => {
    if (corners.some((c) => !c)) return;
    const z = mix(corners.map((c) => c.z), point.s, point.t, slerpBox.checked);
    setBlobImage(face, await api('api/decode', { z }, 'blob'));
    $('pad-caption').textContent = `mix at (${point.t.toFixed(2)}, ${point.s.toFixed(2)})`;
  });

  function moveTo(t, s) {
    point.t = Math.min(1, Math.max(0, t));
    point.s = Math.min(1, Math.max(0, s));
    draw();
    decodePoint();
  }

  function fromEvent(e) {
    const r = canvas.getBoundingClientRect();
    moveTo((e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
  }
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    canvas.setPointerCapture(e.pointerId);
    canvas.focus();
    fromEvent(e);
    e.preventDefault();
  });
  canvas.addEventListener('pointermove', (e) => {
    if (canvas.hasPointerCapture(e.pointerId)) fromEvent(e);
  });
  canvas.addEventListener('keydown', (e) => {
    const step = e.shiftKey ? 0.25 : 0.05;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (!(e.key in moves)) return;
    e.preventDefault();
    moveTo(point.t + moves[e.key][0], point.s + moves[e.key][1]);
  });
  slerpBox.addEventListener('change', () => decodePoint());

  /** Decodes each corner for its thumbnail, so the pad's corners are exactly the matrix's corners. */
  async function setCorners(zs, labels) {
    const blobs = await Promise.all(zs.map((z) => api('api/decode', { z }, 'blob')));
    const bitmaps = await Promise.all(blobs.map((b) => createImageBitmap(b)));
    zs.forEach((z, k) => { corners[k] = { z, bitmap: bitmaps[k], label: labels[k] }; });
    draw();
    decodePoint();
  }

  const selects = NAMES.map((n) => $(`pad-corner-${n.toLowerCase()}`));
  selects.forEach((sel, k) => ctx.fillFaceSelect(sel, ctx.faces, k));

  // A corner set from an uploaded face shows "your face" in its select until another face is picked there.
  const dropUpload = (sel) => { const o = sel.querySelector('option[value="upload"]'); if (o && sel.value !== 'upload') o.remove(); };
  selects.forEach((sel) => sel.addEventListener('change', () => dropUpload(sel)));

  const useFaces = () => withButton($('pad-use-faces'), 'Encoding…', async () => {
    const picks = selects.map((sel) => sel.value);
    const encoded = await Promise.all(picks.map((v) => (v === 'upload' && ctx.upload
      ? { z: ctx.upload.z } : api('api/encode', { face: Number(v) }))));
    await setCorners(encoded.map((e) => e.z), picks.map((p) => (p === 'upload' ? 'your face' : `test face #${p}`)));
  });
  const sample = () => withButton($('pad-sample'), 'Sampling…', async () => {
    const seed = Math.max(0, Math.floor(Number($('pad-seed').value) || 0));
    const { z } = await api('api/sample', { seed, count: 4 });
    await setCorners(z, z.map(() => `prior sample (seed ${seed})`));
  });
  $('pad-use-faces').addEventListener('click', useFaces);
  $('pad-sample').addEventListener('click', sample);

  $('pad-render').addEventListener('click', () => withButton($('pad-render'), 'Rendering…', async () => {
    if (corners.some((c) => !c)) throw new Error('corners not ready');
    const n = Number($('pad-n').value);
    const blob = await api('api/matrix', { corners: corners.map((c) => c.z), n, slerp: slerpBox.checked }, 'blob');
    setBlobImage($('pad-matrix'), blob);
  }));

  draw();
  if (ctx.faces.length >= 1) useFaces(); else sample();
  return {
    /** Replaces corner `k` (0..3 = A..D) with latent `z`, keeping the other three. */
    async setCorner(k, z, label) {
      try {
        const bitmap = await createImageBitmap(await api('api/decode', { z }, 'blob'));
        corners[k] = { z, bitmap, label };
        const sel = selects[k];
        if (!sel.querySelector('option[value="upload"]')) sel.add(new Option(label, 'upload'), 0);
        sel.value = 'upload';
        draw();
        decodePoint();
      } catch (_) { /* in #status */ }
    },
  };
}
