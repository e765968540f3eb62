// The singer's window: shows what `tutti sing` pushes (Server-Sent Events) and sends the
// singer's choices back as small JSON posts. No framework: one state, one render.

const $ = (id) => document.getElementById(id);
let shown = "";
let partsShown = "";
let devicesLoaded = false;

const HINTS = {
  quiet: "Too quiet: move the microphone closer to your mouth, or turn it up.",
  loud: "Too loud: move the microphone a little away, or turn it down.",
  good: "Good level.",
};

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

async function post(action, body = {}) {
  let reply;
  try {
    reply = await fetch(`/api/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    showError("tutti is not answering. Is it still running?");
    return false;
  }
  const data = await reply.json();
  if (!reply.ok) {
    showError(data.error);
    return false;
  }
  showError("");
  render(data);
  return true;
}

function sectionFor(state) {
  if (state.step === "live") return state.live.phase;
  return state.step;
}

function show(name) {
  if (name === shown) return;
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `step-${name}`;
  shown = name;
  const focus = $(`step-${name}`).querySelector("input, h1");
  if (focus) focus.focus();
  if (name === "device" && !devicesLoaded) loadDevices();
}

function showLevel(meterId, hintId, level) {
  if (!level) return;
  $(meterId).value = Math.max(-60, level.peak_db);
  $(hintId).textContent = HINTS[level.hint];
  $(hintId).dataset.hint = level.hint;
}

function showParts(parts, chosen) {
  const key = parts.join("|");
  if (key === partsShown) return;
  partsShown = key;
  const box = $("parts");
  box.querySelectorAll("label").forEach((el) => el.remove());
  parts.forEach((part, i) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "part";
    radio.value = part;
    radio.required = true;
    radio.checked = part === chosen || (i === 0 && parts.length === 1);
    label.append(radio, ` ${part}`);
    box.append(label);
  });
}

function showCalibration(cal) {
  const text = {
    idle: "",
    listening: "Listening for the beeps…",
    measuring: "We hear it. Measuring… keep still.",
    done: cal.remembered
      ? `Measured before: your headset's delay is ${cal.ms} ms. Press Next, or measure again.`
      : `We heard it: your headset's delay is ${cal.ms} ms. It is remembered for this headset.`,
    failed:
      cal.why === "silence"
        ? "We did not hear it. Press the ear cup right onto the microphone, turn the headphones " +
          "up, and press Try again."
        : "We heard something, but not clearly. Find a quiet moment, hold the ear cup firmly " +
          "on the microphone, and press Try again.",
  }[cal.state];
  $("cal-result").textContent = text;
  $("cal-result").dataset.state = cal.state;
  const running = cal.state === "listening" || cal.state === "measuring";
  $("calibrate").disabled = running;
  $("calibrate").textContent =
    cal.state === "idle" ? "Start" : cal.remembered ? "Measure again" : "Try again";
  $("cal-next").disabled = running;
  $("cal-back").disabled = running;
  $("cal-next").textContent =
    cal.state === "done" ? "Next"
      : cal.kept_ms ? `Go on with the ${cal.kept_ms} ms measured before`
        : "Go on without measuring";
  // the step to take next is the filled button
  $("calibrate").classList.toggle("secondary", cal.state === "done");
  $("cal-next").classList.toggle("secondary", cal.state !== "done");
}

function showWaiting(live) {
  const clock = live.clock_ms;
  $("w-connection").textContent =
    live.connection === "connected" ? "✓ Connected to the choir" : `… ${live.connection}`;
  $("w-clock").textContent =
    clock === null ? "… Setting the clock"
      : clock < 5 ? `✓ Clock in time (±${clock} ms)` : `! Clock unsteady (±${clock} ms): a wired connection helps`;
  $("w-backing").textContent = live.backing ? `✓ Backing track: ${live.backing}` : "… Backing track";
  $("w-next").textContent = live.ready
    ? "Ready. Waiting for your leader to start."
    : "Getting ready…";
}

let hereShown = "";

function showRoom(room) {
  const key = JSON.stringify([room.here, room.count]);
  if (key !== hereShown) {
    hereShown = key;
    $("w-here").replaceChildren(
      ...room.here.map((s) => {
        const li = document.createElement("li");
        const part = document.createElement("span");
        part.className = "part";
        part.textContent = ` (${s.part})`;
        li.append(s.name, part);
        return li;
      }),
    );
    const more = room.count - room.here.length;
    $("w-more").textContent = `and ${more} more`;
    $("w-more").hidden = more <= 0;
    $("w-here-title").textContent = room.count === 1 ? "Who is here: just you so far"
      : `Who is here: ${room.count} singers`;
  }
  $("w-note").hidden = !room.note;
  $("w-note-text").textContent = room.note;
  $("wave").disabled = room.wave_in > 0;
  $("w-wave-wait").textContent = room.wave_refused
    || (room.wave_in > 0 ? `You waved. You can wave again in ${room.wave_in} s.` : "");
  const waves = room.waves.join("\n");
  if ($("w-waves").dataset.shown !== waves) {
    $("w-waves").dataset.shown = waves;
    $("w-waves").replaceChildren(
      ...room.waves.map((text) => Object.assign(document.createElement("li"), { textContent: text })),
    );
  }
}

function showMix(mix) {
  $("mix").hidden = !mix;
  if (!mix) return;
  const length = mix.duration_s === null ? ""
    : ` (${Math.floor(mix.duration_s / 60)}:${String(Math.round(mix.duration_s % 60)).padStart(2, "0")})`;
  $("mix-text").textContent = `The choir's mix of ${mix.take} is ready${length}.`;
  $("mix-playing").textContent = mix.playing ? "Playing in your headphones…" : "";
  $("listen").disabled = mix.playing;
}

function showTake(live) {
  $("countdown").textContent =
    live.starts_in !== null ? `${Math.ceil(live.starts_in)}`
      : live.take_state === "armed" ? "Get ready" : "Sing!";
  const counting = live.starts_in !== null;
  $("countdown").dataset.counting = counting ? "yes" : "no";
  $("countdown-label").hidden = !counting;
  const beat = live.beat || "";
  $("beat").textContent = beat.startsWith("in ")
    ? `count-in · beat ${beat.split(":")[1]}`
    : beat ? `bar ${beat.replace(":", " · beat ")}` : "";
  $("words-now").textContent = live.words;
  $("words-next").textContent = live.words_next;
  // the hint only once singing has begun (before that the microphone hears the room)
  showLevel("take-meter", "take-hint", live.level);
  if (counting || live.take_state !== "recording") $("take-hint").textContent = "";
}

function showAfter(live) {
  $("upload").textContent =
    live.take_state === "uploaded" ? "Your singing has reached your leader."
      : live.take_state === "failed" ? "This take could not be recorded or sent. Your leader can see why."
        : `Sending your singing: ${live.upload || "starting"}`;
  $("safe").textContent = live.safe_to_close
    ? "It is safe to close this window now (or stay for the next take)."
    : "Please keep this window open until it is sent.";
  $("safe").dataset.safe = live.safe_to_close ? "yes" : "no";
}

function render(state) {
  document.querySelectorAll(".title").forEach((el) => (el.textContent = state.title || "the session"));
  if (state.error) showError(state.error);
  showParts(state.parts, state.part);
  showLevel("meter", "meter-hint", state.level);
  showCalibration(state.calibration);
  if (state.live) {
    showWaiting(state.live);
    showTake(state.live);
    showAfter(state.live);
    showRoom(state.live.room);
    showMix(state.live.mix);
  }
  if (state.step === "ended") {
    $("ended-text").textContent =
      state.exit_code === 0 ? "Thank you for singing. You can close this window."
        : "tutti stopped with a problem: the terminal window where tutti runs says what happened.";
  }
  show(sectionFor(state));
}

async function loadDevices() {
  const reply = await fetch("/api/devices");
  const data = await reply.json();
  if (!reply.ok) return showError(data.error);
  devicesLoaded = true;
  for (const [id, kind, dflt] of [["input", "inputs", "default_input"], ["output", "outputs", "default_output"]]) {
    const select = $(id);
    select.replaceChildren();
    for (const d of data.devices.filter((d) => d[kind] > 0)) {
      const opt = new Option(d.label, d.index, d[dflt], d[dflt]);
      select.append(opt);
    }
  }
  chooseDevice();
}

function chooseDevice() {
  const input = Number($("input").value);
  const output = Number($("output").value);
  if ($("input").value !== "" && $("output").value !== "") post("device", { input, output });
}

function wire() {
  $("link-form").addEventListener("submit", (e) => {
    e.preventDefault();
    post("link", { link: $("link").value });
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const part = document.querySelector("input[name=part]:checked");
    post("join", { name: $("name").value, part: part ? part.value : "" });
  });
  $("input").addEventListener("change", chooseDevice);
  $("output").addEventListener("change", chooseDevice);
  $("test-sound").addEventListener("click", async () => {
    const button = $("test-sound");
    button.disabled = true;
    button.textContent = "Playing…";
    await post("test-sound");
    button.textContent = "Play a test sound";
    button.disabled = false;
  });
  $("device-form").addEventListener("submit", (e) => {
    e.preventDefault();
    post("headset");
  });
  $("calibrate").addEventListener("click", () => post("calibrate"));
  $("cal-next").addEventListener("click", () => post("ready"));
  $("cal-back").addEventListener("click", () => post("change-headset"));
  $("wave").addEventListener("click", () => post("wave"));
  $("listen").addEventListener("click", () => post("listen"));

  const events = new EventSource("/api/events");
  events.onmessage = (e) => {
    $("gone").hidden = true;
    render(JSON.parse(e.data));
  };
  events.addEventListener("end", () => {
    events.close();
    $("gone").hidden = false;
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) $("gone").hidden = false;
  };
}

wire();
