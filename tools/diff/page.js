// tools/diff/page.js: the step-through page's logic (docs/diffing.md, "The step-through page").
// Decodes the recording html.cc wrote (its header describes the byte format), keeps each
// stage's heap as a map from address to walk entry, moves it step by step (forward by
// decoding a step, back through an undo log, far by restarting at a keyframe), draws it, and
// exposes window.edu for tests and scripts.
"use strict";
(function () {
const D = window.EDU_DATA;
const STATES = D.states;  // used, free, meta, unused, remote
const USED = 0, FREE = 1, META = 2, UNUSED = 3, REMOTE = 4;
const COLOURS = ["#e0603f", "#5aa845", "#8c93a0", "#ecedf0", "#3b7dd8"];
const LIGHT = ["#f2b3a3", "#b9dcae", "#c9ccd3", "#f4f5f7", "#b3cdf0"];  // a container's own colour
// What each state means, for the hover (contract/allocator.h, WalkState).
const MEANING = ["allocated: the program's", "free: on a free list, ready for reuse", "bookkeeping",
  "not carved into blocks yet",
  "remote free, not yet collected: freed by a thread that does not own it, waiting on a cross-thread\n" +
  "        list (stage 4: its page's xthread_free, or the owner heap's delayed_free when the page was\n" +
  "        full) until the owner collects it onto the page's free list"];
const NO_BLOCK = 4294967295;  // the id of free(NULL), `f -1` in a trace
const OPS = ["a", "f", "r"];

// ---- Decoding -----------------------------------------------------------------------------
async function inflate(b64) {
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// A cursor over a varint stream; numbers up to 2^53 come back exact.
class Reader {
  constructor(bytes, pos) { this.b = bytes; this.p = pos || 0; }
  next() {
    let v = 0, scale = 1, byte;
    do { byte = this.b[this.p++]; v += (byte & 0x7f) * scale; scale *= 128; } while (byte & 0x80);
    return v;
  }
}
const unzig = (v) => (v % 2 ? -(v + 1) / 2 : v / 2);
const byAddress = (x, y) => x.a - y.a || x.d - y.d;
// Index of the first entry of `list` (sorted by address, then depth) not before e.
function lowerBound(list, e) {
  let lo = 0, hi = list.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (byAddress(list[mid], e) < 0) lo = mid + 1; else hi = mid; }
  return lo;
}

// ---- One stage's heap over time -------------------------------------------------------------
// `heap`: key (offset * 4 + depth) -> entry {a: offset, d: depth, s: size, k: kind, st: state,
// id: trace id + 1 or 0, born: step}. Steps decoded since the last keyframe keep, for going
// back, where their bytes start and what they removed.
class Timeline {
  constructor(spec, steps, keyframes) {
    Object.assign(this, {spec, steps, keyframes});
    this.every = spec.keyframeEvery;
    this.kinds = spec.kinds.map(kindIndex);  // the stage's kind numbers -> the page's
    this.load(0);
  }
  readEntry(r, cursor) {
    const w = r.next(), d = w % 4, a = cursor.a + unzig(Math.floor(w / 4));
    cursor.a = a;
    const s = r.next(), ks = r.next();
    const e = {a, d, s, k: this.kinds[Math.floor(ks / 16)], st: Math.floor(ks / 2) % 8, id: null, born: 0};
    if (ks % 2) e.id = r.next();
    return e;
  }
  load(k) {  // the keyframe after step k * every
    const r = new Reader(this.keyframes, this.spec.keyframeOffsets[k]), cursor = {a: 0};
    this.heap = new Map();
    this.step = k * this.every;
    for (let n = r.next(); n > 0; n--) {
      const e = this.readEntry(r, cursor);
      e.born = this.step - r.next();
      if (e.id === null) e.id = 0;
      this.heap.set(e.a * 4 + e.d, e);
    }
    this.order = null;  // the entries sorted by address, kept up to date once asked for
    this.base = this.step;
    this.pos = [this.spec.stepOffsets[k]];
    this.cursor = [0];
    this.undo = [];
  }
  forward() {  // applies step this.step + 1
    const i = this.step - this.base, r = new Reader(this.steps, this.pos[i]), cursor = {a: this.cursor[i]};
    if (this.step % this.every === 0) cursor.a = 0;  // the encoder restarts at every keyframe
    const removedCount = r.next(), addedCount = r.next(), removed = [], added = [];
    for (let n = 0; n < removedCount; n++) {
      const w = r.next(), a = cursor.a + unzig(Math.floor(w / 4)), key = a * 4 + (w % 4);
      cursor.a = a;
      const gone = this.heap.get(key);
      removed.push(gone);
      this.heap.delete(key);
      if (this.order && gone) this.order.splice(lowerBound(this.order, gone), 1);
    }
    const op = this.step;  // the operation's index
    for (let n = 0; n < addedCount; n++) {
      const e = this.readEntry(r, cursor);
      e.born = this.step + 1;
      if (e.id === null) e.id = e.st === USED ? Ops.id[op] + 1 : 0;  // unwritten: the operation's block
      this.heap.set(e.a * 4 + e.d, e);
      if (this.order) this.order.splice(lowerBound(this.order, e), 0, e);
      added.push(e);
    }
    this.undo[i] = {removed, added};
    this.pos[i + 1] = r.p;
    this.cursor[i + 1] = cursor.a;
    this.step++;
    // At a keyframe the run starts afresh, so the undo log stays short.
    if (this.step % this.every === 0) {
      this.undo = [this.undo[i]];
      this.pos = [this.pos[i], this.pos[i + 1]];
      this.cursor = [this.cursor[i], this.cursor[i + 1]];
      this.base = this.step - 1;
    }
  }
  backward() {
    const u = this.undo[this.step - this.base - 1];
    for (const e of u.added) {
      this.heap.delete(e.a * 4 + e.d);
      if (this.order) this.order.splice(lowerBound(this.order, e), 1);
    }
    for (const e of u.removed) {
      if (!e) continue;
      this.heap.set(e.a * 4 + e.d, e);
      if (this.order) this.order.splice(lowerBound(this.order, e), 0, e);
    }
    this.step--;
  }
  // Forward is always possible from here, back down to the run's keyframe; otherwise, or when
  // the keyframe below the target is nearer, start over from that keyframe.
  goTo(target) {
    const k = target > 0 ? Math.floor((target - 1) / this.every) : 0;  // so the target's own step is decoded
    const here = target >= this.base ? Math.abs(target - this.step) : Infinity;
    if (here > target - k * this.every) this.load(k);
    while (this.step > target) this.backward();
    while (this.step < target) this.forward();
  }
  lastChange() {  // what the current step did: {removed, added}, or null at a keyframe start
    return this.step > this.base ? this.undo[this.step - this.base - 1] : null;
  }
  sorted() {
    if (!this.order) this.order = Array.from(this.heap.values()).sort(byAddress);
    return this.order;
  }
}

const Ops = {};
let stages = [];   // {spec, tl, ui}
let current = 0, playing = null, predicting = false;
// The tally counts only stages guessed: a stage left without a guess (one shown alone, one the
// class skipped) is skipped, not wrong.
const guesses = new Map(), tally = {right: 0, guessed: 0, skipped: 0, byStage: []};

// ---- Formatting --------------------------------------------------------------------------------
// An offset from the heap's first region, in decimal as every tool writes it (docs/diffing.md):
// "+16", "-1572864". Sizes go through bytes().
const offsetText = (n) => (n < 0 ? "-" + -n : "+" + n);
// The address an offset had in the process that recorded stage s, in hex as a debugger and the
// stages' own messages print pointers: "0x55d0c3a1e010".
const pointer = (s, n) => "0x" + (BigInt(s.spec.base) + BigInt(n)).toString(16);
function bytes(n) {
  if (n < 1024) return n + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < 3);
  return n.toFixed(n < 10 ? 2 : 1) + " " + u[i];
}
function opText(i) {
  if (i < 0 || i >= D.opCount) return "";
  return OPS[Ops.kind[i]] + " " + (Ops.id[i] === NO_BLOCK ? "-1" : Ops.id[i]) + (Ops.kind[i] === 1 ? "" : " " + Ops.size[i]) +
    (Ops.thread[i] > 1 ? " @" + Ops.thread[i] : "");
}
const KINDS = [];
const kindIndex = (name) => (KINDS.includes(name) ? KINDS.indexOf(name) : KINDS.push(name) - 1);
const kindName = (e) => KINDS[e.k];
function describeEntry(e) {
  return `${kindName(e)} ${STATES[e.st]} ${offsetText(e.a)} ${bytes(e.s)}` + (e.id ? ` id ${e.id - 1}` : "");
}
const el = (tag, cls, text) => { const x = document.createElement(tag); if (cls) x.className = cls; if (text !== undefined) x.textContent = text; return x; };

// ---- What a step changed, in words -------------------------------------------------------------
function explain(stage, step) {
  const ch = stage.tl.lastChange(), out = [];
  if (!ch || step === 0) return {lines: ["(start)"], chosen: null, merged: null, fate: null};
  const op = step - 1, kind = Ops.kind[op];
  const removed = ch.removed, added = ch.added;
  const blocks = (list, st) => list.filter((e) => e.d > 0 && e.st === st);
  const chosen = added.find((e) => e.st === USED && e.id === Ops.id[op] + 1) || null;
  let merged = null, fate = null;
  // Blocks freed by other threads that the owner took back (stage 4: onto the page's free list).
  const collected = removed.filter((e) => e && e.st === REMOTE && added.some((x) => x.a === e.a && x.d === e.d && x.st !== REMOTE));
  const collectedLine = collected.length && `collected ${collected.length} remote free${collected.length > 1 ? "s" : ""} (${collected.map((e) => offsetText(e.a)).join(", ")}): moved to the page's free list`;
  let collectedSaid = false;
  if (kind !== 1) {
    if (chosen) {
      out.push(`${opText(op)} -> ${offsetText(chosen.a)} (${bytes(chosen.s)} usable)`);
      const from = removed.find((e) => e.d === chosen.d && e.st !== USED && e.a <= chosen.a && chosen.a < e.a + e.s);
      if (from && from.st === REMOTE && collectedLine) {
        // The collection comes first: the block was remote, then on the free list, then popped.
        out.push(collectedLine, `taken from that list: ${kindName(from)} ${offsetText(from.a)} (${bytes(from.s)}), a remote free until this step`);
        collectedSaid = true;
      } else if (from) {
        const h = holderOf(stage.tl.heap.values(), from);  // the pool or page it lies in, by name
        out.push(`taken from ${kindName(from)} ${STATES[from.st]} ${offsetText(from.a)} (${bytes(from.s)})` + (h ? ` in ${kindName(h)} ${offsetText(h.a)}` : ""));
      }
      const rest = added.filter((e) => e !== chosen && e.d === chosen.d && from && e.a >= from.a && e.a + e.s <= from.a + from.s && e.st !== USED);
      if (rest.length) out.push(`split: ${rest.map((e) => STATES[e.st] + " " + bytes(e.s) + " left at " + offsetText(e.a)).join(", ")}`);
      const old = removed.find((e) => e.st === USED && e.id === Ops.id[op] + 1);
      if (kind === 2 && old) out.push(old.a === chosen.a ? `resized in place from ${bytes(old.s)}` : `moved from ${offsetText(old.a)} (${bytes(old.s)}), copied`);
    } else out.push(`${opText(op)} (no new block seen)`);
  } else {
    const gone = removed.find((e) => e.st === USED && e.id === Ops.id[op] + 1);
    out.push(Ops.id[op] === NO_BLOCK ? `${opText(op)}: free(NULL), nothing to do` :
      `${opText(op)}: block at ${gone ? offsetText(gone.a) + " (" + bytes(gone.s) + ")" : "?"} freed`);
    const remote = gone && added.find((e) => e.d === gone.d && e.a === gone.a && e.st === REMOTE);
    if (remote) out.push(`remote free: thread ${Ops.thread[op]} is not the owner, so the block waits on its page's cross-thread list until the owner collects it`);
    if (remote) fate = "remote";
    else if (gone && (holderOf(stage.tl.heap.values(), gone) || holderOf(removed, gone))) {
      // A pool's or page's block: nothing merges there; say where it went, as predict mode asks
      // (a pool or page that went back with its arena or segment is among the removed entries).
      const h = holderOf(stage.tl.heap.values(), gone) || holderOf(removed, gone);
      let inUse = false;
      for (const e of stage.tl.heap.values()) if (e.d === h.d + 1 && e.st === USED && h.a <= e.a && e.a < h.a + Math.max(h.s, 1)) inUse = true;
      out.push(FATES[inUse ? "list" : "emptied"](kindName(h)) + ` (${kindName(h)} ${offsetText(h.a)})`);
    } else if (gone) {
      const cover = added.find((e) => e.d === gone.d && e.st === FREE && e.a <= gone.a && gone.a < e.a + e.s);
      const prev = removed.find((e) => e.d === gone.d && e.st === FREE && e.a < gone.a);
      const next = removed.find((e) => e.d === gone.d && e.st === FREE && e.a > gone.a);
      merged = cover ? (prev && next ? "both" : prev ? "prev" : next ? "next" : "none") : "none";
      if (cover && (prev || next))
        out.push(`coalesced with ${[prev && "previous " + offsetText(prev.a) + " (" + bytes(prev.s) + ")", next && "next " + offsetText(next.a) + " (" + bytes(next.s) + ")"].filter(Boolean).join(" and ")} into ${bytes(cover.s)}`);
      else if (cover) out.push("no free neighbour: nothing to merge");
    }
  }
  if (collectedLine && !collectedSaid) out.push(collectedLine);
  // Containers: new or returned regions, pools and pages put to use or emptied.
  for (const e of added.filter((x) => x.d === 0)) {
    const was = removed.find((x) => x.d === 0 && x.a === e.a);
    out.push(was ? `${kindName(e)} ${offsetText(e.a)} ${e.s > was.s ? "grew" : "shrank"}: ${bytes(was.s)} -> ${bytes(e.s)}` : `new ${kindName(e)} ${offsetText(e.a)} (${bytes(e.s)}) from the OS`);
  }
  for (const e of removed.filter((x) => x.d === 0 && !added.some((y) => y.d === 0 && y.a === x.a)))
    out.push(`${kindName(e)} ${offsetText(e.a)} (${bytes(e.s)}) returned to the OS`);
  const setUp = new Map();
  for (const e of added.filter((x) => x.d === 1 && kindName(x) !== "block")) {
    const was = removed.find((x) => x.d === 1 && x.a === e.a);
    if (was && was.st !== e.st) out.push(`${kindName(e)} ${offsetText(e.a)}: ${STATES[was.st]} -> ${STATES[e.st]}` + (e.st === META ? " (put to use)" : was.st === META ? " (emptied)" : ""));
    else if (!was) setUp.set(kindName(e), (setUp.get(kindName(e)) || []).concat([e]));
  }
  for (const [kind, list] of setUp)
    out.push(list.length === 1 ? `${kind} ${offsetText(list[0].a)} (${bytes(list[0].s)}) set up` : `${list.length} ${kind}s set up (${offsetText(list[0].a)}..., ${bytes(list[0].s)} first)`);
  const carved = added.filter((e) => e.st !== UNUSED && e.d === 2 && removed.some((x) => x.st === UNUSED && x.d === e.d && x.a <= e.a && e.a < x.a + x.s));
  if (carved.length > 1) out.push(`${carved.length} blocks carved from unused space`);
  else if (carved.length === 1 && carved[0] !== chosen) out.push(`carved ${kindName(carved[0])} ${offsetText(carved[0].a)} from unused space`);
  const fresh = (st) => blocks(added, st).filter((e) => !removed.some((x) => x.a === e.a && x.d === e.d) && e !== chosen);
  const laidOut = fresh(UNUSED).filter((e) => kindName(e) === "block"), carvedNow = fresh(FREE);
  if (laidOut.length > 1) out.push(`${laidOut.length} blocks laid out, not yet carved`);
  if (carvedNow.length > 1 && !carved.length) out.push(`${carvedNow.length} free blocks carved at once`);
  return {lines: out, chosen, merged, fate};
}

// The pool or page that holds the block op `op` frees, in stage s as its map shows it now; null
// for a block of a region (stage 1's, and stage 2's large ones), whose question is the merge.
function freedHome(s, op) {
  const block = (s.entries || []).find((e) => e.st === USED && e.id === Ops.id[op] + 1);
  return block ? holderOf(s.entries, block) : null;
}
// The pool or page that holds `block` among `entries` (any iterable); null when a region holds it.
function holderOf(entries, block) {
  for (const e of entries || [])
    if (e && e.d === block.d - 1 && e.a <= block.a && block.a < e.a + Math.max(e.s, 1)) return kindName(e) !== "region" ? e : null;
  return null;
}
const MERGES = {none: "no neighbour", prev: "the previous block", next: "the next block", both: "both neighbours"};
const FATES = {list: (k) => `back on its ${k}'s free list`, emptied: (k) => `back on its ${k}'s free list, and the ${k} empties`,
               remote: () => "a remote free, for the owner to collect"};

// ---- The memory map ------------------------------------------------------------------------------
const GAP = 6;
// A row's height, the offsets' margin, a region's title line, the map's type and a digit's width
// in it: 1.5 times larger with one stage shown alone (setSolo).
let ROW, LEFT, LABEL, MAP_FONT, CHAR;
function mapScale(k) { ROW = 18 * k; LEFT = 74 * k; LABEL = 15 * k; MAP_FONT = 10 * k; CHAR = 0.61 * MAP_FONT; }
mapScale(1);
// Map widths, read once per resize: reading layout while drawing would force a reflow per stage.
function measure() {
  // The view's height is the box's largest (CSS max-height): its current height is the map's.
  for (const s of stages) {
    s.ui.width = s.ui.box.clientWidth || 400;
    s.ui.height = parseFloat(getComputedStyle(s.ui.box).maxHeight) || window.innerHeight / 2;
  }
}
let zoomLevel = 0, range = null;  // zoom: powers of two from each stage's fitted scale

// A page (a depth-1 entry) whose carved blocks would be drawn thinner than MIN_PX at the stage's
// scale gets a scale of its own over its carved part: fine enough that its smallest block is
// MIN_PX wide, coarse enough that the part fits in FINE_ROWS rows (zoom scales both). A stage-3
// segment of 4 MiB then shows its 16-byte blocks; stage 1 (no pages) and blocks already wide
// enough keep the one scale.
const MIN_PX = 6, FINE_ROWS = 24;
const PIN_BELOW = 12;  // a changed entry narrower than this many pixels gets a pin above it (draw)
const pow2 = (x, round) => Math.pow(2, round(Math.log2(x)));
function finePages(stage, entries, inner) {
  const pages = [];
  let page = null;
  for (const e of entries) {
    if (e.d === 1) page = pages[pages.push({lo: e.a, hi: e.a, min: Infinity, kind: kindName(e), starts: []}) - 1];
    else if (e.d === 2 && page && e.st !== UNUSED) {
      page.hi = Math.max(page.hi, e.a + e.s); page.min = Math.min(page.min, e.s); page.starts.push(e.a);
    }
  }
  const out = [];
  for (const p of pages) {
    if (p.hi <= p.lo || p.min / stage.bytesPerPx >= MIN_PX) continue;
    const fit = Math.max(pow2(Math.max(p.min, 1) / MIN_PX, Math.floor), pow2((p.hi - p.lo) / (FINE_ROWS * inner), Math.ceil));
    const bpp = Math.max(1 / 64, fit * Math.pow(2, -zoomLevel));
    if (bpp < stage.bytesPerPx) out.push({lo: p.lo, hi: p.hi, bpp, kind: p.kind, starts: p.starts});
  }
  return out;
}

function layout(stage, entries, width) {
  // Top-level entries (depth 0) are regions; each starts on a fresh row and wraps. A row is a run
  // of segments {lo, hi, x, bpp}: the stage's scale, or a page's own (finePages).
  const bytesPerPx = stage.bytesPerPx, rows = [], inner = Math.max(40, width - LEFT - 8);
  const fine = finePages(stage, entries, inner);
  let y = 4, fi = 0;
  const regions = entries.filter((e) => e.d === 0);
  for (const r of regions) {
    let lo = r.a, hi = r.a + r.s;
    if (range) { lo = Math.max(lo, range[0]); hi = Math.min(hi, range[1]); if (lo >= hi) continue; }
    // The region's pieces: the stage's scale between the pages drawn at their own.
    const pieces = [];
    let at = lo;
    while (fi < fine.length && fine[fi].hi <= lo) fi++;
    for (; fi < fine.length && fine[fi].lo < hi; fi++) {
      const f = fine[fi], flo = Math.max(f.lo, lo), fhi = Math.min(f.hi, hi);
      if (flo > at) pieces.push({lo: at, hi: flo, bpp: bytesPerPx, fine: false});
      pieces.push({lo: flo, hi: fhi, bpp: f.bpp, fine: true, starts: f.starts});
      at = fhi;
    }
    if (at < hi) pieces.push({lo: at, hi, bpp: bytesPerPx, fine: false});
    y += LABEL;
    const first = rows.length;
    let row = null, x = inner;  // no row yet: the first piece opens one
    for (const p of pieces) {
      for (let a = p.lo; a < p.hi && rows.length - first < 4000;) {
        // Rows start at whole bytes: a row's offset is printed on its left, from the origin of
        // every other offset on the page (the words, the hover, range), not from its region.
        let room = Math.floor((inner - x) * p.bpp);
        if (room < 1) {
          row = {lo: a, hi: a, y, segs: [], label: offsetText(a)};
          rows.push(row); y += ROW + 2; x = 0; room = Math.max(1, Math.floor(inner * p.bpp));
        }
        let end = Math.min(p.hi, a + room);
        // A page at its own scale wraps where a block starts, so the next row's offset is that
        // block's, the one the words and the hover give (cut mid-block, it named no block at all).
        const cut = p.fine && end < p.hi ? lastStart(p.starts, a, end) : null;
        if (cut !== null) end = cut;
        // Not one block of the page fits the rest of this row: the page starts on the next.
        else if (p.fine && end < p.hi && x > 0 && lastStart(p.starts, a - 1, a) !== null) { x = inner; continue; }
        row.segs.push({lo: a, hi: end, x: LEFT + x, bpp: p.bpp, fine: p.fine});
        x = cut !== null ? inner : x + (end - a) / p.bpp; row.hi = end; a = end;
      }
    }
    rows[first].title = `${kindName(r)} ${offsetText(r.a)}  ${bytes(r.s)}`;
    y += GAP;
  }
  return {rows, height: y + 4, fine};
}
// The last of `starts` (ascending) in (lo, hi], or null.
function lastStart(starts, lo, hi) {
  let l = 0, h = starts.length;  // the first start above hi
  while (l < h) { const m = (l + h) >> 1; if (starts[m] <= hi) l = m + 1; else h = m; }
  return l > 0 && starts[l - 1] > lo ? starts[l - 1] : null;
}
// Where an address falls on a row, or null.
function xAt(row, a) {
  for (const s of row.segs) if (a >= s.lo && a <= s.hi) return s.x + (a - s.lo) / s.bpp;
  return null;
}

function draw(stage) {
  const ui = stage.ui, entries = stage.entries, canvas = ui.canvas, bytesPerPx = stage.bytesPerPx;
  const width = ui.width;
  const {rows, height, fine} = layout(stage, entries, width);
  stage.fine = fine;
  const dpr = window.devicePixelRatio || 1, h = Math.min(height, 30000);
  if (canvas.width !== width * dpr || canvas.height !== h * dpr) {  // resizing reallocates: only when needed
    canvas.width = width * dpr; canvas.height = h * dpr;
    canvas.style.width = width + "px"; canvas.style.height = h + "px";
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, h);
  g.font = `${MAP_FONT}px ui-monospace, 'DejaVu Sans Mono', monospace`;
  g.textBaseline = "middle";
  const rects = [];
  ui.rows = rows;
  const change = stage.change, born = current, hl = [];
  let firstChange = null;
  // Entries by row: entries are sorted by address, rows too, so one sweep places them.
  // Only the rows in view (and a margin) are drawn; scrolling draws again.
  const top = ui.scrollTop - 3 * ROW, bottom = ui.scrollTop + ui.height + 3 * ROW;
  const inView = (row) => row.y + ROW >= top && row.y <= bottom;
  for (const row of rows) {
    if (!inView(row)) continue;
    if (row.title) { g.fillStyle = "#5b6474"; g.fillText(row.title, 2, row.y - LABEL / 2); }
    g.fillStyle = "#8b93a1";
    g.fillText(row.label, 2, row.y + ROW / 2);
    // A page at a scale of its own: a dark rule under it.
    g.fillStyle = "#3d4a66";
    for (const s of row.segs) if (s.fine) g.fillRect(s.x, row.y + ROW, (s.hi - s.lo) / s.bpp, 1.5);
  }
  let ri = 0;
  for (const e of entries) {
    if (e.d === 0) continue;
    const lo = e.a, hi = e.a + Math.max(e.s, 1);
    while (ri < rows.length && rows[ri].hi <= lo) ri++;
    for (let r = ri; r < rows.length && rows[r].lo < hi; r++) {
      const row = rows[r];
      if (row.hi <= lo) continue;
      if (e.born === born && born > 0 && firstChange === null) firstChange = row.y;
      if (!inView(row)) continue;
      for (const s of row.segs) {
        if (s.hi <= lo || s.lo >= hi) continue;
        const x0 = s.x + (Math.max(lo, s.lo) - s.lo) / s.bpp, x1 = s.x + (Math.min(hi, s.hi) - s.lo) / s.bpp;
        const inset = e.d >= 2 ? ROW / 6 : 0, y = row.y + inset, hgt = ROW - 2 * inset;
        const w = Math.max(x1 - x0, 0.6);
        const container = e.d === 1 && entries.length && (e.st === META || e.st === UNUSED) && e.s >= 1024;
        g.fillStyle = container ? LIGHT[e.st] : COLOURS[e.st];
        g.fillRect(x0, y, w, hgt);
        if (w >= 3) { g.fillStyle = "#ffffff"; g.fillRect(x0, y, 0.8, hgt); }
        if (e.st === USED && e.id && w > 14) {
          const t = String(e.id - 1);
          if (t.length * CHAR + 4 < w) { g.fillStyle = "#fff"; g.fillText(t, x0 + 2, y + hgt / 2); }
        }
        rects.push({x: x0, y, w, h: hgt, e});
        if (e.born === born && born > 0) hl.push({x: x0, y, w, h: hgt, e});
      }
    }
  }
  // The step's changes: outlined; the blocks a coalesce swallowed, dashed at their edges.
  g.strokeStyle = "#f2b705"; g.lineWidth = 2.5;
  // Many new entries (a pool or page set up): outline the block the step chose and the
  // containers, not each of a hundred blocks.
  const chosen = stage.explained && stage.explained.chosen;
  const outlined = hl.length > 12 ? hl.filter((r) => r.e === chosen || (r.e.d < 2 && r.e.s < 4 * 1024 * 1024)) : hl;
  for (const r of outlined) g.strokeRect(r.x - 1, r.y - 1, Math.max(r.w, 2) + 2, r.h + 2);
  // A change a few pixels wide is lost among the blocks from the back of a room: a pin above it.
  for (const r of outlined) {
    if (r.w >= PIN_BELOW) continue;
    const cx = r.x + r.w / 2, tip = r.y - 2, size = ROW / 3;
    g.beginPath(); g.moveTo(cx, tip); g.lineTo(cx - size * 0.7, tip - size); g.lineTo(cx + size * 0.7, tip - size); g.closePath();
    g.fillStyle = "#f2b705"; g.fill(); g.lineWidth = 1; g.strokeStyle = "#1d2330"; g.stroke();
  }
  g.strokeStyle = "#f2b705"; g.lineWidth = 2.5;
  if (change) {
    g.setLineDash([3, 2]); g.lineWidth = 1.2; g.strokeStyle = "#1d2330";
    for (const e of change.removed) {
      if (!e || e.d === 0) continue;
      for (const row of rows) {
        if (row.hi <= e.a || row.lo > e.a) continue;
        const x = xAt(row, e.a);
        g.beginPath(); g.moveTo(x, row.y - 2); g.lineTo(x, row.y + ROW + 2); g.stroke();
      }
    }
    g.setLineDash([]);
  }
  const guess = guesses.get(stage.index);
  if (predicting && guess && guess.entry) {
    g.strokeStyle = "#3569c7"; g.lineWidth = 2;
    for (const r of rects) if (r.e === guess.entry) g.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
  }
  // The keyboard's candidate: dashed, with a blue pin over one too narrow to see.
  const pick = predicting && picked(stage);
  if (pick && pick.entry) {
    g.strokeStyle = "#3569c7"; g.lineWidth = 2; g.setLineDash([4, 3]);
    for (const r of rects) {
      if (r.e !== pick.entry) continue;
      g.strokeRect(r.x - 3, r.y - 3, r.w + 6, r.h + 6);
      if (r.w >= PIN_BELOW) continue;
      const cx = r.x + r.w / 2, tip = r.y - 3, size = ROW / 3;
      g.setLineDash([]); g.beginPath(); g.moveTo(cx, tip); g.lineTo(cx - size * 0.7, tip - size); g.lineTo(cx + size * 0.7, tip - size); g.closePath();
      g.fillStyle = "#3569c7"; g.fill(); g.setLineDash([4, 3]);
    }
    g.setLineDash([]);
  }
  ui.rects = rects;
  ui.firstChange = firstChange;
}

// Brings each stage's change into view; run after every stage is drawn, so layout is read once.
function follow() {
  if (!document.getElementById("follow").checked) return;
  for (const s of stages) {
    const y = s.ui.firstChange, box = s.ui.box;
    if (y === null || y === undefined) continue;
    if (y < s.ui.scrollTop || y > s.ui.scrollTop + s.ui.height - ROW) box.scrollTop = Math.max(0, y - s.ui.height / 3);
  }
}

function hitTest(stage, x, y) {
  let best = null;
  for (const r of stage.ui.rects)
    if (x >= r.x - 0.5 && x <= r.x + Math.max(r.w, 1.5) + 0.5 && y >= r.y && y <= r.y + r.h && (!best || r.e.d >= best.d)) best = r.e;
  return best;
}

// ---- The structures each stage teaches ------------------------------------------------------------
function structures(stage) {
  const entries = stage.entries, box = stage.ui.structs;
  box.textContent = "";
  // One pass: entries by kind and state, overall and at depth 1 inside each top-level entry
  // (children follow their top-level entry in address order). Keys are numbers: kind * 8 + state.
  const counts = new Map(), inside = new Map(), regions = [];
  const named = (m) => Array.from(m, ([k, n]) => `${n} ${KINDS[k >> 3]} ${STATES[k & 7]}`);
  let top = null;
  for (const e of entries) {
    const k = e.k * 8 + e.st;
    counts.set(k, (counts.get(k) || 0) + 1);
    if (e.d === 0) { top = e; regions.push(e); inside.set(e, new Map()); }
    else if (e.d === 1 && top && e.a < top.a + top.s) { const m = inside.get(top); m.set(k, (m.get(k) || 0) + 1); }
  }
  const t = el("table");
  const head = el("tr");
  for (const h of ["top level", "size", "contents"]) head.appendChild(el("th", "", h));
  t.appendChild(head);
  let shown = 0;
  for (const r of regions) {
    if (shown++ >= 6) { const tr = el("tr"); tr.appendChild(el("td", "", `+${regions.length - 6} more`)); t.appendChild(tr); break; }
    const tr = el("tr");
    tr.appendChild(el("td", "", `${kindName(r)} ${offsetText(r.a)}`));
    tr.appendChild(el("td", "", bytes(r.s)));
    tr.appendChild(el("td", "", named(inside.get(r)).join(", ")));
    t.appendChild(tr);
  }
  box.appendChild(t);
  // The container (pool, page) the step touched: its blocks by state and size.
  const ch = stage.change, touched = ch && ((stage.explained && stage.explained.chosen && stage.explained.chosen.d === 2 && stage.explained.chosen) ||
    ch.added.find((e) => e.d === 2) || ch.removed.find((e) => e && e.d === 2));
  if (touched) {
    const parent = entries.find((e) => e.d === 1 && e.a <= touched.a && touched.a < e.a + e.s);
    if (parent) {
      const kids = entries.filter((e) => e.d === 2 && e.a >= parent.a && e.a < parent.a + parent.s);
      const by = [0, 0, 0, 0, 0], sizes = new Set();
      for (const e of kids) { by[e.st] += e.st === UNUSED && kindName(e) !== "block" ? 0 : 1; if (kindName(e) === "block") sizes.add(e.s); }
      const unusedBytes = kids.filter((e) => e.st === UNUSED).reduce((n, e) => n + e.s, 0);
      box.appendChild(el("div", "", `${kindName(parent)} ${offsetText(parent.a)} (this step): ${by[USED]} used, ${by[FREE]} free` +
        (by[REMOTE] ? `, ${by[REMOTE]} remote (freed by another thread, not yet collected)` : "") + " blocks" +
        (sizes.size === 1 ? ` of ${bytes([...sizes][0])}` : "") + `, ${bytes(unusedBytes)} not yet carved`));
    }
  }
  // Stage 1 teaches a free list; the walker reports blocks in address order, not list order.
  const free = entries.filter((e) => e.d === 1 && e.st === FREE && kindName(e) === "block");
  if (free.length && regions.some((r) => kindName(r) === "region")) {
    const d = el("div", "list");
    d.textContent = `free blocks (${free.length}, address order): ` + free.slice(0, 16).map((e) => `${offsetText(e.a)}:${e.s}`).join(" ") + (free.length > 16 ? " ..." : "");
    box.appendChild(d);
  }
  box.appendChild(el("div", "list", named(counts).join(" | ")));
}

// ---- Numbers and the chart -------------------------------------------------------------------------
function numbers(stage) {
  let live = 0, held = 0, used = 0;
  for (const e of stage.entries) { if (e.d === 0) held += e.s; if (e.st === USED && e.d > 0) { used += e.s; } }
  live = used;
  return {held, live};
}

const CHART_COLOURS = ["#c0392b", "#2471a3", "#7d3c98", "#1e8449", "#b9770e", "#17202a"];
let chartBackground = null;  // the lines, drawn once per size; each step adds only the cursor
function drawChart() {
  const c = document.getElementById("chart"), dpr = window.devicePixelRatio || 1;
  if (!chartBackground) chartBackground = chartLines(c.clientWidth, c.clientHeight, dpr);
  const {w, h, image, X} = chartBackground;
  if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
  const g = c.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, c.width, c.height);  // the lines' image is transparent: the last cursor would stay
  g.drawImage(image, 0, 0);
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.strokeStyle = "#f2b705"; g.lineWidth = 2; g.beginPath(); g.moveTo(X(current), 10); g.lineTo(X(current), h - 22); g.stroke();
}
function chartLines(w, h, dpr) {
  const image = document.createElement("canvas");
  image.width = w * dpr; image.height = h * dpr;
  const g = image.getContext("2d"), c = document.getElementById("chart");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 60, R = 215, T = 10, B = 22, total = Math.max(D.opCount, 1);
  let max = 1;
  for (const s of D.stages) for (let i = 0; i < s.timeline.length; i += 3) max = Math.max(max, s.timeline[i + 2], s.timeline[i + 1]);
  const X = (op) => L + (op / total) * (w - L - R), Y = (v) => h - B - (v / max) * (h - T - B);
  g.strokeStyle = "#e3e6eb"; g.fillStyle = "#5b6474"; g.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) { const v = (max * i) / 4; g.beginPath(); g.moveTo(L, Y(v)); g.lineTo(w - R, Y(v)); g.stroke(); g.fillText(bytes(Math.round(v)), 4, Y(v) + 4); }
  g.fillText("operations: 0", L, h - 6); g.fillText(String(D.opCount), w - R - 40, h - 6);
  D.stages.forEach((s, k) => {
    const col = CHART_COLOURS[k % CHART_COLOURS.length];
    for (const [field, dash] of [[2, []], [1, [4, 3]]]) {
      if (field === 1 && k > 0) continue;  // live bytes are the program's: the same for every stage
      g.strokeStyle = field === 1 ? "#444" : col; g.setLineDash(dash); g.lineWidth = 1.6; g.beginPath();
      for (let i = 0; i < s.timeline.length; i += 3) { const x = X(s.timeline[i]), y = Y(s.timeline[i + field]); i ? g.lineTo(x, y) : g.moveTo(x, y); }
      g.stroke();
    }
    g.setLineDash([]);
    g.fillStyle = col; g.fillRect(w - R + 10, T + 4 + k * 16, 14, 3);
    g.fillStyle = "#1d2330"; g.fillText(`${s.name} footprint`, w - R + 28, T + 9 + k * 16);
  });
  g.setLineDash([4, 3]); g.strokeStyle = "#444"; g.beginPath(); g.moveTo(w - R + 10, T + 6 + D.stages.length * 16); g.lineTo(w - R + 24, T + 6 + D.stages.length * 16); g.stroke(); g.setLineDash([]);
  g.fillText("live bytes (program)", w - R + 28, T + 9 + D.stages.length * 16);
  c.onclick = (ev) => { const r = c.getBoundingClientRect(); go(Math.round(((ev.clientX - r.left - L) / (w - L - R)) * total)); };
  return {w, h, image, X};
}

// ---- Stepping and showing -----------------------------------------------------------------------------
function clamp(n) { return Math.max(0, Math.min(D.opCount, Math.round(n))); }
const timing = {move: 0, render: 0};  // milliseconds the last go() spent on each
function go(target) {
  target = clamp(target);
  const t0 = performance.now();
  for (const s of stages) s.tl.goTo(target);
  current = target;
  const t1 = performance.now();
  render();
  timing.move = t1 - t0;
  timing.render = performance.now() - t1;
  return current;
}

const parts = {};
const timed = (name, f) => { const t = performance.now(); f(); parts[name] = (parts[name] || 0) + performance.now() - t; };
function render() {
  for (const k in parts) parts[k] = 0;
  const op = document.getElementById("opline");
  op.innerHTML = "";
  op.append(el("span", "", `step ${current} / ${D.opCount}  `));
  if (current > 0) op.append(el("b", "", opText(current - 1)));
  if (current < D.opCount) op.append(el("span", "next", `next: ${opText(current)}`));
  for (const s of stages) {
    s.change = s.tl.lastChange();
    let ex, n;
    timed("sort", () => { s.entries = s.tl.sorted(); });
    timed("explain", () => { ex = explain(s, current); n = numbers(s); });
    s.explained = ex;
    s.ui.changes.textContent = "";
    for (const line of ex.lines.slice(0, 6)) s.ui.changes.appendChild(el("div", "", line));
    s.ui.nums.textContent = `held ${bytes(n.held)} | in used blocks ${bytes(n.live)} | ${n.held ? ((100 * n.live) / n.held).toFixed(1) : "0.0"}% | ${s.entries.length} walk entries | 1 px = ${bytes(s.bytesPerPx)}`;
    timed("draw", () => draw(s));
    const finest = Math.min(...s.fine.map((f) => f.bpp));  // pages at their own scale (finePages)
    if (s.fine.length) s.ui.nums.textContent += `, ${s.fine[0].kind}${s.fine.length > 1 ? "s" : ""} underlined ${bytes(finest)}${s.fine.some((f) => f.bpp !== finest) ? " or more" : ""}`;
    timed("structures", () => structures(s));
    renderPredict(s);
  }
  timed("chart", drawChart);
  requestAnimationFrame(follow);  // scrolling reads layout: after this step's drawing, not in it
  document.getElementById("jump").value = current;
}

function stepBy(n) {
  if (predicting && n > 0) { flashPredict(); return current; }
  return go(current + n);
}

function play() {
  const b = document.getElementById("play");
  if (predicting && !playing) { flashPredict(); return; }  // playing would reveal every outcome unasked
  if (playing) { clearInterval(playing); playing = null; b.classList.remove("on"); b.textContent = "\u25B6 play"; return; }
  b.classList.add("on"); b.textContent = "\u275A\u275A pause";
  let last = performance.now(), owed = 0;
  playing = setInterval(() => {
    const now = performance.now(), speed = +document.getElementById("speed").value;
    owed += ((now - last) / 1000) * speed; last = now;
    const n = Math.floor(owed);
    if (n > 0) { owed -= n; go(current + n); }
    if (current >= D.opCount) play();
  }, 40);
}

// ---- Predict mode -------------------------------------------------------------------------------------
// The panel is built anew at every guess and step; a student at one of its buttons (Tab, Enter)
// stays there, on the same choice or the panel's first, rather than back at the top of the page.
function renderPredict(s) {
  const p = s.ui.predict;
  s.ui.canvas.tabIndex = predicting && current < D.opCount && Ops.kind[current] !== 1 ? 0 : -1;  // a map to guess on
  const focused = p.contains(document.activeElement) ? document.activeElement.dataset.choice : undefined;
  p.textContent = "";
  askPredict(s, p);
  if (focused === undefined) return;
  const b = Array.from(p.querySelectorAll("button")).find((x) => x.dataset.choice === focused) || p.querySelector("button");
  if (b) b.focus();
}
function askPredict(s, p) {
  if (!predicting || current >= D.opCount) return;
  const g = guesses.get(s.index), kind = Ops.kind[current];
  const home = kind === 1 ? freedHome(s, current) : null;
  if (home) {
    p.append(el("div", "", `Next: ${opText(current)}. Where does ${s.spec.name} put the block?`));
    for (const f of Object.keys(FATES)) {
      const b = choice(g && g.fate === f, FATES[f](kindName(home)), "fate " + f);
      b.onclick = () => { edu.guess(s.index, {fate: f}); };
      p.append(b);
    }
  } else if (kind === 1) {
    p.append(el("div", "", `Next: ${opText(current)}. Which free neighbours will ${s.spec.name} merge it with?`));
    for (const m of ["none", "prev", "next", "both"]) {
      const b = choice(g && g.merge === m, m === "prev" ? "previous" : m, "merge " + m);
      b.onclick = () => { edu.guess(s.index, {merge: m}); };
      p.append(b);
    }
  } else {
    // A block the heap holds no room for comes from memory the map does not show yet (the first
    // malloc, a break grown, a new arena, segment or page): that is a guess of its own.
    p.append(el("div", "", `Next: ${opText(current)}. Click the block or space where ${s.spec.name} will put it (or Tab to the map: arrow keys, Enter), or:`));
    const b = choice(g && g.fresh, "new memory from the OS", "fresh");
    b.onclick = () => { edu.guess(s.index, {fresh: true}); };
    p.append(b);
    if (g && g.entry) p.append(el("div", "", `your guess: ${describeEntry(g.entry)}`));
    const pick = picked(s);
    if (pick) {
      const line = el("div", "", pick.entry ? `on the map: ${describeEntry(pick.entry)}, ${pick.index + 1} of ${pick.count} that could hold ${bytes(Ops.size[current])}; ` +
        (g && g.entry === pick.entry ? "Enter again reveals" : "Enter guesses it") : `on the map: nothing free holds ${bytes(Ops.size[current])}`);
      line.setAttribute("role", "status");  // read out as the arrows move
      p.append(line);
    }
  }
  // A verdict belongs to the step it revealed: gone back or jumped, it would judge another.
  if (s.verdict && s.verdict.step === current) p.append(el("div", s.verdict.skipped ? "skipped" : s.verdict.right ? "right" : "wrong", s.verdict.text));
}
// ---- Guessing on the map with the keyboard ---------------------------------------------------------
// With a stage's map focused (Tab) before an allocation, the arrows move a candidate over the
// entries that could hold the block (free, unused or remote space at least its size, the deepest
// there; for a realloc, its own block too), in address order, Shift ten at a time; Enter guesses
// the candidate as a click would, and Enter on the guess already made reveals.
function candidates(s) {
  const size = Ops.size[current], own = Ops.kind[current] === 2 ? Ops.id[current] + 1 : 0, list = [], es = s.entries;
  for (let i = 0; i < es.length; i++) {
    const e = es[i], next = es[i + 1];
    if (e.d === 0 || (range && (e.a + e.s <= range[0] || e.a >= range[1]))) continue;
    if (own && e.st === USED && e.id === own) { list.push(e); continue; }
    if (e.st === USED || e.st === META || e.s < size) continue;
    if (next && next.d > e.d && next.a < e.a + e.s) continue;  // space carved into blocks: they are the candidates
    list.push(e);
  }
  return list;
}
// The candidate of stage s at this step: {entry (null: none holds the block), index, count}, or null.
const picked = (s) => (s.pick && s.pick.step === current ? s.pick : null);
function mapKey(s, ev) {
  if (!predicting || current >= D.opCount || Ops.kind[current] === 1 || ev.ctrlKey || ev.altKey || ev.metaKey) return false;
  const k = ev.key, dir = k === "ArrowRight" || k === "ArrowDown" ? 1 : k === "ArrowLeft" || k === "ArrowUp" ? -1 : 0;
  if (dir) { movePick(s, dir * (ev.shiftKey ? 10 : 1)); return true; }
  const pick = picked(s);
  if (k !== "Enter" || !pick || !pick.entry) return false;  // nothing picked: Enter reveals, as on the page
  const g = guesses.get(s.index);
  if (g && g.entry === pick.entry) reveal();
  else edu.guess(s.index, {offset: pick.entry.a, depth: pick.entry.d});
  return true;
}
function movePick(s, n) {
  const list = candidates(s), g = guesses.get(s.index), pick = picked(s);
  let i = list.indexOf(pick ? pick.entry : g ? g.entry : null);
  i = i < 0 ? (n > 0 ? 0 : list.length - 1) : Math.max(0, Math.min(list.length - 1, i + n));
  s.pick = {step: current, entry: list[i] || null, index: i, count: list.length};
  // Into view: the row that holds it, scrolled to a third of the box as follow() does.
  const row = s.pick.entry && (s.ui.rows || []).find((r) => r.lo <= s.pick.entry.a && s.pick.entry.a < r.hi);
  if (row && (row.y < s.ui.scrollTop || row.y > s.ui.scrollTop + s.ui.height - ROW)) {
    s.ui.box.scrollTop = Math.max(0, row.y - s.ui.height / 3);
    s.ui.scrollTop = s.ui.box.scrollTop;
  }
  draw(s); renderPredict(s);
}

// A guess's button: `key` names its choice, so focus can find it again in a panel built anew.
function choice(on, text, key) {
  const b = el("button", on ? "on" : "", text);
  b.dataset.choice = key;
  return b;
}
function flashPredict() {
  for (const s of stages) s.ui.predict.style.outline = "2px solid #3569c7";
  setTimeout(() => { for (const s of stages) s.ui.predict.style.outline = ""; }, 300);
}
function setPredict(on) {
  predicting = !!on;
  document.body.classList.toggle("predicting", predicting);
  document.getElementById("predict").classList.toggle("on", predicting);
  if (playing && predicting) play();
  guesses.clear();
  for (const s of stages) s.verdict = null;
  for (const s of stages) s.ui.changes.classList.toggle("outcome", true);
  render();
  return predicting;
}
// A guess in the words of the button or block it was made with.
function guessText(g, home) {
  if (g.fresh) return "new memory from the OS";
  if (g.entry) return describeEntry(g.entry);
  if (g.fate) return FATES[g.fate](home ? kindName(home) : "pool");
  return g.merge === "none" ? "no merge" : `a merge with ${MERGES[g.merge]}`;
}
function reveal() {
  if (!predicting || current >= D.opCount) return null;
  const kind = Ops.kind[current], results = [], skipped = [];
  const held = new Map(stages.map((s) => [s.index, (s.entries || []).map((e) => [e.a, e.a + Math.max(e.s, 1)])]));
  const homes = new Map(stages.map((s) => [s.index, kind === 1 ? freedHome(s, current) : null]));
  go(current + 1);
  for (const s of stages) {
    const g = guesses.get(s.index), ex = s.explained;
    let right = false, truth;
    const home = homes.get(s.index);
    if (home) {
      // Emptied: no block of its pool or page is in use after the free (a page kept for reuse
      // still shows as in use on the map; its blocks say it is empty).
      const inUse = s.entries.some((e) => e.d === home.d + 1 && e.st === USED && home.a <= e.a && e.a < home.a + Math.max(home.s, 1));
      truth = ex.fate === "remote" ? "remote" : inUse ? "list" : "emptied";
      right = !!g && g.fate === truth;
    }
    else if (kind === 1) { truth = ex.merged || "none"; right = !!g && g.merge === truth; }
    else {
      // New memory: no entry of the heap before the step held the block's address.
      const fresh = !!ex.chosen && !held.get(s.index).some(([a, end]) => a <= ex.chosen.a && ex.chosen.a < end);
      truth = ex.chosen ? offsetText(ex.chosen.a) + (fresh ? " from new memory" : "") : "?";
      right = !!g && !!ex.chosen && (g.fresh ? fresh : !!g.entry && g.entry.a <= ex.chosen.a && ex.chosen.a < g.entry.a + Math.max(g.entry.s, 1));
    }
    tally.byStage[s.index] = tally.byStage[s.index] || {right: 0, guessed: 0, skipped: 0};
    const mine = tally.byStage[s.index];
    for (const t of [tally, mine]) if (g) { t.guessed++; if (right) t.right++; } else t.skipped++;
    if (!g) skipped.push(s.spec.name);
    // Why, in the step's own words (where the block came from, what merged), and what was guessed.
    const why = ex.lines.slice(1).filter((l) => !/^(back on its|no free neighbour)/.test(l)).slice(0, 2).join("; ");
    s.verdict = {right, skipped: !g, step: current, text: `${opText(current - 1)}: ` + (!g ? "no guess (skipped, not counted): " : right ? "right, " : "not quite: ") + (home ? `it went ${FATES[truth](kindName(home)).replace(/^a /, "as a ")}` : kind === 1 ? `it merged with ${MERGES[truth]}` : `it returned ${truth}`) +
      (why ? ` (${why})` : "") + (g && !right ? `; you guessed ${guessText(g, home)}` : "") +
      `; ${s.spec.name} so far: ` + (mine.guessed ? `${mine.right} of ${mine.guessed} right` : "no guess") +
      (mine.skipped ? `, ${mine.skipped} skipped` : "")};
    results.push({stage: s.spec.name, right, truth});
  }
  guesses.clear();
  const shown = document.getElementById("tally");
  shown.textContent = `tally ${tally.right} / ${tally.guessed} guessed` + (skipped.length ? `; skipped: ${skipped.join(", ")}` : "");
  shown.title = stages.map((s) => { const t = tally.byStage[s.index]; return `${s.spec.name}: ${t.right} of ${t.guessed} right, ${t.skipped} skipped`; }).join("\n");
  for (const s of stages) renderPredict(s);
  return results;
}

// ---- Building the page -------------------------------------------------------------------------------
function build() {
  const grid = document.getElementById("stages");
  grid.style.gridTemplateColumns = `repeat(${Math.min(stages.length, 4)}, minmax(0, 1fr))`;
  const tip = document.getElementById("tip");
  for (const s of stages) {
    const box = el("section", "stage");
    const h = el("h2", "", `${s.spec.name} `);
    h.appendChild(el("span", "", s.spec.summary));
    box.appendChild(h);
    const ui = s.ui = {nums: el("div", "nums"), predict: el("div", "predict"), changes: el("div", "changes"), box: el("div", "mapbox"), canvas: el("canvas"), structs: el("div", "structs")};
    if (!s.spec.valid) box.appendChild(el("div", "wrong", "FAILED validation: " + s.spec.failure));
    box.append(ui.nums, ui.predict, ui.changes, ui.box, ui.structs);
    ui.box.appendChild(ui.canvas);
    ui.scrollTop = 0;
    ui.box.addEventListener("scroll", () => {
      ui.scrollTop = ui.box.scrollTop;
      if (!ui.redraw) ui.redraw = requestAnimationFrame(() => { ui.redraw = 0; if (s.entries) draw(s); });
    }, {passive: true});
    grid.appendChild(box);
    ui.section = box;
    ui.canvas.addEventListener("mousemove", (ev) => {
      const r = ui.canvas.getBoundingClientRect(), e = hitTest(s, ev.clientX - r.left, ev.clientY - r.top);
      if (!e) { tip.style.display = "none"; return; }
      tip.textContent = `${kindName(e)}  ${STATES[e.st]}\nstate   ${MEANING[e.st]}\naddress ${offsetText(e.a)}  (${pointer(s, e.a)} in the recording)\nsize    ${e.s} B (${bytes(e.s)})\ndepth   ${e.d}` +
        (e.id ? `\nid      ${e.id - 1}` : "") + `\nmade by step ${e.born}` + (e.born ? `: ${opText(e.born - 1)}` : " (before the trace)");
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 260) + "px";
      tip.style.top = ev.clientY + 14 + "px";
    });
    ui.canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    ui.canvas.addEventListener("click", (ev) => {
      if (!predicting || Ops.kind[current] === 1) return;
      const r = ui.canvas.getBoundingClientRect(), e = hitTest(s, ev.clientX - r.left, ev.clientY - r.top);
      if (e) edu.guess(s.index, {offset: e.a, depth: e.d});
    });
    ui.canvas.setAttribute("aria-label", `${s.spec.name}'s map`);
    ui.canvas.addEventListener("keydown", (ev) => { if (mapKey(s, ev)) { ev.preventDefault(); ev.stopPropagation(); } });
    ui.canvas.addEventListener("wheel", (ev) => {
      if (!ev.ctrlKey && !ev.altKey) return;
      ev.preventDefault();
      zoom(ev.deltaY < 0 ? 1 : -1);
    }, {passive: false});
  }
  const on = (id, f) => document.getElementById(id).addEventListener("click", f);
  const N = () => Math.max(1, +document.getElementById("n").value || 1);
  on("first", () => go(0)); on("last", () => stepBy(D.opCount - current));
  on("back", () => stepBy(-1)); on("fwd", () => stepBy(1));
  on("backN", () => stepBy(-N())); on("fwdN", () => stepBy(N()));
  on("play", play);
  on("predict", () => setPredict(!predicting));
  on("helpb", () => document.getElementById("help").classList.toggle("show"));
  const show = document.getElementById("show");
  stages.forEach((s) => show.appendChild(el("option", "", `${s.index + 1}: ${s.spec.name}`)).value = String(s.index));
  show.addEventListener("change", () => { setSolo(show.value === "" ? null : +show.value); show.blur(); });
  if (stages.length < 2) show.parentElement.style.display = "none";
  document.getElementById("jump").addEventListener("change", (ev) => go(+ev.target.value));
  document.getElementById("zoom").addEventListener("input", () => { setZoom(); render(); });
  document.getElementById("range").addEventListener("change", (ev) => { setRange(ev.target.value); setZoom(); render(); });
  document.getElementById("follow").addEventListener("change", render);
  window.addEventListener("resize", () => { measure(); chartBackground = null; render(); });
  document.addEventListener("keydown", (ev) => {
    // A text box keeps its keys; Enter (which applies it: `g` 7 Enter) or Escape hands them back.
    if (ev.target.tagName === "INPUT" && ev.target.type !== "checkbox" && ev.target.type !== "range") { if (ev.key === "Escape" || ev.key === "Enter") ev.target.blur(); return; }
    // A letter with Shift or Caps Lock reads as a capital: Shift+l is "L" (shiftKey says which).
    const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    // A guess's button reached with Tab takes Enter or Space as a click would; Enter on the guess
    // already made reveals (focus stays on the button, so Enter reaches it, not the page).
    if ((k === "Enter" || k === " ") && ev.target.closest && ev.target.closest(".predict button")) {
      if (k === "Enter" && ev.target.classList.contains("on")) { reveal(); ev.preventDefault(); }
      return;
    }
    if (k === "Escape") { document.getElementById("help").classList.remove("show"); return; }
    if (k === "ArrowRight" || k === "l") stepBy(ev.shiftKey ? N() : 1);
    else if (k === "ArrowLeft" || k === "h") stepBy(ev.shiftKey ? -N() : -1);
    else if (k === "Home") go(0);
    else if (k === "End") stepBy(D.opCount - current);
    else if (k === " ") play();
    else if (k === "g") { document.getElementById("jump").focus(); document.getElementById("jump").select(); }
    else if (k === "+" || k === "=") zoom(1);
    else if (k === "-") zoom(-1);
    else if (k === "p") setPredict(!predicting);
    else if (k === "Enter") reveal();
    else if (k === "?") document.getElementById("help").classList.toggle("show");
    else if (/^[0-9]$/.test(k) && !ev.ctrlKey && !ev.altKey && !ev.metaKey) setSolo(k === "0" ? null : +k - 1);
    else return;
    ev.preventDefault();
  });
}

// One stage across the whole width, in larger type (a class at the back of a room, a student
// following one chapter): stage i, or every stage again (null, the same stage again, or one the
// page does not hold). Returns the index shown alone, or null.
let solo = null;
function setSolo(i) {
  solo = i === null || i === solo || !(i >= 0 && i < stages.length) ? null : i;
  const grid = document.getElementById("stages");
  for (const s of stages) s.ui.section.style.display = solo === null || s.index === solo ? "" : "none";
  grid.style.gridTemplateColumns = solo === null ? `repeat(${Math.min(stages.length, 4)}, minmax(0, 1fr))` : "minmax(0, 1fr)";
  document.body.classList.toggle("solo", solo !== null);
  mapScale(solo === null ? 1 : 1.5);
  document.getElementById("show").value = solo === null ? "" : String(solo);
  measure(); fitZoom(); render();
  return solo;
}

function setZoom() {
  zoomLevel = +document.getElementById("zoom").value;
  for (const s of stages) {
    // A range shown fills about 12 rows; otherwise the stage's own fitted scale.
    const fit = range ? scaleFor(range[1] - range[0], 12, s.ui.width) : s.fitBytesPerPx;
    s.bytesPerPx = Math.max(1 / 64, fit * Math.pow(2, -zoomLevel));
  }
}
const scaleFor = (bytes, rows, width) => Math.pow(2, Math.ceil(Math.log2(Math.max(1 / 64, bytes / (rows * (width - LEFT - 8))))));
function zoom(dir) {
  const z = document.getElementById("zoom");
  z.value = String(Math.max(+z.min, Math.min(+z.max, +z.value + dir)));
  setZoom(); render();
}
function setRange(text) {  // "4096-12288", "+4096-+12288", "-8192-+256", "0x1000-0x3000"
  const num = "([+-]?)\\s*(0x[0-9a-f]+|\\d+)";
  const m = text.trim().match(new RegExp("^" + num + "\\s*-\\s*" + num + "$", "i"));
  const value = (sign, digits) => (sign === "-" ? -1 : 1) * Number(digits);
  range = m ? [value(m[1], m[2]), value(m[3], m[4])] : null;
  if (range && range[1] <= range[0]) range = null;
  document.getElementById("range").style.borderColor = text.trim() && !range ? "#b3261e" : "";
}
// Each stage's starting scale: its largest holding (peak footprint, or the widest top-level
// entry now, up to 64 MiB) in about 24 rows; a power of two, so zooming stays in round numbers.
function fitZoom() {
  for (const s of stages) {
    let widest = Math.min(s.spec.peakFootprint, 64 << 20);
    for (const e of s.tl.heap.values()) if (e.d === 0) widest = Math.max(widest, Math.min(e.s, 64 << 20));
    const width = s.ui.width;
    s.fitBytesPerPx = Math.max(1, scaleFor(widest, 24, width));
  }
  setZoom();
}

// The deepest entry of a stage's heap at an offset (or the one at `depth`), or undefined.
const deepestAt = (s, offset, depth) => s.entries.filter((x) => x.a <= offset && offset < x.a + Math.max(x.s, 1) && (depth === undefined || x.d === depth)).pop();

// ---- window.edu: the page's API (docs/diffing.md) -----------------------------------------------------
const edu = window.edu = {
  ready: null,
  // Moves n operations (negative: back) and returns the step now shown.
  step: (n) => stepBy(n === undefined ? 1 : n),
  go,  // to an absolute step: 0 (before the first operation) .. ops()
  ops: () => D.opCount,
  op: (i) => opText(i),  // operation i (0-based) as a trace line
  stages: () => stages.map((s) => s.spec.name),
  // {step, stages: [{name, blocks, changes}]}, blocks as `stagediff --json --steps` prints them
  // (html.h, heap_json): [region, offset, size, state, kind, depth]; changes: the step in words.
  state() {
    return {step: current, stages: stages.map((s) => {
      const tops = s.entries.filter((e) => e.d === 0).sort((x, y) => (kindName(x) < kindName(y) ? -1 : kindName(x) > kindName(y) ? 1 : x.a - y.a));
      const number = new Map(tops.map((e, i) => [e, i]));
      const placed = [];
      let top = null;
      for (const e of s.entries) {
        if (e.d === 0) top = e;
        const start = top ? top.a : s.entries[0].a;
        placed.push([top ? number.get(top) : -1, e.a - start, e.s, STATES[e.st], kindName(e), e.d]);
      }
      const blocks = placed.map((p, i) => [p, i]).sort((x, y) => x[0][0] - y[0][0] || x[1] - y[1]).map((x) => x[0]);
      return {name: s.spec.name, blocks, changes: s.explained.lines};
    })};
  },
  // What stage i's map shows at an offset: the deepest entry there (or the one at `depth`),
  // {a: offset, s: size, d: depth, id, kind, state, born}, or null.
  entryAt(i, offset, depth) {
    const e = deepestAt(stages[i], offset, depth);
    return e ? {...e, id: e.id - 1, kind: kindName(e), state: STATES[e.st]} : null;
  },
  // Stage i's map as last drawn, a row each: {at: the offset it starts at, label: what its left
  // margin says, fine: whether it starts in a page drawn at a scale of its own}.
  rows: (i) => (stages[i].ui.rows || []).map((r) => ({at: r.lo, label: r.label, fine: r.segs.length > 0 && r.segs[0].fine})),
  // Where stage i's map draws the entry at an offset (as entryAt finds it): [{x, y, w, h}] in
  // CSS pixels of its canvas, one a row or scale it spans; [] while it is out of view.
  drawn(i, offset, depth) {
    const e = deepestAt(stages[i], offset, depth);
    return stages[i].ui.rects.filter((r) => r.e === e).map(({x, y, w, h}) => ({x, y, w, h}));
  },
  // The first step after `from` whose change for stage i, in words, matches `pattern`; or -1.
  find(i, pattern, from) {
    const re = new RegExp(pattern), keep = current;
    for (let n = (from || 0) + 1; n <= D.opCount; n++) {
      stages[i].tl.goTo(n);
      stages[i].change = stages[i].tl.lastChange();
      if (explain(stages[i], n).lines.some((l) => re.test(l))) { go(keep); return n; }
    }
    go(keep);
    return -1;
  },
  show: setSolo,  // stage i alone across the page (keys 1-4), null for every stage (0)
  predict: setPredict,  // predict mode on or off; while on, stepping forward waits for reveal()
  predicting: () => predicting,
  // A guess for stage i's next outcome: {offset} of the block or space it will use (alloc,
  // realloc), {fresh: true} for memory the heap does not hold yet, or
  // {merge: "none"|"prev"|"next"|"both"} (the free of a region's block: stage 1's, stage 2's
  // large ones), or {fate: "list"|"emptied"|"remote"} (the free of a pool's or page's block).
  guess(i, g) {
    const s = stages[i];
    const entry = g.offset !== undefined ? s.entries.filter((x) => x.d > 0 && x.a <= g.offset && g.offset < x.a + Math.max(x.s, 1) &&
      (g.depth === undefined || x.d === g.depth)).pop() : null;
    guesses.set(i, {merge: g.merge, fate: g.fate, entry, fresh: !!g.fresh});
    s.verdict = null;
    draw(s); renderPredict(s);
  },
  reveal,  // steps one operation and scores the guesses: [{stage, right, truth}]
  timing: () => ({...timing, parts}),
  // The chart's x for operation n, in CSS pixels of its canvas (where the cursor is drawn).
  chartX: (n) => (chartBackground ? chartBackground.X(n) : null),  // where the time of the last go() went
  // {right, guessed, skipped, byStage: [the same for each stage]}: a stage with no guess at a
  // reveal is skipped, not counted.
  tally: () => ({right: tally.right, guessed: tally.guessed, skipped: tally.skipped,
                 byStage: stages.map((s) => tally.byStage[s.index] || {right: 0, guessed: 0, skipped: 0})}),
};

edu.ready = (async function () {
  document.getElementById("title").textContent = D.title;
  if (D.workload.includes("/")) document.getElementById("title").title = D.workload;  // the trace's path, on hover
  document.title = "edu-alloc: " + D.title;
  const ops = await inflate(D.ops), r = new Reader(ops);
  Ops.kind = new Uint8Array(D.opCount); Ops.thread = new Uint8Array(D.opCount);
  Ops.id = new Uint32Array(D.opCount); Ops.size = new Float64Array(D.opCount);
  for (let i = 0; i < D.opCount; i++) {
    const b = ops[r.p++];
    Ops.kind[i] = b & 3; Ops.thread[i] = b >> 2; Ops.id[i] = r.next(); Ops.size[i] = Ops.kind[i] === 1 ? 0 : r.next();
  }
  stages = await Promise.all(D.stages.map(async (spec, index) => ({spec, index, tl: new Timeline(spec, await inflate(spec.steps), await inflate(spec.keyframes))})));
  document.getElementById("loading").remove();
  build();
  measure();
  fitZoom();
  render();
  return true;
})();
})();
