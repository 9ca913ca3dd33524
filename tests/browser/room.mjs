// Drives an interview room in `unbroken sim panel` in Debian's Chromium, headless, as the
// people at the room would: close the door (the panel asks for the key), turn the key to
// start (the RECORDING lamp lights, every track records), then turn it to stop. Run by
// tests/test_sim_web.py:
//
//   node tests/browser/room.mjs http://127.0.0.1:PORT/ OUTDIR
//
// Prints one line per step; exits non-zero (with the reason) on the first failure.
// Screenshots: OUTDIR/room-recording.png, OUTDIR/room.png.
import {join} from "node:path";
import {args, launch, open, sha, step, STEP_MS} from "./common.mjs";

const {url, outdir} = args("room.mjs");
const browser = await launch();
try {
  const page = await open(browser, url);

  const card = page.locator("section.card.room[data-device]").first();
  await card.waitFor({timeout: STEP_MS});
  const id = await card.getAttribute("data-device");
  const sel = `section.card.room[data-device="${id}"]`;
  step(`room card for ${id}`);

  // The state a room card shows: panel state, the lamp, the session.
  const wait = (what, test) => page.waitForFunction(
    ([s, t]) => {
      const c = document.querySelector(s);
      const st = {
        state: c.querySelector(".panel-state").dataset.state,
        lamp: c.querySelector(".lamp").dataset.lit,
        session: c.querySelector(".session").dataset.session,
        segments: [...c.querySelectorAll("table.events tr.kind-segment td:nth-child(4)")]
          .map((td) => td.textContent),
        closed: !!c.querySelector("table.events tr.kind-session_close"),
      };
      return new Function("st", `return ${t}`)(st);
    },
    [sel, test],
    {timeout: STEP_MS},
  ).catch((e) => {
    throw new Error(`waiting for ${what}: ${e.message.split("\n")[0]}`);
  });

  await wait("the panel idle, lamp off", 'st.state === "idle" && st.lamp === "off" && st.session === ""');
  step("idle, lamp off");

  // Every track's preview has loaded: the composite large, the cameras small.
  await page.waitForFunction(
    (s) => [...document.querySelectorAll(`${s} img.preview, ${s} img.track`)]
      .every((img) => img.naturalWidth > 0),
    sel,
    {timeout: STEP_MS},
  );
  const tracks = await card.locator("img.track").evaluateAll((imgs) => imgs.map((i) => i.dataset.track));
  const main = await card.locator("img.preview").getAttribute("data-track");
  step(`previews: ${main} large, ${tracks.join(" and ")} small`);

  // The door closes: the panel asks for the key's confirmation; nothing records yet.
  await card.locator("button.door-close").click();
  await wait("confirm", 'st.state === "confirm" && st.lamp === "off" && st.session === ""');
  step("door closed: panel state confirm, lamp off");

  const pip = card.locator("img.preview");
  const before = await pip.screenshot();

  // The key confirms: the session opens on every track, the lamp outside lights.
  await card.locator("button.key-start").click();
  await wait("recording", 'st.state === "recording" && st.lamp === "on" && st.session !== ""');
  const session = await card.locator(".session").getAttribute("data-session");
  step(`key start: recording, lamp lit, session ${session}`);

  await page.waitForTimeout(700);
  const after = await pip.screenshot();
  if (before.equals(after)) throw new Error("the picture-in-picture preview did not change");
  step(`${main} preview changed ${sha(before)} -> ${sha(after)}`);

  // A segment of each track sealed, in the event log.
  await wait(
    "a segment of every track",
    `["${[...tracks, main].join('", "')}"].every((t) => st.segments.some((s) => s.includes(" " + t + " ")))`,
  );
  await page.screenshot({path: join(outdir, "room-recording.png"), fullPage: true});
  step("segments of every track in the event log");

  // The key to stop: the session closes, the lamp goes out.
  await card.locator("button.key-stop").click();
  await wait("closed", 'st.state === "idle" && st.lamp === "off" && st.session === "" && st.closed');
  step("key stop: idle, lamp off, session closed");

  await page.screenshot({path: join(outdir, "room.png"), fullPage: true});
  console.log(JSON.stringify({ok: true, device: id, session, tracks: [...tracks, main]}));
} finally {
  await browser.close();
}
