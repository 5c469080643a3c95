r"""The explorer page's HTML, CSS and JavaScript (:mod:`collabemb.explorer` fills in its data).

One document, nothing fetched from elsewhere: the map is drawn on a canvas by the script below,
and a Content-Security-Policy allows no source but the page itself (and, for a page served by
``collabemb serve``, requests to its own origin). The script reads the JSON block
``#explorer-data``; everything it shows of that data goes through ``textContent`` or canvas
text, never ``innerHTML``.

Elements a test (or a person) can read back: ``#search`` / ``#search-results``, ``#map``,
``#neighbours`` (``<li data-item="ID" data-score="...">``; the list carries ``data-for`` = the
item's ID and ``data-source`` = ``precomputed``, ``browser``, ``server``, ``none`` or ``error``
once filled), ``#user-id`` / ``#user-recs`` (``data-for`` = the user once filled), ``#newuser-add``,
``#newuser-ratings``, ``#newuser-go`` / ``#newuser-recs`` (``data-ready`` once filled), and
``window.explorer.screenOf(id)``: an item's position on the screen.
"""

from __future__ import annotations

_MARK = "@EXPLORER_DATA@"


def render_page(data_json: str) -> str:
    """The page with ``data_json`` (JSON already escaped for a ``<script>`` element) as its data."""
    head, tail = _PAGE.split(_MARK)
    return head + data_json + tail


_CSS = """
:root { --fg: #1d2125; --muted: #5f6b76; --line: #dde1e5; --bg: #f4f5f7; --link: #1b5fad;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; color: var(--fg); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
header { padding: 10px 18px; background: #fff; border-bottom: 1px solid var(--line); display: flex; gap: 16px;
  align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 17px; margin: 0; }
h2 { font-size: 14px; margin: 0 0 8px; }
#summary { margin: 0; color: var(--muted); }
main { display: grid; grid-template-columns: minmax(0, 1fr) 380px; gap: 14px; padding: 14px; align-items: start; }
@media (max-width: 980px) { main { grid-template-columns: minmax(0, 1fr); } }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; min-width: 0; }
aside { display: flex; flex-direction: column; gap: 14px; min-width: 0; }
.toolbar { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; color: var(--muted); }
.toolbar label { color: var(--fg); }
#map-wrap { position: relative; }
#map { width: 100%; height: min(74vh, 780px); min-height: 340px; display: block; border: 1px solid var(--line);
  border-radius: 6px; background: #fff; cursor: grab; touch-action: none; }
#tooltip { position: absolute; pointer-events: none; background: rgba(255, 255, 255, .97); border: 1px solid #c9ced3;
  border-radius: 6px; padding: 6px 8px; max-width: 320px; box-shadow: 0 2px 10px rgba(0, 0, 0, .13); font-size: 12px; z-index: 2; }
#tooltip strong { display: block; font-size: 13px; }
.tip-meta, .note, .sub, .empty { color: var(--muted); font-size: 12px; }
.note { margin: 6px 0; }
#legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 8px; font-size: 12px; color: var(--muted); align-items: center; }
.legend-title { color: var(--fg); font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; vertical-align: -1px; }
.ring { background: #fff; border: 2.5px solid; width: 12px; height: 12px; }
.gradient { display: inline-block; width: 150px; height: 10px; border-radius: 3px; vertical-align: -1px; margin: 0 6px; }
input, select, button { font: inherit; }
input[type=search], input[type=text] { width: 100%; padding: 6px 8px; border: 1px solid #c3c9cf; border-radius: 6px; }
input[type=number] { width: 4.6em; padding: 2px 4px; border: 1px solid #c3c9cf; border-radius: 4px; }
button { padding: 4px 10px; border: 1px solid #b9c0c7; border-radius: 6px; background: #f8f9fa; cursor: pointer; }
button:disabled { cursor: default; opacity: .55; }
button.item-link { background: none; border: 0; padding: 0; color: var(--link); text-align: left; cursor: pointer; }
button.item-link:hover { text-decoration: underline; }
button.item-link:disabled { color: var(--fg); opacity: 1; text-decoration: none; }
ul, ol { margin: 6px 0 0; }
ul { list-style: none; padding-left: 0; }
ol { padding-left: 2em; }
li { padding: 2px 0; border-bottom: 1px solid #f0f2f4; overflow-wrap: anywhere; }
li .line { display: flex; gap: 8px; align-items: baseline; justify-content: space-between; }
li .line .item-link { flex: 1 1 auto; min-width: 0; }
li .score, li .sub { flex: none; color: var(--muted); font-variant-numeric: tabular-nums; }
#search-results { max-height: 230px; overflow: auto; }
#user-seen { max-height: 160px; overflow: auto; }
.row { display: flex; gap: 8px; align-items: center; margin-top: 6px; flex-wrap: wrap; }
.row input[type=text] { flex: 1 1 8em; width: auto; }
#selected strong { display: block; }
#newuser-ratings li { display: flex; gap: 8px; align-items: center; }
#newuser-ratings li .item-link { flex: 1; }
.needs-server { background: #fff7e6; border: 1px solid #f1d9a6; border-radius: 6px; padding: 6px 8px; font-size: 12px; }
.hint { margin: 6px 0 0; color: var(--muted); font-size: 12px; }
"""

_BODY = """
<header>
  <h1>collabemb explorer</h1>
  <p id="summary"></p>
</header>
<main>
  <section id="map-panel" aria-label="item map">
    <div class="toolbar">
      <label>Colour by <select id="colour-by"></select></label>
      <span id="map-axes"></span>
      <button id="reset-view" type="button">Reset view</button>
    </div>
    <div id="map-wrap">
      <canvas id="map" role="img" aria-label="map of the item embeddings"></canvas>
      <div id="tooltip" hidden></div>
    </div>
    <div id="legend"><span id="legend-colours"></span><span id="legend-marks"></span></div>
    <p class="hint">Hover a point for its title, click it for its neighbours; drag to pan, scroll to zoom.</p>
  </section>
  <aside>
    <section aria-label="find an item">
      <h2>Find an item</h2>
      <input id="search" type="search" placeholder="part of a title, or an ID" autocomplete="off">
      <ul id="search-results"></ul>
    </section>
    <section aria-label="neighbours">
      <h2>Neighbours</h2>
      <div id="selected" class="note">Pick an item on the map or in the search.</div>
      <label>Similarity <select id="metric"></select></label>
      <p id="neighbours-note" class="note"></p>
      <ol id="neighbours"></ol>
    </section>
    <section id="user-panel" aria-label="a user's recommendations">
      <h2>A user's recommendations</h2>
      <form id="user-form" class="row">
        <input id="user-id" type="text" placeholder="user ID" autocomplete="off">
        <label>top <input id="user-k" type="number" value="10" min="1" max="1000"></label>
        <button id="user-go" type="submit">Recommend</button>
      </form>
      <p id="user-status" class="note"></p>
      <ol id="user-recs"></ol>
      <details><summary id="user-seen-summary">Rated in training</summary><ul id="user-seen"></ul></details>
    </section>
    <section id="newuser-panel" aria-label="a new user">
      <h2>A new user</h2>
      <p class="note">Find items above, add each with a rating, then ask for recommendations (a fold-in).</p>
      <button id="newuser-add" type="button" disabled>Add the selected item</button>
      <ul id="newuser-ratings"></ul>
      <div class="row">
        <button id="newuser-go" type="button">Recommend</button>
        <button id="newuser-clear" type="button">Clear</button>
        <label>top <input id="newuser-k" type="number" value="10" min="1" max="1000"></label>
      </div>
      <p id="newuser-status" class="note"></p>
      <ol id="newuser-recs"></ol>
    </section>
  </aside>
</main>
"""

_SCRIPT = r"""
"use strict";
(() => {
// Integers of 16 digits or more lose precision as JavaScript numbers: quote them (outside strings)
// before parsing, so raw IDs stay exact; String(id) is then an ID's key everywhere.
function quoteBigInts(text) {
  let out = "", last = 0, i = 0, inString = false;
  while (i < text.length) {
    const c = text[i];
    if (inString) { if (c === "\\") i += 2; else { if (c === '"') inString = false; i++; } continue; }
    if (c === '"') { inString = true; i++; continue; }
    if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i + 1;
      while (j < text.length && "0123456789.eE+-".includes(text[j])) j++;
      if (/^-?\d{16,}$/.test(text.slice(i, j))) { out += text.slice(last, i) + '"' + text.slice(i, j) + '"'; last = j; }
      i = j; continue;
    }
    i++;
  }
  return out + text.slice(last);
}
const D = JSON.parse(quoteBigInts(document.getElementById("explorer-data").textContent));
const SERVER = D.mode === "server", ITEMS = D.items, N = ITEMS.id.length, NB = D.neighbours;
const KEY = ITEMS.id.map(String), KEY_LC = KEY.map((k) => k.toLowerCase());
const POS = new Map(KEY.map((k, i) => [k, i]));
const TITLE = KEY.map((k, i) => (D.metadata.title && D.metadata.title[i] != null ? String(D.metadata.title[i]) : "item " + k));
const TITLE_LC = TITLE.map((t) => t.toLowerCase());
const COUNT = ITEMS.count, X = ITEMS.x, Y = ITEMS.y;
const PAIRS = D.model.y_range ? ["rating", "ratings"] : ["interaction", "interactions"];
const pairs = (n) => n + " " + PAIRS[n === 1 ? 0 : 1];
const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = text; if (cls) e.className = cls; return e; };
const fmt = (v, d = 3) => (v == null ? "-" : Number(v).toFixed(d));
const short = (t, n) => (t.length <= n ? t : t.slice(0, n - 1) + "\u2026");
const describe = (i) => "ID " + KEY[i] + (COUNT ? " \u00b7 " + pairs(COUNT[i]) : "") + " \u00b7 bias " + fmt(ITEMS.bias[i]);

// ---- the map ---------------------------------------------------------------------------
const canvas = $("map"), ctx = canvas.getContext("2d");
const R = N <= 3000 ? 3 : N <= 30000 ? 2 : 1.3, PAD = 30, MAX_LABELS = 18;
let W = 0, H = 0, view = null, selected = -1, nbr = [], overlay = null;
let COLOUR = new Array(N).fill("#4c78a8");
const PRIORITY = COUNT ? COUNT.slice() : X.map((x, i) => Math.hypot(x, Y[i]));
function fitView() {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < N; i++) { x0 = Math.min(x0, X[i]); x1 = Math.max(x1, X[i]); y0 = Math.min(y0, Y[i]); y1 = Math.max(y1, Y[i]); }
  const dx = x1 - x0 || 1, dy = y1 - y0 || 1;
  view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale: Math.min((W - 2 * PAD) / dx, (H - 2 * PAD) / dy) };
}
const sx = (i) => W / 2 + (X[i] - view.cx) * view.scale;
const sy = (i) => H / 2 - (Y[i] - view.cy) * view.scale;
const inView = (x, y) => x >= 0 && y >= 0 && x <= W && y <= H;
function resize() {
  const r = canvas.getBoundingClientRect();
  if (r.width < 10 || r.height < 10) return;
  const dpr = window.devicePixelRatio || 1, first = !view;
  W = r.width; H = r.height;
  canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (first) fitView();
  draw();
}
function marks(list, colour, radius, filled) {
  ctx.lineWidth = 2.5;
  for (const i of list) {
    const x = sx(i), y = sy(i);
    ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI);
    if (filled) { ctx.fillStyle = colour; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.stroke(); ctx.lineWidth = 2.5; continue; }
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 4.5; ctx.stroke();
    ctx.strokeStyle = colour; ctx.lineWidth = 2.5; ctx.stroke();
  }
}
function draw() {
  if (!view) return;
  ctx.clearRect(0, 0, W, H);
  const ox = W / 2 - view.cx * view.scale, oy = H / 2 + view.cy * view.scale;
  ctx.strokeStyle = "#e9ecef"; ctx.lineWidth = 1; ctx.beginPath();
  ctx.moveTo(ox, 0); ctx.lineTo(ox, H); ctx.moveTo(0, oy); ctx.lineTo(W, oy); ctx.stroke();
  ctx.globalAlpha = selected >= 0 || overlay ? 0.3 : 0.85;
  const paths = new Map();
  for (let i = 0; i < N; i++) {
    const x = sx(i), y = sy(i);
    if (x < -R || y < -R || x > W + R || y > H + R) continue;
    let p = paths.get(COLOUR[i]);
    if (!p) paths.set(COLOUR[i], (p = new Path2D()));
    p.moveTo(x + R, y); p.arc(x, y, R, 0, 2 * Math.PI);
  }
  for (const [c, p] of paths) { ctx.fillStyle = c; ctx.fill(p); }
  ctx.globalAlpha = 1;
  if (overlay) { marks(overlay.seen, "#343a40", 3.4, true); marks(overlay.rated, "#7048e8", 7); marks(overlay.recs, "#2b8a3e", 7); }
  marks(nbr, "#e8590c", 7);
  if (selected >= 0) { marks([selected], COLOUR[selected], 5, true); marks([selected], "#111", 10); }
  drawLabels();
  ctx.fillStyle = "#7b858e"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right";
  ctx.fillText(D.map.axes[0] + " \u2192", W - 8, H - 8);
  ctx.save(); ctx.translate(14, 8); ctx.rotate(-Math.PI / 2); ctx.fillText(D.map.axes[1] + " \u2192", 0, 0); ctx.restore();
  ctx.textAlign = "left";
}
// Labels: the highlighted items first, then the most-rated item of each cell of a 6 x 4 grid (so
// they spread over the map instead of piling up in its crowded centre), never overlapping.
function drawLabels() {
  const placed = [];
  const free = (b) => b[0] >= 2 && b[1] >= 2 && b[2] <= W - 2 && b[3] <= H - 22 && !placed.some((p) => b[0] < p[2] && b[2] > p[0] && b[1] < p[3] && b[3] > p[1]);
  const label = (i, strong) => {
    const x = sx(i), y = sy(i), text = short(TITLE[i], 32);
    if (!inView(x, y)) return false;
    ctx.font = (strong ? "600 " : "") + "11px system-ui, sans-serif";
    const w = ctx.measureText(text).width;
    for (const [dx, dy, side] of [[8, -5, 0], [-8, -5, 1], [8, 14, 0], [-8, 14, 1], [0, -11, 0.5], [0, 20, 0.5]]) {
      const x0 = x + dx - side * w, box = [x0 - 2, y + dy - 10, x0 + w + 2, y + dy + 3];
      if (!free(box)) continue;
      placed.push(box);
      ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,255,255,.92)"; ctx.strokeText(text, x0, y + dy);
      ctx.fillStyle = strong ? "#111" : "#48525c"; ctx.fillText(text, x0, y + dy);
      return true;
    }
    return false;
  };
  const taken = new Set((selected >= 0 ? [selected] : []).concat(nbr, overlay ? overlay.rated.concat(overlay.recs.slice(0, 10)) : []));
  taken.forEach((i) => label(i, true));
  const cells = new Map();
  for (let i = 0; i < N; i++) {
    const x = sx(i), y = sy(i);
    if (!inView(x, y) || taken.has(i)) continue;
    const cell = Math.min(5, Math.floor((x / W) * 6)) + 6 * Math.min(3, Math.floor((y / H) * 4));
    const best = cells.get(cell) || [];
    best.push(i); best.sort((a, b) => PRIORITY[b] - PRIORITY[a]); best.length = Math.min(best.length, 2);
    cells.set(cell, best);
  }
  const byPriority = (a, b) => PRIORITY[b] - PRIORITY[a];  // each cell's best first, then each cell's second
  const general = [...cells.values()].map((c) => c[0]).sort(byPriority).concat([...cells.values()].filter((c) => c[1] !== undefined).map((c) => c[1]).sort(byPriority));
  let shown = 0;
  const limit = selected >= 0 || overlay ? 6 : MAX_LABELS;
  for (const i of general) if (shown < limit && label(i, false)) shown++;
}
function nearest(mx, my, radius) {
  let best = -1, bd = radius * radius;
  for (let i = 0; i < N; i++) { const d = (sx(i) - mx) ** 2 + (sy(i) - my) ** 2; if (d < bd) { bd = d; best = i; } }
  return best;
}
function showTip(i, mx, my) {
  const tip = $("tooltip");
  canvas.style.cursor = i < 0 ? "grab" : "pointer";
  if (i < 0) { tip.hidden = true; return; }
  tip.replaceChildren(el("strong", TITLE[i]), el("div", describe(i), "tip-meta"));
  for (const c of D.metadata.columns) { const v = D.metadata.values[c][i]; if (v != null && v !== "") tip.append(el("div", c + ": " + v)); }
  tip.hidden = false;
  const left = mx + 14 + tip.offsetWidth > W ? mx - 14 - tip.offsetWidth : mx + 14;
  tip.style.left = Math.max(0, left) + "px"; tip.style.top = Math.max(0, Math.min(my + 12, H - tip.offsetHeight)) + "px";
}
const local = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
let drag = null;
canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy, moved: false }; });
window.addEventListener("mousemove", (e) => {
  if (drag) {
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) { view.cx = drag.cx - dx / view.scale; view.cy = drag.cy + dy / view.scale; $("tooltip").hidden = true; draw(); }
  } else if (e.target === canvas) { const [mx, my] = local(e); showTip(nearest(mx, my, 8), mx, my); }
});
window.addEventListener("mouseup", (e) => {
  const click = drag && !drag.moved && e.target === canvas;
  drag = null;
  if (click) { const [mx, my] = local(e), i = nearest(mx, my, 8); if (i >= 0) select(i); }
});
canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const [mx, my] = local(e), wx = view.cx + (mx - W / 2) / view.scale, wy = view.cy - (my - H / 2) / view.scale;
  view.scale *= Math.exp(-e.deltaY * 0.0015);
  view.cx = wx - (mx - W / 2) / view.scale; view.cy = wy + (my - H / 2) / view.scale;
  draw();
}, { passive: false });
$("reset-view").addEventListener("click", () => { fitView(); draw(); });

// ---- colours and the legend -----------------------------------------------------------------
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"];
const OTHER = "#8c8c8c", NONE = "#d3d3d3";
function ramp(t) {
  const s = Math.max(0, Math.min(1, t)) * 4, j = Math.min(3, Math.floor(s)), f = s - j, a = VIRIDIS[j], b = VIRIDIS[j + 1];
  return "rgb(" + a.map((v, c) => Math.round(v + (b[c] - v) * f)).join(",") + ")";
}
const swatch = (colour, text, ring) => {
  const s = el("span"), dot = el("span", null, ring ? "swatch ring" : "swatch");
  if (ring) dot.style.borderColor = colour; else dot.style.background = colour;
  s.append(dot, text); return s;
};
function colourBy(c) {
  const legend = $("legend-colours");
  legend.replaceChildren(el("span", c.label + ": ", "legend-title"));
  if (c.kind === "categorical") {
    const n = c.categories.map(() => 0), named = Math.min(PALETTE.length, c.categories.length);
    c.codes.forEach((k) => n[k]++);
    const colourOf = (k) => (c.categories[k] === "(none)" ? NONE : k < named ? PALETTE[k] : OTHER);
    COLOUR = c.codes.map(colourOf);
    c.categories.forEach((name, k) => { if (k < named || name === "(none)") legend.append(swatch(colourOf(k), name + " (" + n[k] + ")"), " "); });
    const rest = c.categories.map((name, k) => (k >= named && name !== "(none)" ? n[k] : 0)).reduce((a, b) => a + b, 0);
    if (rest) legend.append(swatch(OTHER, "other (" + rest + ")"));
  } else {
    const raw = c.source === "bias" ? ITEMS.bias : c.source === "count" ? COUNT.map(Math.log1p) : D.metadata.values[c.name];
    const vals = raw.filter((v) => v != null).sort((a, b) => a - b), q = (p) => vals[Math.round(p * (vals.length - 1))];
    const lo = q(0.02), hi = q(0.98), span = hi - lo || 1;
    COLOUR = raw.map((v) => (v == null ? NONE : ramp((v - lo) / span)));
    const shown = (v) => (c.source === "count" ? String(Math.round(Math.expm1(v))) : fmt(v, Math.abs(hi - lo) >= 20 ? 0 : 2));
    const bar = el("span", null, "gradient");
    bar.style.background = "linear-gradient(to right, " + VIRIDIS.map((v) => "rgb(" + v.join(",") + ")").join(", ") + ")";
    legend.append(shown(lo), bar, shown(hi), el("span", " (2nd to 98th percentile; beyond: the end colours)", "sub"));
  }
  draw();
}
function legendMarks() {
  const m = $("legend-marks"), parts = [];
  if (selected >= 0) parts.push(swatch("#111", "selected", true));
  if (nbr.length) parts.push(swatch("#e8590c", "neighbours", true));
  if (overlay && overlay.recs.length) parts.push(swatch("#2b8a3e", "recommended", true));
  if (overlay && overlay.seen.length) parts.push(swatch("#343a40", "rated in training"));
  if (overlay && overlay.rated.length) parts.push(swatch("#7048e8", "the new user's ratings", true));
  m.replaceChildren(...parts.flatMap((p) => [p, " "]));
}
function redraw() { legendMarks(); draw(); }

// ---- search, selection, neighbours ----------------------------------------------------------
const line = (...parts) => { const d = el("div", null, "line"); d.append(...parts); return d; };
function itemList(ol, rows) {
  ol.replaceChildren();
  for (const r of rows) {
    const i = POS.get(r.key), li = el("li");
    li.dataset.item = r.key; li.dataset.score = String(r.score);
    const name = i !== undefined ? TITLE[i] : r.title != null ? String(r.title) : "item " + r.key;
    const b = el("button", name, "item-link");
    b.type = "button";
    if (i !== undefined) b.addEventListener("click", () => select(i)); else b.disabled = true;
    li.append(line(b, el("span", fmt(r.score), "score")));
    ol.append(li);
  }
}
const SEARCH_LIMIT = 30;
function search() {
  const q = $("search").value.trim(), list = $("search-results");
  list.replaceChildren();
  if (!q) return;
  const ql = q.toLowerCase(), exact = POS.get(q), hits = [], ids = D.model.id_type.item === "str";
  for (let i = 0; i < N; i++) if (i !== exact && (TITLE_LC[i].includes(ql) || (ids && KEY_LC[i].includes(ql)))) hits.push(i);
  hits.sort((a, b) => PRIORITY[b] - PRIORITY[a] || a - b);
  const shown = (exact !== undefined ? [exact] : []).concat(hits.slice(0, SEARCH_LIMIT));
  for (const i of shown) {
    const li = el("li"), b = el("button", TITLE[i], "item-link");
    li.dataset.item = KEY[i]; b.type = "button";
    b.addEventListener("click", () => select(i));
    li.append(line(b, el("span", "ID " + KEY[i] + (COUNT ? " \u00b7 " + COUNT[i] : ""), "sub")));
    list.append(li);
  }
  if (!shown.length) list.append(el("li", "No item matches.", "empty"));
  else if (hits.length > SEARCH_LIMIT) list.append(el("li", hits.length - SEARCH_LIMIT + " more: type more of the title.", "empty"));
}
$("search").addEventListener("input", search);
$("search").addEventListener("keydown", (e) => {
  const first = $("search-results").querySelector("li[data-item] button");
  if (e.key === "Enter" && first) first.click();
});
function select(i) {
  selected = i;
  const box = $("selected");
  box.replaceChildren(el("strong", TITLE[i]), el("span", describe(i), "sub"));
  for (const c of D.metadata.columns) { const v = D.metadata.values[c][i]; if (v != null && v !== "") box.append(el("div", c + ": " + v, "sub")); }
  $("newuser-add").disabled = !SERVER;
  $("newuser-add").textContent = "Add \u201c" + short(TITLE[i], 28) + "\u201d";
  neighbours();
}
const TOP = new Map(NB.top.map((p, j) => [p, j]));
let VEC = null, NORM = null, asked = 0;
function decodeVectors() {
  const bin = atob(D.vectors.base64), view = new DataView(new ArrayBuffer(bin.length)), F = D.vectors.n_factors;
  for (let j = 0; j < bin.length; j++) view.setUint8(j, bin.charCodeAt(j));
  VEC = new Float32Array(bin.length / 4); NORM = new Float64Array(N);
  for (let j = 0; j < VEC.length; j++) VEC[j] = view.getFloat32(4 * j, true);
  for (let i = 0; i < N; i++) { let s = 0; for (let f = 0; f < F; f++) s += VEC[i * F + f] ** 2; NORM[i] = Math.sqrt(s); }
}
// An exact search over the embedded float32 vectors: what an exact FAISS index answers.
function computeNeighbours(i, metric, k) {
  if (!VEC) decodeVectors();
  const F = D.vectors.n_factors, score = new Float64Array(N), order = [];
  for (let j = 0; j < N; j++) {
    let s = 0;
    for (let f = 0; f < F; f++) s += VEC[i * F + f] * VEC[j * F + f];
    score[j] = metric === "cosine" ? (NORM[i] && NORM[j] ? s / (NORM[i] * NORM[j]) : 0) : s;
    if (j !== i) order.push(j);
  }
  order.sort((a, b) => score[b] - score[a] || a - b);
  return order.slice(0, k).map((j) => ({ key: KEY[j], score: Math.round(score[j] * 1e6) / 1e6 }));
}
async function neighbours() {
  const i = selected, metric = $("metric").value, ol = $("neighbours"), note = $("neighbours-note"), token = ++asked;
  let rows = [], source, text;
  ol.removeAttribute("data-for"); ol.setAttribute("aria-busy", "true");
  try {
    if (SERVER) {
      note.textContent = "Asking the server\u2026";
      const r = await getJSON("v1/similar?item=" + encodeURIComponent(KEY[i]) + "&k=" + NB.k);
      rows = r.results.map((x) => ({ key: String(x.item), score: x.score, title: x.title }));
      [source, text] = ["server", NB.metric + " similarity, from the server (GET v1/similar)."];
    } else if (NB.metrics[metric] && TOP.has(i)) {
      const m = NB.metrics[metric], j = TOP.get(i);
      rows = m.items[j].map((p, r) => ({ key: KEY[p], score: m.scores[j][r] }));
      [source, text] = ["precomputed", metric + " similarity, precomputed with " + m.source + " for " + NB.rule + "."];
    } else if (D.vectors) {
      rows = computeNeighbours(i, metric, NB.k);
      [source, text] = ["browser", metric + " similarity, computed in this page from the embedded vectors (an exact search)."];
    } else {
      [source, text] = ["none", "This item's neighbours are not precomputed in this static page (only those of " + NB.rule + " are); collabemb serve answers every item."];
    }
  } catch (err) { [source, text] = ["error", err.message]; }
  if (token !== asked) return;
  itemList(ol, rows);
  nbr = rows.map((r) => POS.get(r.key)).filter((p) => p !== undefined);
  note.textContent = text;
  ol.dataset.source = source; ol.dataset.for = KEY[i]; ol.setAttribute("aria-busy", "false");
  redraw();
}
$("metric").addEventListener("change", () => { if (selected >= 0) neighbours(); });

// ---- the server: a user, a new user ---------------------------------------------------------
async function getJSON(url, body) {
  const opts = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) Object.assign(opts, { method: "POST", body, headers: { Accept: "application/json", "Content-Type": "application/json" } });
  const resp = await fetch(url, opts), text = await resp.text();
  let data = null;
  try { data = JSON.parse(quoteBigInts(text)); } catch (e) { data = null; }
  if (!resp.ok) throw new Error(data && data.error && data.error.message ? data.error.message : "HTTP " + resp.status + " from " + url);
  if (data === null) throw new Error("The answer of " + url + " is not JSON.");
  return data;
}
const listK = (input) => Math.max(1, Math.min(1000, Math.round(Number(input.value)) || 10));
const rowsOf = (results) => results.map((x) => ({ key: String(x.item), score: x.score, title: x.title }));
const positions = (keys) => keys.map((k) => POS.get(String(k))).filter((p) => p !== undefined);
$("user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = $("user-id").value.trim(), ol = $("user-recs"), status = $("user-status"), seenList = $("user-seen");
  if (!user) { status.textContent = "Enter a user ID."; return; }
  ol.removeAttribute("data-for"); status.textContent = "Asking the server\u2026";
  try {
    const q = "user=" + encodeURIComponent(user);
    const [rec, seen] = await Promise.all([getJSON("v1/recommend?" + q + "&k=" + listK($("user-k"))), getJSON("v1/seen?" + q)]);
    const rows = rowsOf(rec.results), seenPos = positions(seen.items);
    itemList(ol, rows);
    seenList.replaceChildren(...seenPos.map((p) => el("li", TITLE[p])));
    $("user-seen-summary").textContent = "Rated in training: " + seen.items.length + " items (dark dots on the map)";
    overlay = { seen: seenPos, recs: positions(rows.map((r) => r.key)), rated: [] };
    status.textContent = "User " + user + " (" + rec.query.source + "): the top " + rows.length + " they have not rated, in green on the map.";
    ol.dataset.for = user;
  } catch (err) {
    status.textContent = err.message; itemList(ol, []); seenList.replaceChildren(); overlay = null;
  }
  redraw();
});
const picks = new Map();
const [LO, HI] = D.model.y_range || [0, 1], TOP_RATING = Math.floor(HI) >= LO ? Math.floor(HI) : HI;
const idJSON = (key) => (D.model.id_type.item === "int" ? key : JSON.stringify(key));
$("newuser-add").addEventListener("click", () => {
  const i = selected;
  if (i < 0 || picks.has(i)) return;
  const li = el("li"), name = el("button", TITLE[i], "item-link"), input = el("input"), remove = el("button", "\u00d7");
  li.dataset.item = KEY[i];
  Object.assign(input, { type: "number", className: "rating", min: LO, max: HI, step: "any", value: TOP_RATING });
  input.setAttribute("aria-label", "rating of " + TITLE[i]);
  name.type = "button"; remove.type = "button"; remove.title = "remove";
  name.addEventListener("click", () => select(i));
  remove.addEventListener("click", () => { picks.delete(i); li.remove(); });
  li.append(name, input, remove);
  $("newuser-ratings").append(li);
  picks.set(i, input);
});
$("newuser-clear").addEventListener("click", () => {
  picks.clear(); $("newuser-ratings").replaceChildren(); itemList($("newuser-recs"), []);
  $("newuser-status").textContent = ""; overlay = null; redraw();
});
$("newuser-go").addEventListener("click", async () => {
  const ol = $("newuser-recs"), status = $("newuser-status"), parts = [];
  for (const [i, input] of picks) {
    const r = Number(input.value);
    if (input.value === "" || !Number.isFinite(r)) { status.textContent = "Give " + TITLE[i] + " a number as its rating."; return; }
    parts.push('{"item":' + idJSON(KEY[i]) + ',"rating":' + r + "}");
  }
  ol.removeAttribute("data-ready"); status.textContent = "Asking the server\u2026";
  try {
    const r = await getJSON("v1/recommend", '{"ratings":[' + parts.join(",") + '],"k":' + listK($("newuser-k")) + "}");
    const rows = rowsOf(r.results);
    itemList(ol, rows);
    overlay = { seen: [], recs: positions(rows.map((x) => x.key)), rated: [...picks.keys()] };
    const ignored = r.query.n_ignored ? ", " + r.query.n_ignored + " of unknown items ignored" : "";
    status.textContent = "From " + (r.query.n_ratings != null ? r.query.n_ratings : parts.length) + " ratings (" + r.query.source + ignored + "): in green on the map.";
    ol.dataset.ready = "true";
  } catch (err) { status.textContent = err.message; itemList(ol, []); }
  redraw();
});

// ---- start ----------------------------------------------------------------------------------
const m = D.model;
$("summary").textContent = N + " items \u00b7 " + m.family + " model, " + m.n_factors + " factors \u00b7 " + m.n_users + " users \u00b7 " +
  (SERVER ? "served by collabemb serve" : "static page: no server, nothing fetched");
$("map-axes").textContent = D.map.method + " of the item vectors";
const metrics = SERVER ? [NB.metric] : [...new Set(Object.keys(NB.metrics).concat(D.vectors ? ["cosine", "dot"] : []))];
for (const name of metrics) $("metric").append(el("option", name));
$("metric").disabled = metrics.length < 2;
const choose = $("colour-by");
D.colourings.forEach((c, j) => { const o = el("option", c.label); o.value = String(j); choose.append(o); });
choose.addEventListener("change", () => colourBy(D.colourings[Number(choose.value)]));
const preferred = D.colourings.findIndex((c) => c.kind === "categorical");
choose.value = String(preferred >= 0 ? preferred : D.colourings.length - 1);
if (!SERVER) {
  for (const id of ["user-id", "user-k", "user-go", "newuser-add", "newuser-go", "newuser-clear", "newuser-k"]) $(id).disabled = true;
  for (const id of ["user-form", "newuser-ratings"]) {
    const p = el("p", "Needs the server: collabemb serve ARTIFACT answers this page at / with users' recommendations and fold-ins.", "needs-server");
    $(id).before(p);
  }
}
new ResizeObserver(resize).observe(canvas);
resize();
colourBy(D.colourings[Number(choose.value)]);
window.explorer = {
  screenOf: (id) => { const i = POS.get(String(id)), r = canvas.getBoundingClientRect(); return [r.left + sx(i), r.top + sy(i)]; },
  select: (id) => select(POS.get(String(id))),
};
document.body.dataset.ready = "true";
})();
"""

_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'"

_PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
    f"<title>collabemb explorer</title>\n<style>{_CSS}</style>\n</head>\n<body>{_BODY}"
    f'<script type="application/json" id="explorer-data">{_MARK}</script>\n'
    f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
)
