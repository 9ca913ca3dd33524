// Drives `unbroken sim panel` in Debian's Chromium, headless, as an officer would:
// open the page, press record, see the LED and the preview change, close the session
// (press, then confirm). Run by tests/test_sim_web.py:
//
//   node tests/browser/panel.mjs http://127.0.0.1:PORT/ OUTDIR
//
// Prints one line per step; exits non-zero (with the reason) on the first failure.
// Screenshots: OUTDIR/panel-recording.png, OUTDIR/panel.png.
import {join} from "node:path";
import {args, launch, open, sha, step, STEP_MS} from "./common.mjs";

const {url, outdir} = args("panel.mjs");
const browser = await launch();
try {
  const page = await open(browser, url);

  const card = page.locator("section.card.body[data-device]").first();
  await card.waitFor({timeout: STEP_MS});
  const id = await card.getAttribute("data-device");
  const sel = `section.card[data-device="${id}"]`;
  step(`card for ${id}`);

  // Polling fills the card; before any press the LED is off and nothing records.
  await page.waitForFunction(
    (s) => document.querySelector(`${s} .state`).dataset.state !== "",
    sel,
    {timeout: STEP_MS},
  );
  const led0 = await card.locator(".led").getAttribute("data-led");
  const state0 = await card.locator(".state").getAttribute("data-state");
  if (led0 !== "off" || state0 === "recording") {
    throw new Error(`expected LED off and not recording, got LED ${led0}, state ${state0}`);
  }
  step(`LED ${led0}, state ${state0}`);

  // The live preview: a picture has loaded.
  const preview = card.locator("img.preview");
  await page.waitForFunction(
    (s) => document.querySelector(`${s} img.preview`).naturalWidth > 0,
    sel,
    {timeout: STEP_MS},
  );
  const before = await preview.screenshot();
  step(`preview ${sha(before)}`);

  // Press record: the page posts, the server drives the record button's mock pin.
  await card.locator("button.record").click();
  await page.waitForFunction(
    (s) => {
      const c = document.querySelector(s);
      return c.querySelector(".led").dataset.led === "on" &&
        c.querySelector(".state").dataset.state === "recording" &&
        c.querySelector(".session").dataset.session !== "";
    },
    sel,
    {timeout: STEP_MS},
  );
  const session = await card.locator(".session").getAttribute("data-session");
  step(`recording: LED on, session ${session}`);

  // The preview goes on changing (new frames, new watermark time).
  await page.waitForTimeout(700);
  const after = await preview.screenshot();
  if (before.equals(after)) throw new Error("the preview did not change after a moment");
  step(`preview changed ${sha(before)} -> ${sha(after)}`);
  // Wait for a segment to be sealed, so the event log and sync backlog show it.
  await page.waitForFunction(
    (s) => [...document.querySelectorAll(`${s} table.events tr.kind-segment`)].length > 0,
    sel,
    {timeout: STEP_MS},
  );
  await page.screenshot({path: join(outdir, "panel-recording.png"), fullPage: true});

  // Close: press, then confirm within the confirm window (one press only arms the close).
  await card.locator("button.record").click();
  await card.locator("button.record").click();
  await page.waitForFunction(
    (s) => {
      const c = document.querySelector(s);
      return c.querySelector(".led").dataset.led === "off" &&
        c.querySelector(".state").dataset.state !== "recording" &&
        c.querySelector(".session").dataset.session === "" &&
        !!c.querySelector("table.events tr.kind-session_close");
    },
    sel,
    {timeout: STEP_MS},
  );
  const state1 = await card.locator(".state").getAttribute("data-state");
  step(`closed: LED off, state ${state1}`);

  await page.screenshot({path: join(outdir, "panel.png"), fullPage: true});
  console.log(JSON.stringify({ok: true, device: id, session}));
} finally {
  await browser.close();
}
