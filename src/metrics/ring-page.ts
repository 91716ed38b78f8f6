/**
 * `/rings.html`: a page that draws every started vring live from `/rings`, for teaching. Each
 * ring is a circle of its slots: the arc the driver offered and the device has not read yet
 * (avail), the arc the device popped and has not returned (in flight), and the indices moving
 * round it. Beside it, the descriptor table coloured by the same states and the chains in
 * flight. A packed ring is drawn the same way from its one descriptor ring: the device's next
 * avail and next used positions with their wrap counters, each descriptor's AVAIL/USED bits
 * and buffer id, and both event suppression areas. Plain SVG, no dependencies; it polls every
 * 300 ms.
 */
import { RING_PLAYER_HTML, RING_PLAYER_JS } from './ring-player.js';

export const RING_PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vhost-user-net: rings</title>
<style>
  body { font: 13px/1.4 "DejaVu Sans", sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  .legend span { display: inline-block; margin-right: 14px; }
  .sw { display: inline-block; width: 11px; height: 11px; vertical-align: -1px; margin-right: 4px; border: 1px solid #999; }
  .vring { display: inline-block; vertical-align: top; background: #fff; border: 1px solid #ddd; border-radius: 6px;
           margin: 8px 8px 0 0; padding: 8px 10px; }
  .vring h2 { font-size: 14px; margin: 0 0 4px; }
  .idx { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
  .chains { font-family: "DejaVu Sans Mono", monospace; font-size: 11px; max-width: 430px; white-space: pre-wrap; }
  .broken { color: #b00; font-weight: bold; }
  #state { color: #666; }
  #player { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 12px 0; padding: 8px 10px; max-width: 900px; }
  #player h2 { font-size: 14px; margin: 0 0 4px; }
  .controls { margin: 6px 0; }
  .controls button { font-size: 12px; }
  .event { font-weight: bold; margin: 4px 0; }
  .cite { color: #555; font-style: italic; }
  li.current { font-weight: bold; background: #fff3c4; }
</style>
</head>
<body>
<h1>vhost-user-net: the rings, live</h1>
<div id="state">connecting…</div>
<div class="legend">
  <span><i class="sw" style="background:#e8e8e8"></i>free (the driver's)</span>
  <span><i class="sw" style="background:#4a90d9"></i>avail: offered, not read by the device yet</span>
  <span><i class="sw" style="background:#f5a623"></i>in flight: popped by the device, not used yet</span>
</div>
<div id="rings"></div>
${RING_PLAYER_HTML}
<script>
"use strict";
var COLORS = { free: "#e8e8e8", avail: "#4a90d9", inflight: "#f5a623" };
var NS = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  var e = document.createElementNS(NS, name);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function arc(g, cx, cy, r, n, from, count, color, cls) {
  // One wedge per slot: simple and exact for any ring size up to a few thousand.
  for (var k = 0; k < count; k++) {
    var s = (from + k) % n;
    var a0 = (s / n) * 2 * Math.PI - Math.PI / 2, a1 = ((s + 1) / n) * 2 * Math.PI - Math.PI / 2;
    var p = "M" + (cx + r * Math.cos(a0)) + "," + (cy + r * Math.sin(a0)) +
      " A" + r + "," + r + " 0 0 1 " + (cx + r * Math.cos(a1)) + "," + (cy + r * Math.sin(a1));
    el("path", { d: p, stroke: color, "stroke-width": 18, fill: "none", "class": cls }, g);
  }
}
// An index as a hand from the centre to its slot, named in the centre (hands often overlap).
function pointer(g, cx, cy, r, n, idx, label, color, dy) {
  var a = (((idx % n) + 0.5) / n) * 2 * Math.PI - Math.PI / 2;
  el("line", { x1: cx + 48 * Math.cos(a), y1: cy + 48 * Math.sin(a), x2: cx + (r + 12) * Math.cos(a),
    y2: cy + (r + 12) * Math.sin(a), stroke: color, "stroke-width": 2, "class": "pointer", "data-name": label }, g);
  var t = el("text", { x: cx, y: cy + dy, "font-size": 11, fill: color, "text-anchor": "middle" }, g);
  t.textContent = label + " " + idx;
}
function drawRing(v) {
  var div = document.createElement("div");
  div.className = "vring";
  div.setAttribute("data-vring", v.index);
  var h = document.createElement("h2");
  h.textContent = v.queue + " · vring " + v.index + " · size " + v.size + " · " +
    (v.started ? "started" : "stopped") + (v.enabled ? ", enabled" : ", disabled");
  if (v.broken) { var b = document.createElement("span"); b.className = "broken"; b.textContent = " · BROKEN"; h.appendChild(b); }
  div.appendChild(h);
  if (v.layout === "packed") return drawPacked(v, div);
  var idx = document.createElement("div");
  idx.className = "idx";
  idx.textContent = "avail.idx " + v.availIdx + "   last_avail_idx " + v.lastAvailIdx + "   used.idx " + v.usedIdx +
    "   in flight " + v.inFlight + "   used_event " + v.usedEvent + "   avail_event " + v.availEvent;
  div.appendChild(idx);
  var W = 470, H = 250, cx = 120, cy = 125, r = 85;
  var svg = el("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H });
  var g = el("g", {}, svg);
  el("circle", { cx: cx, cy: cy, r: r, stroke: COLORS.free, "stroke-width": 18, fill: "none" }, g);
  var n = v.size;
  arc(g, cx, cy, r, n, (v.usedIdx) % n, v.inFlight, COLORS.inflight, "slot slot-inflight");
  var pending = (v.availIdx - v.lastAvailIdx + 65536) % 65536;
  arc(g, cx, cy, r, n, v.lastAvailIdx % n, Math.min(pending, n), COLORS.avail, "slot slot-avail");
  pointer(g, cx, cy, r, n, v.availIdx, "avail.idx", "#1f5fa8", -10);
  pointer(g, cx, cy, r, n, v.lastAvailIdx, "last_avail_idx", "#444", 4);
  pointer(g, cx, cy, r, n, v.usedIdx, "used.idx", "#b36b00", 18);
  // The descriptor table: one cell per descriptor, coloured by the state of its chain.
  descGrid(g, v, function (i, d) {
    return "desc " + i + ": addr " + d.addr + " len " + d.len + " [" + d.flags.join("|") + "] next " + d.next;
  });
  div.appendChild(svg);
  var list = document.createElement("div");
  list.className = "chains";
  var lines = v.chains.slice(0, 12).map(function (c) {
    return (c.state === "inflight" ? "in flight " : "avail     ") + "head " + c.head + ": " + c.descs.join(" → ") + "  (" + c.bytes + " bytes)";
  });
  if (v.chains.length > 12) lines.push("… " + (v.chains.length - 12) + " more");
  // The last used elements the device published (id = chain head, len = bytes written).
  var recent = [];
  for (var k = Math.min(4, v.usedRing.length, v.usedIdx); k > 0; k--) {
    var ent = v.usedRing[(v.usedIdx - k + 65536) % n];
    if (ent) recent.push("id " + ent.id + " len " + ent.len);
  }
  if (recent.length) lines.push("last used: " + recent.join(", "));
  list.textContent = lines.join("\\n");
  div.appendChild(list);
  return div;
}
function descGrid(g, v, tip) {
  var n = v.size, cols = n <= 64 ? 8 : n <= 256 ? 16 : 32, cell = Math.max(3, Math.floor(220 / cols));
  var tx = 240, ty = 14;
  var cap = el("text", { x: tx, y: ty - 4, "font-size": 11, fill: "#555" }, g);
  cap.textContent = (v.layout === "packed" ? "descriptor ring (" : "descriptor table (") + v.desc.length + ")";
  for (var i = 0; i < v.desc.length; i++) {
    var d = v.desc[i];
    var rect = el("rect", { x: tx + (i % cols) * cell, y: ty + Math.floor(i / cols) * cell, width: cell - 1, height: cell - 1,
      fill: COLORS[d.state], "class": "desc desc-" + d.state, "data-desc": i }, g);
    el("title", {}, rect).textContent = tip(i, d);
  }
}
// A packed ring (virtio 1.2 §2.8): one descriptor ring; the device reads at "next avail" and
// writes used descriptors back at "next used"; each side's wrap counter flips at the ring's end.
function drawPacked(v, div) {
  var p = v.packed, n = v.size;
  var ev = function (e) { return e.flags + (e.flags === "DESC" ? " at " + (e.offWrap & 0x7fff) + " wrap " + (e.offWrap >> 15) : ""); };
  var idx = document.createElement("div");
  idx.className = "idx";
  idx.textContent = "packed · next avail " + p.availPos + " (wrap " + p.availWrap + ")   next used " + p.usedPos +
    " (wrap " + p.usedWrap + ")   in flight " + v.inFlight;
  div.appendChild(idx);
  var evs = document.createElement("div");
  evs.className = "idx";
  evs.textContent = "driver event: " + ev(p.driverEvent) + "   device event: " + ev(p.deviceEvent);
  div.appendChild(evs);
  var W = 470, H = 250, cx = 120, cy = 125, r = 85;
  var svg = el("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H });
  var g = el("g", {}, svg);
  el("circle", { cx: cx, cy: cy, r: r, stroke: COLORS.free, "stroke-width": 18, fill: "none" }, g);
  var offered = v.desc.filter(function (d) { return d.state === "avail"; }).length;
  arc(g, cx, cy, r, n, p.usedPos, v.inFlight, COLORS.inflight, "slot slot-inflight");
  arc(g, cx, cy, r, n, p.availPos, Math.min(offered, n), COLORS.avail, "slot slot-avail");
  pointer(g, cx, cy, r, n, p.availPos, "next avail", "#444", -4);
  pointer(g, cx, cy, r, n, p.usedPos, "next used", "#b36b00", 12);
  descGrid(g, v, function (i, d) {
    return "desc " + i + ": addr " + d.addr + " len " + d.len + " id " + d.id + " [" + d.flags.join("|") + "]";
  });
  div.appendChild(svg);
  var list = document.createElement("div");
  list.className = "chains";
  var lines = v.chains.slice(0, 12).map(function (c) {
    return "avail     id " + c.head + ": " + c.descs.join(" → ") + "  (" + c.bytes + " bytes)";
  });
  if (v.chains.length > 12) lines.push("… " + (v.chains.length - 12) + " more");
  list.textContent = lines.join("\\n");
  div.appendChild(list);
  return div;
}
var timer = null;
function refresh() {
  fetch("/rings").then(function (r) { return r.json(); }).then(function (s) {
    var box = document.getElementById("rings");
    box.innerHTML = "";
    document.getElementById("state").textContent = s.connected
      ? s.vrings.length + " vring(s) · " + new Date().toLocaleTimeString()
      : "no front-end connected";
    s.vrings.forEach(function (v) {
      box.appendChild(drawRing(v));
      player.sizes[v.index] = v.size;
      player.layouts[v.index] = v.layout;
    });
    document.body.setAttribute("data-updated", String(Date.now()));
  }).catch(function (e) {
    document.getElementById("state").textContent = "cannot read /rings: " + e;
  });
}
${RING_PLAYER_JS}
refresh();
timer = setInterval(refresh, 300);
</script>
</body>
</html>
`;
