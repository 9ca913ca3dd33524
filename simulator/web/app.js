// The panel's page: polls /api/fleet about four times a second, draws a card per device,
// refreshes each preview as soon as the last one loaded, and posts button presses.
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

async function post(id, action) {
  const res = await fetch(`/api/devices/${encodeURIComponent(id)}/${action}`, {method: "POST"});
  if (!res.ok) console.warn(action, res.status, await res.text());
}

function refreshPreview(card, url) {
  const img = $(card, "img.preview");
  const next = () => setTimeout(() => refreshPreview(card, url), PREVIEW_MS);
  img.onload = next;
  img.onerror = () => setTimeout(() => refreshPreview(card, url), 1000);
  img.src = `${url}?t=${Date.now()}`;
}

function makeCard(d) {
  const card = document.getElementById("card").content.firstElementChild.cloneNode(true);
  card.dataset.device = d.id;
  text(card, ".device-id", d.id);
  for (const b of card.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", () => post(d.id, b.dataset.action));
  }
  for (const b of card.querySelectorAll("button[data-toggle]")) {
    b.addEventListener("click", () => {
      const on = b.classList.contains("active");
      const names = {camera: ["camera-fault", "camera-ok"], gps: ["gps-lost", "gps-ok"]};
      post(d.id, names[b.dataset.toggle][on ? 1 : 0]);
    });
  }
  document.getElementById("fleet").appendChild(card);
  refreshPreview(card, d.preview);
  return card;
}

function update(card, d) {
  const recording = d.state === "recording";
  card.classList.toggle("recording", recording);
  const state = $(card, ".state");
  text(card, ".state", d.close_armed ? "recording (close armed)" : d.state);
  state.dataset.state = d.state || "";

  const led = $(card, ".led");
  led.dataset.led = d.led.pin ? "on" : "off";
  led.dataset.indicator = d.led.indicator;
  text(card, ".led-label", `LED ${d.led.indicator}`);

  text(card, ".session", d.session ? `session ${d.session}` : "no session open");
  $(card, ".session").dataset.session = d.session || "";

  $(card, "button.record").classList.toggle("active", recording);
  $(card, "button.explain").classList.toggle("prompt", d.explain_prompt);
  $(card, "button.camera").classList.toggle("active", d.camera_fault);
  $(card, "button.gps").classList.toggle("active", !!(d.gps && d.gps.jammed));

  const b = d.battery || {};
  text(card, ".battery", b.percent === undefined ? "" :
    `${b.percent.toFixed(1)} %${b.external ? " (external power)" : ""}`);
  const s = d.storage || {};
  text(card, ".storage", s.total ? `${bytes(s.used)} of ${bytes(s.total)} (${(s.fraction * 100).toFixed(2)} %)` : "");
  const g = d.gps || {};
  let gps = "no position yet";
  if (g.fix) gps = `fix ${g.lat.toFixed(6)}, ${g.lon.toFixed(6)}${g.satellites ? ` · ${g.satellites} sats` : ""}`;
  else if (g.age !== null && g.age !== undefined) gps = `NO FIX (last ${g.age.toFixed(0)} s ago)`;
  text(card, ".gps-text", gps);
  $(card, ".gps-text").classList.toggle("warn", !g.fix);
  text(card, ".clock", `${clockText(d.clock)} · ${d.fps} fps`);
  text(card, ".badges", (d.badges || []).join(", ") || "—");
  const gaps = [];
  if (d.interrupted.length) gaps.push(`interrupted: ${d.interrupted.join(", ")}`);
  if (d.explain_prompt) gaps.push(d.explain_mode === "button" ? "press Explain, then speak" : "explaining (speak now)");
  if (d.unexplained.length) gaps.push(`${d.unexplained.length} unexplained`);
  text(card, ".gaps", gaps.join(" · ") || "none");
  $(card, ".gaps").classList.toggle("warn", gaps.length > 0);
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

async function poll() {
  try {
    const res = await fetch("/api/fleet", {cache: "no-store"});
    const fleet = await res.json();
    const info = [`${fleet.devices.length} device(s)`,
      fleet.sync ? `sync to the local store via ${fleet.broker}` : "sync off",
      `workdir ${fleet.workdir}`];
    text(document, "#fleet-info", info.join(" · "));
    document.body.classList.remove("offline");
    for (const d of fleet.devices) {
      const card = cards.get(d.id) || cards.set(d.id, makeCard(d)).get(d.id);
      update(card, d);
    }
  } catch (err) {
    document.body.classList.add("offline");
    text(document, "#fleet-info", `panel not reachable (${err})`);
  }
  setTimeout(poll, POLL_MS);
}

poll();
