// The panel's page: polls /api/fleet about four times a second, draws a card per body
// recorder and per interview room, refreshes each preview as soon as the last one loaded,
// and posts button presses.
"use strict";

const POLL_MS = 250;
const PREVIEW_MS = 200;
const cards = new Map(); // device id -> card element

function $(root, sel) {
  return root.querySelector(sel);
}

function text(root, sel, value) {
  const el = $(root, sel);
  const v = value === null || value === undefined ? "" : String(value);
  if (el.textContent !== v) el.textContent = v;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function clockText(c) {
  if (!c) return "";
  const local = new Date((c.wall + c.utc_offset) * 1000).toISOString();
  const h = c.utc_offset / 3600;
  return `${local.slice(0, 10)} ${local.slice(11, 19)} UTC${h >= 0 ? "+" : ""}${h}`;
}

function timeOfDay(wall, offset) {
  return new Date((wall + offset) * 1000).toISOString().slice(11, 19);
}

async function post(id, action, query = "") {
  const res = await fetch(`/api/devices/${encodeURIComponent(id)}/${action}${query}`, {method: "POST"});
  if (!res.ok) console.warn(action, res.status, await res.text());
}

function refreshPreview(img, url) {
  const next = () => setTimeout(() => refreshPreview(img, url), PREVIEW_MS);
  img.onload = next;
  img.onerror = () => setTimeout(() => refreshPreview(img, url), 1000);
  img.src = `${url}?t=${Date.now()}`;
}

function newCard(template, d) {
  const card = document.getElementById(template).content.firstElementChild.cloneNode(true);
  card.dataset.device = d.id;
  text(card, ".device-id", d.id);
  for (const b of card.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", () => post(d.id, b.dataset.action, b.dataset.query || ""));
  }
  return card;
}

function makeBodyCard(d) {
  const card = newCard("card", d);
  // A tester's switch: the first action turns it on, the second off again.
  const toggles = {
    camera: [["camera-fault"], ["camera-ok"]],
    microphone: [["microphone-fault"], ["microphone-ok"]],
    gps: [["gps-lost"], ["gps-ok"]],
    storage: [["storage-fill"], ["storage-free"]],
    network: [["network-down"], ["network-up"]],
    plug: [["battery", "?external=true"], ["battery", "?external=false"]],
  };
  for (const b of card.querySelectorAll("button[data-toggle]")) {
    b.addEventListener("click", () => {
      const on = b.classList.contains("active");
      post(d.id, ...toggles[b.dataset.toggle][on ? 1 : 0]);
    });
  }
  $(card, "button.battery-set").addEventListener("click", () => {
    const level = $(card, "input.battery-level").value;
    post(d.id, "battery", `?percent=${encodeURIComponent(level)}`);
  });
  document.getElementById("fleet").appendChild(card);
  refreshPreview($(card, "img.preview"), d.preview);
  return card;
}

function makeRoomCard(d) {
  const card = newCard("room-card", d);
  const r = d.room;
  const main = $(card, "img.preview");
  main.dataset.track = r.main_track;
  text(card, ".track-label", r.main_track);
  // The cameras, small, under the composite; a fault button for each.
  const small = $(card, ".cameras");
  small.style.gridTemplateColumns = `repeat(${Math.max(2, r.cameras.length)}, minmax(0, 1fr))`;
  const faults = $(card, ".cameras-faults");
  for (const cam of r.cameras) {
    const fig = document.createElement("figure");
    fig.className = "preview-box camera";
    const img = document.createElement("img");
    img.className = "track";
    img.dataset.track = cam.track;
    img.alt = `live preview of the ${cam.track} camera`;
    const cap = document.createElement("figcaption");
    cap.className = "track-label";
    cap.textContent = cam.track;
    fig.append(img, cap);
    small.appendChild(fig);
    refreshPreview(img, d.previews[cam.track]);
    const b = document.createElement("button");
    b.className = "camera";
    b.dataset.camera = cam.track;
    b.textContent = `${cam.track} camera fault`;
    b.addEventListener("click", () => {
      const on = b.classList.contains("active");
      post(d.id, on ? "camera-ok" : "camera-fault", `?camera=${encodeURIComponent(cam.track)}`);
    });
    faults.appendChild(b);
  }
  // The case system needs the agency: only with sync.
  for (const b of card.querySelectorAll("button.open-session, button.close-session")) {
    b.disabled = !r.case_system;
    if (!r.case_system) b.title = "the case system needs sync (a broker): start with --sync";
  }
  document.getElementById("fleet").appendChild(card);
  refreshPreview(main, d.previews[r.main_track]);
  return card;
}

function updateGaps(card, d) {
  const gaps = [];
  if (d.interrupted.length) gaps.push(`interrupted: ${d.interrupted.join(", ")}`);
  if (d.explain_prompt) gaps.push(d.explain_mode === "button" ? "press Explain, then speak" : "explaining (speak now)");
  if (d.unexplained.length) gaps.push(`${d.unexplained.length} unexplained`);
  text(card, ".gaps", gaps.join(" · ") || "none");
  $(card, ".gaps").classList.toggle("warn", gaps.length > 0);
}

// What every card shows: storage, clock, badges, gaps, errors, sync and the event log.
function updateCommon(card, d) {
  text(card, ".session", d.session ? `session ${d.session}` : "no session open");
  $(card, ".session").dataset.session = d.session || "";
  $(card, "button.explain").classList.toggle("prompt", d.explain_prompt);
  const s = d.storage || {};
  text(card, ".storage", s.total ? `${bytes(s.used)} of ${bytes(s.total)} (${(s.fraction * 100).toFixed(2)} %)` +
    (s.filled ? " · filled by the tester" : "") : "");
  $(card, ".storage").classList.toggle("warn", !!s.filled);
  text(card, ".clock", `${clockText(d.clock)} · ${d.fps} fps`);
  text(card, ".badges", (d.badges || []).join(", ") || "—");
  updateGaps(card, d);
  text(card, ".error", d.last_error || "—");

  const y = d.sync || {};
  let sync;
  if (y.segments_sealed === undefined) sync = "";
  else {
    const head = y.enabled ? (y.connected ? "connected" : "not connected") : "sync off";
    sync = `${head} · segments receipted ${y.segments_receipted}/${y.segments_sealed}` +
      ` · entries unsynced ${y.entries_unsynced}/${y.entries}` +
      ` · backlog ${bytes(y.backlog.bytes)}` + (y.enabled ? ` · deadline ${y.deadline}` : "");
    if (y.refusals && y.refusals.length) sync += ` · refused: ${y.refusals.join("; ")}`;
  }
  text(card, ".sync", sync);
  const fill = $(card, ".bar-fill");
  const pct = y.segments_sealed ? (100 * y.segments_receipted) / y.segments_sealed : 100;
  fill.style.width = `${pct}%`;

  const tbody = $(card, "table.events tbody");
  const key = (d.events || []).map((e) => e.seq).join(",");
  if (tbody.dataset.key !== key) {
    tbody.dataset.key = key;
    tbody.replaceChildren(...d.events.map((e) => {
      const tr = document.createElement("tr");
      tr.className = `kind-${e.kind}`;
      for (const v of [e.seq, timeOfDay(e.wall, d.clock ? d.clock.utc_offset : 0), e.kind, e.summary]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      return tr;
    }));
  }
}

function updateBody(card, d) {
  const recording = d.state === "recording";
  card.classList.toggle("recording", recording);
  const off = d.state === "off";
  const state = $(card, ".state");
  let shown = d.close_armed ? "recording (close armed)" : d.state;
  if (off) shown = d.power_cut ? "off (power cut)" : "off";
  text(card, ".state", shown);
  state.dataset.state = d.state || "";

  const led = $(card, ".led");
  led.dataset.led = d.led.pin ? "on" : "off";
  led.dataset.indicator = d.led.indicator;
  text(card, ".led-label", `LED ${d.led.indicator}`);

  $(card, "button.record").classList.toggle("active", recording);
  $(card, "button.camera").classList.toggle("active", d.camera_fault);
  $(card, "button.microphone").classList.toggle("active", d.microphone_fault);
  $(card, "button.gps").classList.toggle("active", !!(d.gps && d.gps.jammed));
  $(card, "button.fill-storage").classList.toggle("active", !!(d.storage && d.storage.filled));
  const net = $(card, "button.network");
  net.classList.toggle("active", !!(d.network && !d.network.up) && !off);
  net.disabled = !d.network;
  if (!d.network) net.title = "the network needs sync (a broker): start with --sync";
  const b = d.battery || {};
  const plug = $(card, "button.plug");
  plug.classList.toggle("active", !!b.external);
  text(card, "button.plug", b.external ? "Unplug" : "Plug in");
  // Off, only power on does anything; on, everything but power on.
  for (const el of card.querySelectorAll(".controls button, .controls input")) {
    el.disabled = (el.classList.contains("power-on") ? !off : off) || (el === net && !d.network);
  }

  text(card, ".battery", b.percent === undefined ? "" :
    `${b.percent.toFixed(1)} %${b.external ? " (external power)" : ""}`);
  const n = d.network;
  let network = "no network (sync off)";
  if (n && off) network = "down with the device";
  else if (n) network = `${n.up ? "up" : "DOWN (dropped by the tester)"} · ${n.connected ? "connected" : "not connected"}`;
  text(card, ".network-text", network);
  $(card, ".network-text").classList.toggle("warn", !!n && !n.up);
  const g = d.gps || {};
  let gps = "no position yet";
  if (g.fix) gps = `fix ${g.lat.toFixed(6)}, ${g.lon.toFixed(6)}${g.satellites ? ` · ${g.satellites} sats` : ""}`;
  else if (g.age !== null && g.age !== undefined) gps = `NO FIX (last ${g.age.toFixed(0)} s ago)`;
  text(card, ".gps-text", gps);
  $(card, ".gps-text").classList.toggle("warn", !g.fix);
  updateCommon(card, d);
}

function updateRoom(card, d) {
  const r = d.room;
  const off = d.state === "off";
  card.classList.toggle("recording", r.panel_state === "recording");
  text(card, ".room-name", r.id ? `Room ${r.id}` : "Room (none assigned)");
  const ps = $(card, ".panel-state");
  text(card, ".panel-state", off ? "off" : r.panel_state);
  ps.dataset.state = off ? "off" : r.panel_state || "";
  const lamp = $(card, ".lamp");
  lamp.dataset.lit = r.lamp ? "on" : "off";

  $(card, "button.door-close").classList.toggle("active", r.door === "closed");
  $(card, "button.door-open").classList.toggle("active", r.door === "open");
  $(card, "button.key-start").classList.toggle("active", r.key === "start");
  $(card, "button.key-stop").classList.toggle("active", r.key === "stop");
  for (const cam of r.cameras) {
    const b = $(card, `button.camera[data-camera="${CSS.escape(cam.track)}"]`);
    if (b) b.classList.toggle("active", cam.fault);
    const img = $(card, `img.track[data-track="${CSS.escape(cam.track)}"]`);
    if (img) img.closest("figure").classList.toggle("fault", cam.fault);
  }

  let door = r.door || "not reported";
  if (r.awaiting) door += " · waiting for the key to confirm";
  text(card, ".door", door);
  $(card, ".door").classList.toggle("warn", r.awaiting);
  text(card, ".key", r.key || "not turned");
  const p = r.panel;
  let panel;
  if (p.via === "broker") {
    panel = `over MQTT (${p.connected ? "connected" : "not connected"}) · shows ${p.shows || "nothing yet"}` +
      ` · lamp ${p.shows === "recording" ? "lit" : "off"}`;
  } else panel = "wired to the recorder (no broker)";
  text(card, ".panel", panel);
  let cs = r.case_system ? (r.case ? `case ${r.case}` : "no case open") : "no case system (sync off)";
  if (d.session && r.opened_by) cs += ` · session opened by ${r.opened_by}`;
  text(card, ".case", cs);
  updateCommon(card, d);
}

async function poll() {
  try {
    const res = await fetch("/api/fleet", {cache: "no-store"});
    const fleet = await res.json();
    const bodies = fleet.devices.filter((d) => d.kind !== "room").length;
    const info = [`${bodies} device(s), ${fleet.devices.length - bodies} room(s)`,
      fleet.sync ? `sync to the local store via ${fleet.broker}` : "sync off",
      `workdir ${fleet.workdir}`];
    text(document, "#fleet-info", info.join(" · "));
    document.body.classList.remove("offline");
    for (const d of fleet.devices) {
      const room = d.kind === "room";
      let card = cards.get(d.id);
      if (!card) {
        card = room ? makeRoomCard(d) : makeBodyCard(d);
        cards.set(d.id, card);
      }
      (room ? updateRoom : updateBody)(card, d);
    }
  } catch (err) {
    document.body.classList.add("offline");
    text(document, "#fleet-info", `panel not reachable (${err})`);
  }
  setTimeout(poll, POLL_MS);
}

poll();
