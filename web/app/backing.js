// Backing tracks per part: drag and drop or a file picker, uploaded with tus (resumable:
// tus-js-client retries a broken connection and resumes from the server's offset, also
// after a reload, from the upload URL it keeps in localStorage).

import { csrfToken, CSRF_HEADER } from "./api.js";

const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000, 20000, 30000];
const CHUNK_BYTES = 4 * 1024 * 1024; // each PATCH is stored for good: a drop loses at most this

function seconds(track) {
  const s = Math.round(track.frames / track.rate);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function uploadError(err) {
  const resp = err.originalResponse;
  if (resp) {
    try {
      const body = JSON.parse(resp.getBody());
      if (body && body.error) return body.error.message;
    } catch {
      // not JSON
    }
    const reason = resp.getHeader("X-Tutti-Upload-Error");
    if (reason) return reason;
    return `the server answered ${resp.getStatus()}`;
  }
  return "the connection broke off and did not come back; check the network and drop the file again";
}

class PartSlot {
  constructor(part, sessionId) {
    this.part = part;
    this.sessionId = sessionId;
    const li = document.createElement("li");
    li.className = "part-slot";
    li.dataset.part = part;
    li.innerHTML =
      '<div class="part-name"></div>' +
      '<div class="part-body"><p class="track-state"></p>' +
      '<progress max="100" value="0" hidden></progress>' +
      '<label class="button quiet">Choose a file… <input type="file" accept="audio/*,.wav,.flac,.ogg,.mp3"></label>' +
      '<span class="drop-hint">or drop it here</span></div>';
    li.querySelector(".part-name").textContent = part;
    this.li = li;
    this.state = li.querySelector(".track-state");
    this.progress = li.querySelector("progress");
    const input = li.querySelector("input");
    input.setAttribute("aria-label", `Backing track for ${part}`);
    input.addEventListener("change", () => {
      if (input.files.length) this.upload(input.files[0]);
      input.value = "";
    });
    li.addEventListener("dragover", (e) => {
      e.preventDefault();
      li.classList.add("over");
    });
    li.addEventListener("dragleave", () => li.classList.remove("over"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      li.classList.remove("over");
      const file = e.dataTransfer.files[0];
      if (file) this.upload(file);
    });
    this.uploading = null;
    this.failure = null;
    this.onStored = () => {};
  }

  show(track) {
    if (this.uploading) return;
    const ready = track
      ? `✓ Backing ready: ${seconds(track)}, ${track.channels === 1 ? "mono" : "stereo"}, ${track.format}`
      : "";
    this.li.classList.toggle("has-track", Boolean(track));
    if (this.failure) {
      // a refusal stays on screen until the next file: it says what to do
      this.state.textContent = track ? `${this.failure} (still in use: ${ready.slice(2)})` : this.failure;
    } else {
      this.state.textContent = ready || "No backing yet (singers then hear only the click).";
    }
  }

  upload(file) {
    if (this.uploading) this.uploading.abort();
    this.li.classList.remove("failed");
    this.failure = null;
    this.progress.hidden = false;
    this.progress.value = 0;
    this.state.textContent = `Uploading ${file.name}…`;
    const slot = this;
    const upload = new window.tus.Upload(file, {
      endpoint: "/files/",
      metadata: { kind: "backing", part: this.part, filename: file.name },
      headers: { [CSRF_HEADER]: csrfToken() },
      retryDelays: RETRY_DELAYS_MS,
      chunkSize: CHUNK_BYTES,
      removeFingerprintOnSuccess: true,
      fingerprint: (f) =>
        Promise.resolve(["tutti-backing", slot.sessionId, slot.part, f.name, f.size, f.lastModified].join("/")),
      onProgress(sent, total) {
        const pct = total ? Math.floor((sent / total) * 100) : 0;
        slot.progress.value = pct;
        slot.state.textContent = `Uploading ${file.name}: ${pct} %`;
      },
      onSuccess() {
        slot.uploading = null;
        slot.progress.hidden = true;
        slot.state.textContent = `✓ ${file.name} uploaded`;
        slot.onStored(); // the `session` event may have been lost to a dropped connection
      },
      onError(err) {
        slot.uploading = null;
        slot.progress.hidden = true;
        slot.li.classList.add("failed");
        slot.failure = `✗ ${file.name} was not accepted: ${uploadError(err)}`;
        slot.state.textContent = slot.failure;
      },
    });
    this.uploading = upload;
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  }
}

export class Backing {
  constructor(list) {
    this.list = list;
    this.slots = new Map();
    this.sessionId = "";
    this.onStored = () => {}; // set by the page: fetch the session's tracks again
  }

  /** Show the session's parts and their tracks (after a `session` event too). */
  show(session) {
    const parts = session.settings.parts;
    if (session.session_id !== this.sessionId || parts.join("\n") !== [...this.slots.keys()].join("\n")) {
      this.sessionId = session.session_id;
      this.slots = new Map(parts.map((p) => [p, new PartSlot(p, session.session_id)]));
      for (const slot of this.slots.values()) slot.onStored = () => this.onStored();
      this.list.replaceChildren(...[...this.slots.values()].map((s) => s.li));
    }
    for (const [part, slot] of this.slots) slot.show(session.tracks[part] || null);
  }

  missing(session) {
    return session.settings.parts.filter((p) => !session.tracks[p]);
  }
}
