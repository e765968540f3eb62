// The leader's note for the singers' waiting room: one short text, shown to every singer
// within a second of "Show to singers" (PUT /api/session/note; the server checks it).

import { api } from "./api.js";

export class Note {
  /** `els`: {form, text, clear, state}; `report(message)` shows a refusal on the page. */
  constructor(els, report) {
    this.els = els;
    this.report = report;
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.save(els.text.value);
    });
    els.clear.addEventListener("click", () => this.save(""));
  }

  /** Show the session's note as it is on the server. */
  async load() {
    try {
      this.shown((await api("GET", "/api/session/note")).note, false);
    } catch (err) {
      this.report(err.message);
    }
  }

  async save(text) {
    try {
      this.shown((await api("PUT", "/api/session/note", { note: text })).note, true);
      this.report("");
    } catch (err) {
      this.report(err.message);
    }
  }

  shown(note, saved) {
    this.els.text.value = note;
    this.els.clear.disabled = !note;
    this.els.state.textContent = !note ? (saved ? "The note is cleared." : "No note yet.")
      : saved ? "Singers see this note now." : "Singers see this note while they wait.";
  }
}
