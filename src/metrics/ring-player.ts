/**
 * The ring page's player: a history of the ring trace (`/ring-events`, narrated by
 * src/trace/ring-narrator.ts) that can be paused, stepped back and forth and played, one ring
 * event at a time, for the split and the packed layout. Each step shows the narrator's sentence
 * and spec section, the ring's indices after it, the slots it touched (highlighted in a circle
 * of the ring's slots and in the descriptor grid) and the event itself. The URL keeps the
 * place (`#vring=1&seq=120`), so a step can be shared or reloaded.
 *
 * Plain DOM and SVG, no dependencies; it shares `el`, `NS` and `COLORS` with the live view.
 */
export const RING_PLAYER_HTML = /* html */ `
<section id="player">
<h2>Player: the ring trace, one event at a time</h2>
<div id="player-note" class="idx">loading the ring trace…</div>
<div class="controls">
  <label>vring <select id="player-vring"></select></label>
  <button id="player-first" title="first event kept">first</button>
  <button id="player-back" title="step back (←)">◀ step</button>
  <button id="player-play" title="play (space)">▶ play</button>
  <button id="player-pause" title="pause (space)">pause</button>
  <button id="player-fwd" title="step forward (→)">step ▶</button>
  <button id="player-live" title="follow the newest event">live</button>
  <input type="range" id="player-slider" min="0" max="0" value="0">
  <span id="player-pos" class="idx"></span>
</div>
<div id="player-event" class="event"></div>
<div id="player-cite" class="cite"></div>
<div id="player-at" class="idx"></div>
<div id="player-view"></div>
<pre id="player-detail" class="chains"></pre>
<ol id="player-list" class="chains"></ol>
</section>
`;

export const RING_PLAYER_JS = /* js */ `
var player = { hist: {}, vring: null, cursor: -1, mode: "live", after: 0, on: null, timer: null,
  sizes: {}, layouts: {}, wanted: null };
(function () {
  var m = /seq=(\\d+)/.exec(location.hash), v = /vring=(\\d+)/.exec(location.hash);
  if (v) player.vring = Number(v[1]);
  if (m) { player.wanted = Number(m[1]); player.mode = "paused"; }
})();
function playerEvents() { return player.hist[player.vring] || []; }
function playerPoll() {
  fetch("/ring-events?after=" + player.after).then(function (r) { return r.json(); }).then(function (s) {
    player.on = s.on;
    s.events.forEach(function (e) {
      (player.hist[e.vring] = player.hist[e.vring] || []).push(e);
      if (player.hist[e.vring].length > 20000) {
        player.hist[e.vring].shift();
        if (e.vring === player.vring && player.cursor > 0) player.cursor--;
      }
      player.after = e.seq;
      if (player.vring === null) player.vring = e.vring;
    });
    if (player.wanted !== null) {
      var i = playerEvents().findIndex(function (e) { return e.seq === player.wanted; });
      if (i >= 0) { player.cursor = i; player.wanted = null; }
    }
    if (player.mode === "live") player.cursor = playerEvents().length - 1;
    if (s.events.length || player.cursor < 0) playerRender();
    // More waiting: fetch again at once.
    if (s.events.length >= 2000) playerPoll();
  }).catch(function (e) { document.getElementById("player-note").textContent = "cannot read /ring-events: " + e; });
}
function playerGo(i, mode) {
  var n = playerEvents().length;
  if (!n) return;
  player.cursor = Math.max(0, Math.min(n - 1, i));
  if (mode) player.mode = mode;
  playerRender();
}
function playerStep(d) { playerGo(player.cursor + d, "paused"); }
function playerTick() {
  if (player.mode !== "playing") return;
  if (player.cursor < playerEvents().length - 1) playerGo(player.cursor + 1);
}
function playerRender() {
  var evs = playerEvents(), note = document.getElementById("player-note");
  var sel = document.getElementById("player-vring");
  var keys = Object.keys(player.hist).map(Number).sort(function (a, b) { return a - b; });
  if (sel.options.length !== keys.length) {
    sel.innerHTML = "";
    keys.forEach(function (k) {
      var o = document.createElement("option");
      o.value = String(k);
      o.textContent = (k % 2 === 0 ? "receiveq" : "transmitq") + (k >> 1) + " (vring " + k + ")";
      sel.appendChild(o);
    });
  }
  if (player.vring !== null) sel.value = String(player.vring);
  if (player.on === false) {
    note.textContent = "no ring trace: start the backend with --trace-rings FILE to record the history this player steps through";
    return;
  }
  note.textContent = evs.length + " events kept for this vring · " + player.mode;
  var slider = document.getElementById("player-slider");
  slider.max = String(Math.max(0, evs.length - 1));
  slider.value = String(Math.max(0, player.cursor));
  var e = evs[player.cursor];
  document.getElementById("player-pos").textContent = e ? "step " + (player.cursor + 1) + " of " + evs.length + " · #" + e.seq : "";
  if (!e) return;
  document.body.setAttribute("data-player-seq", String(e.seq));
  if (history.replaceState) history.replaceState(null, "", "#vring=" + player.vring + "&seq=" + e.seq);
  var evDiv = document.getElementById("player-event");
  evDiv.setAttribute("data-ev", e.event.ev);
  evDiv.textContent = "+" + e.t.toFixed(3) + "s  " + e.event.ev + ": " + e.say;
  document.getElementById("player-cite").textContent = "[" + e.cite + "]";
  var a = e.at, show = function (x) { return x === undefined || x === null ? "?" : String(x); };
  var packed = a.layout === "packed" || player.layouts[player.vring] === "packed";
  document.getElementById("player-at").textContent = packed
    ? "after it: next avail " + (a.lastAvailIdx === undefined ? "?" : (a.lastAvailIdx & 0x7fff)) +
      "   next used " + (a.usedIdx === undefined ? "?" : (a.usedIdx & 0x7fff) + " (wrap " + (a.usedIdx >> 15) + ")") +
      "   in flight " + a.inFlight
    : "after it: avail.idx " + show(a.availIdx) + "   last_avail_idx " + show(a.lastAvailIdx) +
      "   used.idx " + show(a.usedIdx) + "   in flight " + a.inFlight;
  // The event as recorded: one line, and one per descriptor (an indirect table's indented).
  var rest = Object.assign({}, e.event), lines = [];
  delete rest.descs;
  lines.push(JSON.stringify(rest));
  (e.event.descs || []).forEach(function (d, i) {
    var top = Object.assign({}, d);
    delete top.indirect;
    lines.push("  desc " + i + ": " + JSON.stringify(top));
    (d.indirect || []).forEach(function (x, j) { lines.push("    indirect " + j + ": " + JSON.stringify(x)); });
  });
  document.getElementById("player-detail").textContent = lines.join("\\n");
  playerDraw(e, packed);
  var list = document.getElementById("player-list");
  list.innerHTML = "";
  for (var k = Math.max(0, player.cursor - 5); k < Math.min(evs.length, player.cursor + 6); k++) {
    var li = document.createElement("li");
    li.value = k + 1;
    if (k === player.cursor) li.className = "current";
    li.textContent = evs[k].event.ev + ": " + evs[k].say;
    list.appendChild(li);
  }
}
// The ring at this step: its slots round a circle (avail ring and used ring entries for a
// split ring, descriptor slots for a packed one), the touched ones marked, the hands where the
// indices are after the event; the descriptor grid with the descriptors it touched.
function playerDraw(e, packed) {
  var box = document.getElementById("player-view");
  box.innerHTML = "";
  var n = player.sizes[player.vring] || 256, t = e.touched || {}, a = e.at;
  var W = 470, H = 250, cx = 120, cy = 125, r = 85;
  var svg = el("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H });
  var g = el("g", {}, svg);
  el("circle", { cx: cx, cy: cy, r: r, stroke: COLORS.free, "stroke-width": 18, fill: "none" }, g);
  (t.avail || []).forEach(function (i) { arc(g, cx, cy, r, n, i % n, 1, COLORS.avail, "slot slot-touched slot-avail-touched"); });
  (t.used || []).forEach(function (i) { arc(g, cx, cy, r, n, i % n, 1, COLORS.inflight, "slot slot-touched slot-used-touched"); });
  if (packed) (t.desc || []).forEach(function (i) { arc(g, cx, cy, r, n, i % n, 1, "#d0021b", "slot slot-touched slot-desc-touched"); });
  if (packed) {
    if (a.lastAvailIdx !== undefined) pointer(g, cx, cy, r, n, (a.lastAvailIdx & 0x7fff) % n, "next avail", "#444", -4);
    if (a.usedIdx !== undefined) pointer(g, cx, cy, r, n, (a.usedIdx & 0x7fff) % n, "next used", "#b36b00", 12);
  } else {
    if (a.availIdx !== undefined) pointer(g, cx, cy, r, n, a.availIdx, "avail.idx", "#1f5fa8", -10);
    if (a.lastAvailIdx !== undefined) pointer(g, cx, cy, r, n, a.lastAvailIdx, "last_avail_idx", "#444", 4);
    if (a.usedIdx !== undefined) pointer(g, cx, cy, r, n, a.usedIdx, "used.idx", "#b36b00", 18);
  }
  var touched = {};
  (t.desc || []).forEach(function (i) { touched[i % n] = true; });
  var cols = n <= 64 ? 8 : n <= 256 ? 16 : 32, cell = Math.max(3, Math.floor(220 / cols)), tx = 240, ty = 14;
  var cap = el("text", { x: tx, y: ty - 4, "font-size": 11, fill: "#555" }, g);
  cap.textContent = (packed ? "descriptor ring" : "descriptor table") + ": touched in red";
  for (var i = 0; i < Math.min(n, 1024); i++) {
    var hit = touched[i] === true;
    var rect = el("rect", { x: tx + (i % cols) * cell, y: ty + Math.floor(i / cols) * cell, width: cell - 1, height: cell - 1,
      fill: hit ? "#d0021b" : COLORS.free, "class": hit ? "desc desc-touched" : "desc", "data-desc": i }, g);
    el("title", {}, rect).textContent = "desc " + i;
  }
  box.appendChild(svg);
}
document.getElementById("player-back").onclick = function () { playerStep(-1); };
document.getElementById("player-fwd").onclick = function () { playerStep(1); };
document.getElementById("player-first").onclick = function () { playerGo(0, "paused"); };
document.getElementById("player-play").onclick = function () {
  if (player.cursor >= playerEvents().length - 1) player.cursor = 0;
  player.mode = "playing"; playerRender();
};
document.getElementById("player-pause").onclick = function () { player.mode = "paused"; playerRender(); };
document.getElementById("player-live").onclick = function () { playerGo(playerEvents().length - 1, "live"); };
document.getElementById("player-slider").oninput = function (ev) { playerGo(Number(ev.target.value), "paused"); };
document.getElementById("player-vring").onchange = function (ev) {
  player.vring = Number(ev.target.value);
  player.cursor = player.mode === "live" ? playerEvents().length - 1 : Math.min(player.cursor, playerEvents().length - 1);
  playerRender();
};
document.addEventListener("keydown", function (ev) {
  if (ev.key === "ArrowLeft") playerStep(-1);
  else if (ev.key === "ArrowRight") playerStep(1);
  else if (ev.key === " ") { player.mode = player.mode === "playing" ? "paused" : "playing"; playerRender(); ev.preventDefault(); }
});
playerPoll();
setInterval(playerPoll, 300);
setInterval(playerTick, 400);
`;
