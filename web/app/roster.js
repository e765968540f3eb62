// The live roster: one row per singer, kept in a Map so an update touches only the cells
// whose value changed.  Each row is a fixed-height grid with CSS containment, so a changed
// number re-lays out its own row, never the list of 1,000.  Levels arrive batched (the `levels` event, every 100 ms); each
// batch's cost is measured with performance.now() and kept on the table's dataset.

const FLOOR_DB = -60; // the meter's left end
const SPOKEN_EVERY = 10; // batches (about a second) between updates of a meter's aria value

function text(el, value) {
  if (el.textContent !== value) el.textContent = value;
}

function latencyText(entry, rate) {
  if (entry.latency_frames == null) return "not measured";
  const ms = (entry.latency_frames / rate) * 1000;
  return `${ms.toFixed(0)} ms`;
}

function clockText(entry) {
  if (!entry.clock) return entry.connected ? "syncing…" : "—";
  return `±${(entry.clock.error_bound * 1000).toFixed(1)} ms`;
}

class Row {
  constructor(entry) {
    const tr = document.createElement("div");
    tr.className = "roster-row";
    tr.setAttribute("role", "row");
    tr.dataset.participantId = entry.participant_id;
    tr.innerHTML =
      '<span role="cell" class="name"></span><span role="cell"></span><span role="cell"></span>' +
      '<span role="cell"></span><span role="cell"></span>' +
      '<span role="cell"><span class="meter" role="meter" aria-valuemin="-60" aria-valuemax="0">' +
      '<span class="fill"></span></span></span>' +
      '<span role="cell" class="drops-n"></span>';
    const c = tr.children;
    this.tr = tr;
    this.cells = { name: c[0], part: c[1], conn: c[2], latency: c[3], clock: c[4] };
    this.drops = tr.querySelector(".drops-n");
    this.meter = tr.querySelector(".meter");
    this.fill = this.meter.firstChild;
    this.level = NaN;
    this.clipped = false;
    this.entry = entry;
  }

  show(entry, rate) {
    this.entry = entry;
    const c = this.cells;
    text(c.name, entry.name);
    text(c.part, entry.part);
    text(c.conn, entry.connected ? "● yes" : "○ no");
    this.tr.classList.toggle("gone", !entry.connected);
    text(c.latency, latencyText(entry, rate));
    text(c.clock, clockText(entry));
    this.showDropouts(entry.dropouts);
    if (entry.level) this.showLevel(entry.level.rms_db, entry.level.clipped);
  }

  showDropouts(n) {
    text(this.drops, String(n));
    this.drops.classList.toggle("warn", n > 0);
  }

  showLevel(rmsDb, clipped, spoken = true) {
    const db = Math.max(FLOOR_DB, Math.min(0, Math.round(rmsDb)));
    if (db !== this.level) {
      this.level = db;
      this.fill.style.transform = `scaleX(${(db - FLOOR_DB) / -FLOOR_DB})`;
    }
    // The number for screen readers as an attribute (new text would re-lay out the row),
    // and only now and then: it costs as much as moving the meter.
    if (spoken && String(db) !== this.meter.getAttribute("aria-valuenow")) {
      this.meter.setAttribute("aria-valuenow", String(db));
    }
    if (clipped !== this.clipped) {
      this.clipped = clipped;
      this.fill.classList.toggle("clip", clipped);
    }
  }
}

export class Roster {
  /** `table`: the roster table; `count`/`empty`: its count and "nobody yet" elements. */
  constructor(table, count, empty) {
    this.table = table;
    this.body = table.querySelector(".roster-body");
    this.count = count;
    this.empty = empty;
    this.rows = new Map();
    this.parts = [];
    this.rate = 48000;
    this.batches = 0;
    this.onChange = () => {};
  }

  configure(settings) {
    this.parts = settings.parts;
    this.rate = settings.rate;
  }

  order(a, b) {
    const pa = this.parts.indexOf(a.part), pb = this.parts.indexOf(b.part);
    return (pa - pb) || a.part.localeCompare(b.part) || a.name.localeCompare(b.name);
  }

  /** The whole roster (on connect): rows rebuilt once. */
  replace(entries) {
    this.rows.clear();
    const sorted = [...entries].sort((a, b) => this.order(a, b));
    const frag = document.createDocumentFragment();
    for (const entry of sorted) {
      const row = new Row(entry);
      row.show(entry, this.rate);
      this.rows.set(entry.participant_id, row);
      frag.appendChild(row.tr);
    }
    this.body.replaceChildren(frag);
    this.summary();
  }

  /** One singer changed (`participant`): its row updated, or inserted in order. */
  upsert(entry) {
    let row = this.rows.get(entry.participant_id);
    if (!row) {
      row = new Row(entry);
      this.rows.set(entry.participant_id, row);
      const next = [...this.rows.values()].find(
        (r) => r !== row && this.order(entry, r.entry) < 0);
      this.body.insertBefore(row.tr, next ? next.tr : null);
    }
    row.show(entry, this.rate);
    this.summary();
  }

  /** A batch of clock estimates (`clocks`): those singers' clock cells only. */
  clocks(batch) {
    for (const [pid, clock] of Object.entries(batch)) {
      const row = this.rows.get(pid);
      if (!row) continue;
      row.entry = { ...row.entry, clock };
      text(row.cells.clock, clockText(row.entry));
    }
  }

  /** A batch of level reports (`levels`): meters and dropouts of those singers only. */
  levels(batch) {
    const t0 = performance.now();
    const spoken = this.batches++ % SPOKEN_EVERY === 0;
    let changed = 0;
    for (const [pid, report] of Object.entries(batch)) {
      const row = this.rows.get(pid);
      if (!row) continue;
      row.showLevel(report.rms_db, report.clipped, spoken);
      if (report.dropouts !== row.entry.dropouts) {
        row.entry = { ...row.entry, dropouts: report.dropouts };
        row.showDropouts(report.dropouts);
      }
      changed += 1;
    }
    const script = performance.now() - t0;
    void this.body.offsetHeight; // style and layout inside the measurement, once per batch
    this.record(performance.now() - t0, script, changed);
  }

  record(ms, scriptMs, rows) {
    const d = this.table.dataset;
    d.lastScriptMs = scriptMs.toFixed(3);
    const n = Number(d.updates || 0) + 1;
    d.updates = String(n);
    d.lastUpdateMs = ms.toFixed(3);
    d.lastUpdateRows = String(rows);
    d.maxUpdateMs = Math.max(Number(d.maxUpdateMs || 0), ms).toFixed(3);
  }

  summary() {
    const all = [...this.rows.values()];
    const on = all.filter((r) => r.entry.connected).length;
    this.count.textContent = all.length ? `(${on} connected of ${all.length})` : "";
    this.empty.hidden = all.length > 0;
    this.onChange();
  }

  connectedCount() {
    return [...this.rows.values()].filter((r) => r.entry.connected).length;
  }

  name(pid) {
    const row = this.rows.get(pid);
    return row ? row.entry.name : pid;
  }
}
