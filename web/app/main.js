// The leader's page: which screen to show, sign-in and session creation, and the Socket.IO
// link whose events drive the roster, the backing tracks and the takes.

import { io } from "/web/vendor/socket.io.esm.min.js";
import { api } from "./api.js";
import { Backing } from "./backing.js";
import { Note } from "./note.js";
import { Roster } from "./roster.js";
import { Takes } from "./takes.js";

const $ = (id) => document.getElementById(id);
const SCREENS = ["loading", "signin", "create", "session"];

const errorBox = $("error");
function report(message) {
  errorBox.textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
  errorBox.hidden = !message;
}

function show(screen) {
  for (const name of SCREENS) $(`screen-${name}`).hidden = name !== screen;
  $("sign-out").hidden = screen === "signin" || screen === "loading";
  const first = $(`screen-${screen}`).querySelector("input, button");
  if (first && screen !== "session") first.focus();
}

function linkState(text, ok) {
  const el = $("link-state");
  el.textContent = text;
  el.classList.toggle("ok", ok);
  el.classList.toggle("bad", !ok);
}

const roster = new Roster($("roster"), $("roster-count"), $("roster-empty"));
const backing = new Backing($("parts-list"));
const takes = new Takes(
  { arm: $("arm"), start: $("start"), stop: $("stop"), countdown: $("countdown"), list: $("takes") },
  report,
);
const note = new Note(
  { form: $("note-form"), text: $("note"), clear: $("note-clear"), state: $("note-state") },
  report,
);
let session = null;
let socket = null;

function nextStep() {
  const el = $("next-step");
  if (!session) return;
  if (session.state !== "open") {
    el.textContent = "This session is closed. Sign out and start a new one.";
    return;
  }
  const missing = backing.missing(session);
  const cur = takes.current;
  if (cur && cur.state === "armed") el.textContent = "Next: press Start when every singer is ready.";
  else if (cur && cur.state === "running") el.textContent = "Next: press Stop when the song is over.";
  else if (roster.connectedCount() === 0) el.textContent = "Next: send singers the join code or the invite link.";
  else if (takes.takes.size) el.textContent = "Next: press “Get ready” for another take. The recordings of the last one arrive below.";
  else if (missing.length) el.textContent = `Next: upload the backing for ${missing.join(", ")}, or press “Get ready” to sing without it.`;
  else el.textContent = "Next: press “Get ready” to arm a take.";
}
roster.onChange = nextStep;
backing.onStored = async () => {
  try {
    showSession(await api("GET", "/api/session"));
  } catch (err) {
    report(err.message);
  }
};
takes.onChange = nextStep;

function showSession(info) {
  session = info;
  $("session-title").textContent = info.settings.title;
  $("join-code").textContent = info.code || "";
  const link = `${location.origin}/j/${info.code}`; // the singers' invite page
  $("invite-link").href = link;
  $("invite-link").textContent = link;
  const qr = `/api/web/invite.svg?code=${encodeURIComponent(info.code)}`;
  if ($("invite-qr").getAttribute("src") !== qr) $("invite-qr").src = qr;
  roster.configure(info.settings);
  backing.show(info);
  nextStep();
}

function connect() {
  if (socket) socket.disconnect();
  // the default transports: long-polling first, so a browser whose CSP "'self'" does not cover
  // ws: (older Safari) still connects
  socket = io({ auth: { protocol: PROTOCOL } });
  socket.on("connect", () => linkState("Live", true));
  socket.on("disconnect", () => linkState("Reconnecting…", false));
  socket.on("connect_error", (err) => {
    linkState("Not connected", false);
    if (err && err.data && err.data.message) report(`Live updates refused: ${err.data.message}`);
  });
  socket.on("welcome", (w) => {
    report("");
    showSession({ ...session, ...w.session }); // what changed while the link was down
    const t = w.take;
    if (t && t.state === "running" && t.t0 != null) {
      // (re)connected during a take: count from the server's clock as a singer would
      takes.started({ take_id: t.take_id, t0: t.t0, sent_at: w.server_time, settings: w.session.settings });
    } else if (t) {
      takes.setCurrent(t.take_id, t.state);
    }
  });
  socket.on("roster", (r) => roster.replace(r.participants));
  socket.on("participant", (p) => roster.upsert(p));
  socket.on("levels", (l) => roster.levels(l.levels));
  socket.on("clocks", (c) => roster.clocks(c.clocks));
  socket.on("session", (view) => showSession({ ...session, ...view }));
  socket.on("take.armed", (t) => { takes.setCurrent(t.take_id, "armed"); takes.reload(); });
  socket.on("take.start", (t) => takes.started(t));
  socket.on("take.stop", (t) => { takes.setCurrent(t.take_id, "stopped"); takes.reload(); });
  socket.on("take.updates", (u) => takes.updated(u));
  socket.on("take.mix", (m) => takes.mixed(m));
  socket.on("session.closed", () => showSession({ ...session, state: "closed" }));
  socket.on("error.report", (e) => report(e.message));
}

let PROTOCOL = 1;

async function enter(state) {
  if (state.session) {
    show("session");
    showSession(state.session);
    connect();
    await Promise.all([takes.reload(), note.load()]);
  } else if (state.can_create) {
    linkState(state.open_server ? "Open server" : "Signed in with the key", true);
    show("create");
  } else {
    linkState("Signed out", false);
    show("signin");
  }
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const state = await api("POST", "/api/web/signin", { secret: $("secret").value });
    $("secret").value = "";
    report("");
    await enter(state);
  } catch (err) {
    report(err.message);
  }
});

$("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const parts = String(form.get("parts")).split(",").map((p) => p.trim()).filter(Boolean);
  try {
    const state = await api("POST", "/api/web/sessions", {
      title: String(form.get("title")).trim(),
      parts,
      bpm: Number(form.get("bpm")),
      count_in_bars: Number(form.get("count_in_bars")),
    });
    report("");
    await enter(state);
  } catch (err) {
    report(err.message);
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    if (socket) socket.disconnect();
    socket = null;
    session = null;
    takes.reset();
    await enter(await api("POST", "/api/web/signout"));
  } catch (err) {
    report(err.message);
  }
});

$("to-signin").addEventListener("click", () => show("signin"));

$("copy-invite").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("invite-link").href);
    $("copy-invite").textContent = "Copied";
  } catch {
    report("The browser did not allow copying; select the link and copy it by hand.");
  }
});

async function boot() {
  try {
    PROTOCOL = (await api("GET", "/healthz")).protocol;
    await enter(await api("GET", "/api/web/me"));
  } catch (err) {
    show("signin");
    report(err.message);
  }
}

boot();
