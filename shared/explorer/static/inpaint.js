// Panel 5, inpainting: the chosen test face drawn large on a canvas, a mask painted with the pointer (brush of
// about 3 face pixels, shown in semi-transparent red), or a box / random mask chosen by the server.

const $ = (id) => document.getElementById(id);
const BRUSH = 3;  // brush radius in face pixels

export function setupInpaint(ctx) {
  const { info, api, setSrc, withButton, fmt } = ctx;
  const n = info.image_size;
  const canvas = $('inpaint-canvas');
  const g = canvas.getContext('2d');
  const faceSelect = $('inpaint-face');
  const modeSelect = $('inpaint-mask');
  const mask = new Uint8Array(n * n);  // 1 = missing, row-major
  let face = null;                      // the loaded test face (HTMLImageElement)

  // The backing store is a whole multiple of the face so each face pixel is a crisp block.
  const side = canvas.width;
  const scale = Math.max(1, Math.ceil((side * (window.devicePixelRatio || 1)) / n));
  canvas.style.width = canvas.style.height = `${side}px`;
  canvas.width = canvas.height = n * scale;

  const overlay = document.createElement('canvas');  // the mask at face resolution, scaled up when drawn
  overlay.width = overlay.height = n;
  const og = overlay.getContext('2d');
  const overlayData = og.createImageData(n, n);

  function draw() {
    g.imageSmoothingEnabled = false;
    g.fillStyle = '#e9ecf1';
    g.fillRect(0, 0, canvas.width, canvas.height);
    if (face) g.drawImage(face, 0, 0, canvas.width, canvas.height);
    if (modeSelect.value !== 'drawn') return;
    const px = overlayData.data;
    for (let i = 0; i < mask.length; i++) {
      px[4 * i] = 235; px[4 * i + 1] = 40; px[4 * i + 2] = 40;
      px[4 * i + 3] = mask[i] ? 140 : 0;
    }
    og.putImageData(overlayData, 0, 0);
    g.drawImage(overlay, 0, 0, canvas.width, canvas.height);
  }

  function coverage() {
    const missing = mask.reduce((a, b) => a + b, 0);
    const note = $('inpaint-coverage');
    note.classList.remove('warn');
    if (modeSelect.value === 'drawn') note.textContent = `${Math.round((100 * missing) / mask.length)} % of the face masked`;
    else note.textContent = `${modeSelect.value} mask, chosen by the server`;
    return missing;
  }

  function dab(fx, fy, value) {
    const r2 = BRUSH * BRUSH;
    for (let y = Math.max(0, Math.floor(fy - BRUSH)); y <= Math.min(n - 1, Math.ceil(fy + BRUSH)); y++) {
      for (let x = Math.max(0, Math.floor(fx - BRUSH)); x <= Math.min(n - 1, Math.ceil(fx + BRUSH)); x++) {
        const dx = x + 0.5 - fx;
        const dy = y + 0.5 - fy;
        if (dx * dx + dy * dy <= r2) mask[y * n + x] = value;
      }
    }
  }

  let last = null;  // the previous brush position in face pixels, while painting
  function facePoint(e) {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * n, ((e.clientY - r.top) / r.height) * n];
  }
  function stroke(e) {
    const [fx, fy] = facePoint(e);
    const value = e.shiftKey ? 0 : 1;
    // Fill the gap between pointer events so fast strokes stay continuous.
    const [lx, ly] = last || [fx, fy];
    const steps = Math.max(1, Math.ceil(Math.hypot(fx - lx, fy - ly) / 0.5));
    for (let i = 1; i <= steps; i++) dab(lx + ((fx - lx) * i) / steps, ly + ((fy - ly) * i) / steps, value);
    last = [fx, fy];
    draw();
    coverage();
  }
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    if (modeSelect.value !== 'drawn') modeSelect.value = 'drawn';
    last = null;
    stroke(e);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (canvas.hasPointerCapture(e.pointerId)) stroke(e);
  });
  const endStroke = () => { last = null; };
  canvas.addEventListener('pointerup', endStroke);
  canvas.addEventListener('pointercancel', endStroke);

  function loadFace() {
    const f = ctx.faces.find((x) => String(x.index) === faceSelect.value);
    if (!f) { draw(); return; }
    const img = new Image();
    img.onload = () => { face = img; draw(); };
    img.src = f.image;
  }

  ctx.fillFaceSelect(faceSelect, ctx.faces);
  faceSelect.addEventListener('change', loadFace);
  modeSelect.addEventListener('change', () => { draw(); coverage(); });
  $('inpaint-clear').addEventListener('click', () => {
    mask.fill(0);
    modeSelect.value = 'drawn';
    draw();
    coverage();
  });

  $('inpaint-run').addEventListener('click', () => withButton($('inpaint-run'), 'Inpainting…', async () => {
    const body = {
      face: Number(faceSelect.value),
      mask: modeSelect.value,
      method: $('inpaint-method').value,
      seed: 0,
    };
    if (body.mask === 'drawn') {
      if (!coverage()) {
        const note = $('inpaint-coverage');
        note.textContent = 'Paint the missing region first, or choose a box or random mask.';
        note.classList.add('warn');
        return;
      }
      body.mask_bits = Array.from(mask).join('');
    }
    const { images, psnr, missing_fraction: missing } = await api('api/inpaint', body);
    setSrc($('inpaint-masked'), images.masked);
    setSrc($('inpaint-mean'), images.mean_fill);
    setSrc($('inpaint-result'), images.result);
    $('inpaint-psnr').textContent = `masked-region PSNR: VAE ${fmt(psnr.result, 1)} dB vs mean fill `
      + `${fmt(psnr.mean_fill, 1)} dB (${Math.round(100 * missing)} % missing, ${body.method})`;
  }));

  loadFace();
  coverage();
}
