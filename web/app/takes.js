// Takes: arm / start / stop, the countdown everyone sees, each take's singers with their
// upload state, updated live by `take.updates`, and each take's mix (mix.js, `take.mix`).

import { api } from "./api.js";
import { TakeMixView } from "./mix.js";

const STATE_WORDS = {
  expected: "waiting",
  recording: "recording",
  recorded: "recorded",
  uploading: "uploading",
  uploaded: "✓ uploaded",
  failed: "✗ failed",
  missed: "missed",
};

function clock(s) {
  const t = Math.max(0, Math.floor(s));
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}

export class Takes {
  constructor(els, report) {
    this.els = els; // {arm, start, stop, countdown, list}
    this.report = report; // shows an error sentence
    this.takes = new Map(); // take_id -> TakeInfo
    this.items = new Map(); // take_id -> {li, head, ul, mix}: kept, so a playing mix plays on
    this.current = null; // {take_id, state}
    this.t0Local = null; // performance.now() seconds of timeline sample 0
    this.countIn = 0;
    this.timer = null;
    this.onChange = () => {};
    els.arm.addEventListener("click", () => this.act(() => this.arm()));
    els.start.addEventListener("click", () => this.act(() => this.start()));
    els.stop.addEventListener("click", () => this.act(() => this.stop()));
  }

  async act(fn) {
    try {
      await fn();
    } catch (err) {
      this.report(err.message);
    }
  }

  async arm() {
    const r = await api("POST", "/api/session/takes");
    this.setCurrent(r.take_id, "armed");
    await this.reload();
  }

  async start() {
    await api("POST", `/api/session/takes/${this.current.take_id}/start`);
  }

  async stop() {
    await api("POST", `/api/session/takes/${this.current.take_id}/stop`);
  }

  /** All takes from the server (on load, and when a take is armed or stopped). */
  async reload() {
    const r = await api("GET", "/api/session/takes");
    this.takes = new Map(r.takes.map((t) => [t.take_id, t]));
    const last = r.takes[r.takes.length - 1];
    this.render();
    if (last && (!this.current || this.current.take_id === last.take_id)) {
      this.setCurrent(last.take_id, last.state);
    }
  }

  /** Forget the takes of a session the page no longer shows (sign-out). */
  reset() {
    this.takes = new Map();
    this.items = new Map();
    this.current = null;
    this.stopCountdown("");
    this.render();
    for (const b of [this.els.start, this.els.stop]) b.disabled = true;
    this.els.arm.disabled = false;
  }

  setCurrent(takeId, state) {
    this.current = { take_id: takeId, state };
    const { arm, start, stop } = this.els;
    arm.disabled = state === "armed" || state === "running";
    start.disabled = state !== "armed";
    stop.disabled = state !== "armed" && state !== "running";
    if (state === "armed") this.els.countdown.textContent = "Armed: singers are getting ready. Press Start when everyone is.";
    if (state === "stopped") this.stopCountdown("Stopped. The recordings upload below.");
    this.onChange();
  }

  /** `take.start`: count down to timeline sample 0 as the singers' programs do. */
  started(ev) {
    this.setCurrent(ev.take_id, "running");
    const take = this.takes.get(ev.take_id);
    if (take) {
      this.takes.set(ev.take_id, { ...take, state: "running", t0: ev.t0 });
      this.render();
    } else {
      this.reload();
    }
    const s = ev.settings;
    this.countIn = (s.count_in_bars * s.beats_per_bar * 60) / s.bpm;
    this.beats = s.count_in_bars * s.beats_per_bar;
    this.t0Local = performance.now() / 1000 + (ev.t0 - ev.sent_at);
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), 100);
    this.tick();
  }

  tick() {
    const el = this.els.countdown;
    const dt = performance.now() / 1000 - this.t0Local;
    if (dt < 0) {
      el.textContent = `Starting in ${Math.ceil(-dt)}…`;
      el.dataset.phase = "lead";
    } else if (dt < this.countIn) {
      el.textContent = `Count-in: ${Math.floor((dt / this.countIn) * this.beats) + 1} of ${this.beats}`;
      el.dataset.phase = "count-in";
    } else {
      el.textContent = `● Recording ${clock(dt - this.countIn)}`;
      el.dataset.phase = "recording";
    }
  }

  stopCountdown(message) {
    clearInterval(this.timer);
    this.timer = null;
    this.els.countdown.textContent = message;
    this.els.countdown.dataset.phase = "stopped";
  }

  /** `take.updates`: some singers' upload state on one take. */
  updated(ev) {
    const take = this.takes.get(ev.take_id);
    if (!take) return this.reload();
    const ids = new Set(ev.participant_ids);
    const singers = take.singers.map((s) =>
      ids.has(s.participant_id) ? { ...s, state: ev.state, detail: ev.detail } : s);
    const known = singers.filter((s) => ids.has(s.participant_id)).length;
    if (known < ids.size) return this.reload();
    this.takes.set(ev.take_id, { ...take, singers });
    this.render();
    return undefined;
  }

  /** `take.mix`: the server's mix of one take changed state. */
  mixed(ev) {
    const item = this.items.get(ev.take_id);
    if (item) item.mix.show(ev);
  }

  render() {
    const takes = [...this.takes.values()];
    const items = takes.map((take, i) => this.item(take, i + 1)).reverse();
    const now = [...this.els.list.children];
    if (now.length !== items.length || now.some((li, i) => li !== items[i])) {
      this.els.list.replaceChildren(...items);
    }
  }

  /** The take's list item, made once and updated in place. */
  item(take, n) {
    let it = this.items.get(take.take_id);
    if (!it) {
      const li = document.createElement("li");
      li.dataset.takeId = take.take_id;
      const head = document.createElement("p");
      head.className = "take-head";
      const ul = document.createElement("ul");
      ul.className = "singers";
      const mix = new TakeMixView(take.take_id, n);
      mix.onRefused = () => this.reload().catch((err) => this.report(err.message));
      li.append(head, ul, mix.el);
      it = { li, head, ul, mix, loaded: false };
      this.items.set(take.take_id, it);
    }
    it.li.className = `take ${take.state}`;
    const done = take.singers.filter((s) => s.state === "uploaded").length;
    it.head.textContent = `Take ${n}: ${take.state === "running" ? "recording" : take.state} — ` +
      `${done} of ${take.singers.length} recordings uploaded`;
    it.ul.replaceChildren(...take.singers.map((s) => {
      const chip = document.createElement("li");
      chip.className = `chip ${s.state}`;
      chip.dataset.participantId = s.participant_id;
      chip.textContent = `${s.name} (${s.part}): ${STATE_WORDS[s.state] || s.state}`;
      if (s.detail) chip.title = s.detail;
      return chip;
    }));
    it.mix.setSingers(take.singers);
    if (take.state === "stopped" && !it.loaded) {
      it.loaded = true; // later changes arrive as take.mix
      it.mix.load();
    }
    return it.li;
  }
}
