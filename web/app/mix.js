// One take's server mix on the leader's page: the player, each singer's gain and mute (a
// remix on the server), the downloads and the share link. `take.mix` events drive it.

import { api } from "./api.js";

/** The gains the server accepts (wire.MIN_MIX_GAIN_DB / MAX_MIX_GAIN_DB), in dB. */
export const MIN_GAIN_DB = -24;
export const MAX_GAIN_DB = 12;
/** A slider at rest this long (ms) asks for the remix: one request per gesture, not per step. */
const REMIX_DELAY_MS = 600;
/** A version of the mix in these states is never mixing again (a remix is a new version). */
const DONE = new Set(["ready", "failed"]);

/** A gain in words, with a real minus sign: "−6 dB", "+3 dB", "0 dB". */
export function dbWords(db) {
  if (db === 0) return "0 dB";
  return `${db < 0 ? "−" : "+"}${Math.abs(db)} dB`;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function clock(s) {
  const t = Math.max(0, Math.floor(s));
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}

export class TakeMixView {
  /** The mix of take `takeId` (number `n` on the page); `el` stays in the page across renders. */
  constructor(takeId, n) {
    this.takeId = takeId;
    this.n = n;
    this.base = `/api/session/takes/${takeId}`;
    this.status = null; // the latest wire.TakeMix shown
    this.asked = 0; // version of the remix this page asked for last (0: none)
    this.singers = []; // [{participant_id, name, part}] with a recording
    this.rows = new Map(); // participant_id -> {slider, value, mute}
    this.timer = null;
    this.ticker = null;
    this.since = 0;
    this.loadedVersion = 0;
    this.onRefused = () => {}; // the take's singers may have changed: the list reloads
    this.build();
  }

  build() {
    this.stateLine = el("p", { className: "mix-state" });
    this.stateLine.setAttribute("role", "status");
    this.stateLine.setAttribute("aria-live", "polite");
    this.progress = el("progress", { className: "mix-progress", hidden: true });
    this.progress.setAttribute("aria-label", "Mixing");
    this.problem = el("p", { className: "error mix-error", hidden: true });
    this.problem.setAttribute("role", "alert");
    this.audio = el("audio", { controls: true, preload: "metadata", hidden: true });
    this.audio.setAttribute("aria-label", `The choir's mix of take ${this.n}`);
    this.mixer = el("div", { className: "mixer", hidden: true });
    this.downloads = el("div", { className: "mix-downloads", hidden: true });
    this.share = el("div", { className: "mix-share", hidden: true });
    this.el = el("div", { className: "take-mix" },
      this.stateLine, this.progress, this.problem, this.audio, this.mixer, this.downloads, this.share);
    this.el.dataset.takeId = this.takeId;
    this.el.hidden = true; // until the server says what the mix is
  }

  /** The take's singers changed (uploads): those with a recording get a slider. */
  setSingers(singers) {
    const uploaded = singers.filter((s) => s.state === "uploaded");
    const key = (list) => list.map((s) => s.participant_id).join(",");
    if (key(uploaded) === key(this.singers)) return;
    this.singers = uploaded;
    this.buildMixer();
  }

  /** Ask the server for the take's mix as it is now (on load). */
  async load() {
    try {
      this.show(await api("GET", `${this.base}/mix`));
    } catch (err) {
      this.refused(err.message);
    }
  }

  /** `take.mix` (or a reply): show it, unless a newer remix has been asked for since. */
  show(status) {
    if (status.version < this.asked) return;
    if (this.status && status.version < this.status.version) return;
    if (this.status && status.version === this.status.version && status.state === "mixing" &&
        DONE.has(this.status.state)) return; // a remix's reply overtaken by its take.mix
    this.status = status;
    this.el.hidden = false;
    this.el.dataset.state = status.state;
    this.el.dataset.version = String(status.version);
    const remixing = status.version > 1 || this.loadedVersion > 0;
    if (status.state === "mixing") {
      this.busy(remixing ? "Remixing…" : "Mixing…");
    } else if (status.state === "waiting") {
      this.idle(`Mix: not yet — ${status.detail || "waiting for the uploads"}.`);
    } else if (status.state === "failed") {
      this.idle(`The mix did not work: ${status.detail.replace(/^the mix failed: /, "")}`);
      this.stateLine.classList.add("bad");
    } else if (status.state === "ready") {
      this.ready(status);
    }
    this.setValues(status);
  }

  busy(words) {
    if (!this.ticker) {
      this.since = performance.now();
      this.ticker = setInterval(() => this.tick(words), 1000);
    }
    this.busyWords = words;
    this.tick(words);
    this.progress.hidden = false;
    this.el.classList.add("busy");
  }

  tick() {
    const s = (performance.now() - this.since) / 1000;
    this.stateLine.textContent = `${this.busyWords} ${clock(s)}`;
  }

  idle(words) {
    clearInterval(this.ticker);
    this.ticker = null;
    this.progress.hidden = true;
    this.el.classList.remove("busy");
    this.stateLine.classList.remove("bad");
    this.stateLine.textContent = words;
  }

  ready(status) {
    this.idle("Mix ready. Press play to listen.");
    if (this.loadedVersion !== status.version) {
      const at = this.audio.currentTime;
      const playing = !this.audio.paused;
      this.audio.src = `${status.files.opus}?v=${status.version}`; // a new URL per version
      this.loadedVersion = status.version;
      this.audio.dataset.version = String(status.version);
      if (at > 0) {
        this.audio.addEventListener("loadedmetadata", () => {
          this.audio.currentTime = Math.min(at, this.audio.duration || 0);
          if (playing) this.audio.play().catch(() => {});
        }, { once: true });
      }
    }
    this.audio.hidden = false;
    this.mixer.hidden = this.singers.length === 0;
    this.showDownloads(status);
    this.share.hidden = false;
  }

  refused(message) {
    this.problem.textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
    this.problem.hidden = !message;
  }

  // ----------------------------------------------------------------- the sliders

  buildMixer() {
    this.rows.clear();
    const items = this.singers.map((s) => this.singerRow(s));
    const head = el("p", { className: "mixer-head" }, "Each singer's level in the mix:");
    this.mixer.replaceChildren(head, el("ul", { className: "mixer-list" }, ...items));
    if (this.status) this.setValues(this.status);
  }

  singerRow(s) {
    const id = `gain-${this.takeId}-${s.participant_id}`;
    const label = el("label", { htmlFor: id, className: "mixer-name" }, `${s.name} (${s.part})`);
    const slider = el("input", {
      id, type: "range", min: String(MIN_GAIN_DB), max: String(MAX_GAIN_DB), step: "1", value: "0",
    });
    const value = el("output", { className: "mixer-value" }, "0 dB");
    value.setAttribute("for", id);
    const mute = el("button", { type: "button", className: "mute quiet" }, "Mute");
    mute.setAttribute("aria-pressed", "false");
    mute.setAttribute("aria-label", `Mute ${s.name}`);
    slider.addEventListener("input", () => {
      this.showGain(slider, value);
      this.changed();
    });
    mute.addEventListener("click", () => {
      this.setMuted(mute, mute.getAttribute("aria-pressed") !== "true");
      this.changed();
    });
    const recording = el("a", { className: "button quiet stem", hidden: true }, "Download recording");
    recording.setAttribute("aria-label", `Download ${s.name}'s recording`);
    this.rows.set(s.participant_id, { slider, value, mute, recording });
    const li = el("li", { className: "mixer-row" }, label, slider, value, mute, recording);
    li.dataset.participantId = s.participant_id;
    return li;
  }

  showGain(slider, value) {
    const db = Number(slider.value);
    value.textContent = dbWords(db);
    slider.setAttribute("aria-valuetext", dbWords(db));
  }

  setMuted(button, muted) {
    button.setAttribute("aria-pressed", String(muted));
    button.textContent = muted ? "Muted" : "Mute";
    button.closest(".mixer-row").classList.toggle("muted-row", muted);
  }

  /** The sliders as the mix `status` was made (unless the leader is moving them). */
  setValues(status) {
    if (this.timer || status.version < this.asked) return;
    for (const [pid, row] of this.rows) {
      if (document.activeElement !== row.slider) {
        row.slider.value = String(status.gains_db[pid] || 0);
        this.showGain(row.slider, row.value);
      }
      this.setMuted(row.mute, status.muted.includes(pid));
    }
  }

  changed() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.remix();
    }, REMIX_DELAY_MS);
  }

  /** The whole of the mix's choices, as the sliders show them (docs/protocol.md). */
  choices() {
    const gains_db = {};
    const muted = [];
    for (const [pid, row] of this.rows) {
      const db = Number(row.slider.value);
      if (db !== 0) gains_db[pid] = db;
      if (row.mute.getAttribute("aria-pressed") === "true") muted.push(pid);
    }
    return { gains_db, muted };
  }

  async remix() {
    this.refused("");
    try {
      const status = await api("POST", `${this.base}/mix`, this.choices());
      this.asked = status.version;
      this.show(status);
    } catch (err) {
      this.refused(`The remix was refused: ${err.message}`);
      this.onRefused();
    }
  }

  // ------------------------------------------------------------- downloads and share

  showDownloads(status) {
    const flac = el("a", { className: "button", href: `${status.files.flac}?v=${status.version}` },
      "Download the mix (FLAC)");
    flac.download = `take-${this.n}-mix.flac`;
    flac.dataset.download = "mix";
    const zip = el("a", { className: "button", href: `${this.base}/download.zip` },
      "Download the take folder (zip, for a DAW)");
    zip.download = "";
    zip.dataset.download = "zip";
    const hint = el("p", { className: "hint" }, "Each singer's recording, as it was uploaded, ",
      "is beside their slider. The zip holds them all with take.json; ",
      el("code", {}, "tutti mix --stems"), " on it writes them lined up for a DAW.");
    this.downloads.replaceChildren(el("div", { className: "row" }, flac, zip), hint);
    this.downloads.hidden = false;
    this.stemLinks();
    if (!this.share.firstChild) this.buildShare();
  }

  /** Each singer's recording as uploaded (the manifest names the files). */
  async stemLinks() {
    if (this.stems) return;
    this.stems = true;
    try {
      const manifest = await api("GET", `${this.base}/manifest`);
      for (const rec of manifest.recordings) {
        const row = this.rows.get(rec.participant_id);
        if (!row) continue;
        row.recording.href = `${this.base}/files/${rec.file}`;
        row.recording.download = "";
        row.recording.hidden = false;
      }
    } catch (err) {
      this.stems = false;
      this.refused(err.message);
    }
  }

  buildShare() {
    const create = el("button", { type: "button", className: "quiet" }, "Make a share link");
    const revoke = el("button", { type: "button", className: "quiet" }, "Stop sharing");
    const copy = el("button", { type: "button", className: "quiet", hidden: true }, "Copy");
    const link = el("a", { className: "share-link", hidden: true, target: "_blank", rel: "noopener" });
    const note = el("p", { className: "hint" },
      "A share link plays this mix, and nothing else, for anyone who has it.");
    note.setAttribute("aria-live", "polite");
    create.addEventListener("click", async () => {
      try {
        const r = await api("POST", `${this.base}/share`);
        link.href = `${location.origin}${r.url}`;
        link.textContent = link.href;
        link.hidden = copy.hidden = false;
        copy.textContent = "Copy";
        note.textContent = "Send this link to the choir and their families. It is shown only now.";
      } catch (err) {
        this.refused(err.message);
      }
    });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(link.href);
        copy.textContent = "Copied";
      } catch {
        this.refused("The browser did not allow copying; select the link and copy it by hand.");
      }
    });
    revoke.addEventListener("click", async () => {
      try {
        const r = await api("DELETE", `${this.base}/share`);
        link.hidden = copy.hidden = true;
        note.textContent = r.revoked === 1 ? "The share link no longer works."
          : `${r.revoked} share links no longer work.`;
      } catch (err) {
        this.refused(err.message);
      }
    });
    this.share.replaceChildren(el("div", { className: "row" }, create, revoke),
      el("p", {}, link, " ", copy), note);
  }
}
