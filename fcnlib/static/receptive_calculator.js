// Receptive-field calculator: the recurrences of fcnlib.receptive, in the browser.
//
// An anywidget-style ES module: `render({ model, el })` draws sliders for a stack of
// convolution/pooling layers, the r/S/P readout and a drawing of the input pixels that one
// output unit sees. In a live kernel anywidget supplies `model` (synchronised with the Python
// widget fcnlib.calculator.ReceptiveFieldCalculator); in the static book a small host script
// supplies a plain object with the same get/set/on/save_changes methods. `geometry` is pure and
// exported on its own so that tests can compare it with fcnlib.

export const LIMITS = { k: [1, 7], s: [1, 4], p: [0, 6], d: [1, 4] };
const NAMES = { k: "kernel", s: "stride", p: "padding", d: "dilation" };
const NEW_LAYER = { k: 3, s: 1, p: 1, d: 1 };

/** Geometry after each layer: [{ r, S, P }], where layer i's entry includes layers 0..i. */
export function geometry(layers) {
  let r = 1, S = 1, P = 0;
  return layers.map(({ k, s, p, d }) => {
    r += d * (k - 1) * S; // the layer spans d*(k-1)+1 units of its input, S input pixels apart
    P += p * S;
    S *= s;
    return { r, S, P };
  });
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function slider(label, min, max, value, onInput) {
  const wrap = element("label", { style: "display:inline-flex;gap:4px;align-items:center;margin-right:10px" });
  const input = element("input", { type: "range", min, max, step: 1, "aria-label": label, style: "width:80px" });
  input.value = value;
  const shown = element("span", { style: "min-width:1.5em;font-family:monospace" }, String(value));
  input.addEventListener("input", () => {
    shown.textContent = input.value;
    onInput(Number(input.value));
  });
  wrap.append(label, input, shown);
  return { wrap, set(v) { input.value = v; shown.textContent = String(v); } };
}

/** The input interval [first, last] of output unit u of a stack, in the stack's input units. */
function interval(layers, u) {
  const g = layers.length ? geometry(layers).at(-1) : { r: 1, S: 1, P: 0 };
  return [-g.P + u * g.S, -g.P + u * g.S + g.r - 1];
}

/** SVG markup: one row of units per layer, those that reach output unit `unit` coloured. */
function drawing(layers, unit) {
  const all = [{ r: 1, S: 1, P: 0 }, ...geometry(layers)];
  const [first, last] = interval(layers, unit);
  const lo = Math.min(first, 0) - 2, hi = last + 3;
  const width = 640, left = 64, row = 24, height = row * all.length + 8;
  const scale = (width - left - 10) / (hi - lo);
  const x = (pixel) => left + (pixel - lo) * scale;
  const rect = (x0, y, w, fill) =>
    `<rect x="${x0.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${row - 6}" fill="${fill}" stroke="#999" stroke-width="0.5"/>`;
  const parts = all.map((g, level) => {
    const y = 4 + row * (all.length - 1 - level);
    const name = level === 0 ? "input" : level === layers.length ? "output" : `layer ${level}`;
    const label = `<text x="2" y="${y + 15}" font-size="12">${name}</text>`;
    // Units of this layer that reach the chosen output unit, in this layer's own indices.
    const [a, b] = interval(layers.slice(level), unit);
    const centre = (i) => -g.P + i * g.S + (g.r - 1) / 2;
    const cell = g.S * scale;
    if (cell < 2) return label + rect(x(centre(a)) - cell / 2, y, (b - a + 1) * cell, "#4c78a8");
    const iFirst = Math.ceil((lo - (g.r - 1) / 2 + g.P) / g.S);
    const iLast = Math.floor((hi - (g.r - 1) / 2 + g.P) / g.S);
    const cells = [];
    for (let i = iFirst; i <= iLast; i++) {
      const seen = i >= a && i <= b;
      const colour = level === layers.length ? "#f58518" : "#4c78a8";
      const fill = i < 0 ? (seen ? "#b7c7db" : "#eee") : seen ? colour : "#fff"; // i < 0: padding
      const x0 = x(centre(i)) - cell / 2;
      if (x0 >= left - 0.5 && x0 + cell <= width + 0.5) cells.push(rect(x0, y, cell, fill));
    }
    return label + cells.join("");
  });
  // The image starts at pixel 0: units to the left of this line are padding.
  const edge = `<line x1="${x(-0.5)}" x2="${x(-0.5)}" y1="0" y2="${height}" stroke="#c00" stroke-dasharray="3 2"/>`;
  return `<svg viewBox="0 0 ${width} ${height}" width="${width}" role="img" ` +
    `aria-label="units that reach the output unit">${parts.join("")}${edge}</svg>`;
}

function readout(table, summary, layers, unit) {
  const rows = geometry(layers);
  const head = element("tr");
  table.replaceChildren(head);
  for (const title of ["layer", "k", "s", "p", "d", "r", "S", "P"]) head.append(element("th", { style: "padding:0 8px" }, title));
  rows.forEach((g, i) => {
    const tr = element("tr");
    for (const value of [i + 1, layers[i].k, layers[i].s, layers[i].p, layers[i].d, g.r, g.S, g.P]) {
      tr.append(element("td", { style: "padding:0 8px;text-align:right;font-family:monospace" }, String(value)));
    }
    table.append(tr);
  });
  const g = rows.at(-1), [first, last] = interval(layers, unit);
  summary.textContent = `r = ${g.r}, S = ${g.S}, P = ${g.P}: output unit ${unit} sees input pixels ` +
    `${first} … ${last}, centred on ${first + (g.r - 1) / 2}` + (first < 0 ? " (pixels below 0 are padding)" : "");
}

function render({ model, el }) {
  const maxLayers = model.get("max_layers");
  let spare = model.get("layers").slice(); // layers hidden by the count slider come back as they were
  const root = element("div", { class: "fcnlib-rf-calculator", style: "font-size:14px;line-height:1.6" });
  const count = slider("layers", 1, maxLayers, model.get("layers").length, (n) => {
    const layers = model.get("layers");
    spare = [...layers, ...spare.slice(layers.length)];
    while (spare.length < n) spare.push({ ...NEW_LAYER });
    model.set("layers", spare.slice(0, n));
    model.save_changes();
  });
  const unit = slider("output unit", 0, 8, model.get("unit"), (u) => { model.set("unit", u); model.save_changes(); });
  const rows = Array.from({ length: maxLayers }, (_, i) => {
    const line = element("div", {}, "");
    line.append(element("strong", { style: "display:inline-block;width:5em" }, `layer ${i + 1}`));
    const sliders = {};
    for (const key of Object.keys(LIMITS)) {
      sliders[key] = slider(NAMES[key], ...LIMITS[key], NEW_LAYER[key], (v) => {
        const layers = model.get("layers").map((layer, j) => (j === i ? { ...layer, [key]: v } : layer));
        model.set("layers", layers);
        model.save_changes();
      });
      line.append(sliders[key].wrap);
    }
    return { line, sliders };
  });
  const summary = element("p", { style: "font-weight:bold" });
  const table = element("table", { style: "border-collapse:collapse" });
  const picture = element("div", { style: "overflow-x:auto" });
  root.append(count.wrap, unit.wrap, ...rows.map((r) => r.line), summary, picture, table);
  el.replaceChildren(root);

  const update = () => {
    const layers = model.get("layers"), u = model.get("unit");
    count.set(layers.length);
    unit.set(u);
    rows.forEach(({ line, sliders }, i) => {
      line.style.display = i < layers.length ? "" : "none";
      if (i < layers.length) for (const key of Object.keys(LIMITS)) sliders[key].set(layers[i][key]);
    });
    readout(table, summary, layers, u);
    picture.innerHTML = drawing(layers, u);
  };
  model.on("change:layers", update);
  model.on("change:unit", update);
  update();
  return () => {
    model.off("change:layers", update);
    model.off("change:unit", update);
  };
}

export default { render };
