// Drives the tester's switches of a body recorder on `unbroken sim panel`, in Debian's
// Chromium, headless: opens a session, then presses each switch and sees its effect on
// the page (button, gaps, event log, storage, clock, battery, network, state, LED).
// Run by tests/test_sim_web.py, after panel.mjs:
//
//   node tests/browser/controls.mjs http://127.0.0.1:PORT/ OUTDIR
//
// Prints one line per step; exits non-zero (with the reason) on the first failure.
// Screenshots: OUTDIR/controls-off.png, OUTDIR/controls.png.
import {join} from "node:path";
import {args, launch, open, step, STEP_MS} from "./common.mjs";

const {url, outdir} = args("controls.mjs");
const browser = await launch();
try {
  const page = await open(browser, url);
  const card = page.locator("section.card.body[data-device]").first();
  await card.waitFor({timeout: STEP_MS});
  const id = await card.getAttribute("data-device");
  const sel = `section.card[data-device="${id}"]`;

  // Waits until check(card) holds in the page; `what` names it in the failure.
  const until = async (what, check, arg = null) => {
    try {
      await page.waitForFunction(
        ([s, src, a]) => new Function("c", "a", `return (${src})(c, a);`)(document.querySelector(s), a),
        [sel, check.toString(), arg],
        {timeout: STEP_MS},
      );
    } catch (err) {
      throw new Error(`${what}: ${err.message.split("\n")[0]}`);
    }
  };

  await until("the card is filled", (c) => c.querySelector(".state").dataset.state !== "");
  const badges = await card.locator(".badges").textContent();
  if (!badges || badges === "—") throw new Error("no officer's badge on the card");
  step(`card for ${id}, badges ${badges}`);

  await card.locator("button.record").click();
  await until("recording", (c) => c.querySelector(".state").dataset.state === "recording");
  const session = await card.locator(".session").getAttribute("data-session");
  step(`recording, session ${session}`);

  // Microphone: a fault is an interruption of the session, until it recovers.
  await card.locator("button.microphone").click();
  await until("microphone fault shown", (c) => c.querySelector("button.microphone").classList.contains("active") &&
    c.querySelector(".gaps").textContent.includes("microphone") &&
    [...c.querySelectorAll("table.events tr.kind-interruption")].some((tr) => tr.textContent.includes("microphone")));
  await card.locator("button.microphone").click();
  await until("microphone back", (c) => !c.querySelector("button.microphone").classList.contains("active") &&
    !c.querySelector(".gaps").textContent.includes("microphone"));
  step("microphone fault and recovery");

  // Storage: the card fills (storage_full), then is as it was.
  await card.locator("button.fill-storage").click();
  await until("storage filled", (c) => c.querySelector(".storage").textContent.includes("filled by the tester") &&
    [...c.querySelectorAll("table.events tr.kind-interruption")].some((tr) => tr.textContent.includes("storage_full")));
  const full = await card.locator(".storage").textContent();
  await card.locator("button.fill-storage").click();
  await until("storage freed", (c) => !c.querySelector(".storage").textContent.includes("filled") &&
    !c.querySelector(".gaps").textContent.includes("storage_full"));
  step(`storage filled (${full}) and freed`);

  // The clock: an hour ahead, then back; the page's clock follows, and each jump is logged.
  const jumped = (c, a) => [...c.querySelectorAll("table.events tr.kind-interruption")]
    .some((tr) => tr.textContent.includes(`clock_jump: ${a}`));
  const clock0 = await card.locator(".clock").textContent();
  await card.locator("button.clock-ahead").click();
  // The jump is logged before the page's clock shows the new hour: wait for both.
  const ahead = (c, a) => [...c.querySelectorAll("table.events tr.kind-interruption")]
    .some((tr) => tr.textContent.includes(`clock_jump: ${a.jump}`)) &&
    c.querySelector(".clock").textContent.slice(11, 13) !== a.hour;
  await until("clock an hour ahead", ahead, {jump: "+3600", hour: clock0.slice(11, 13)});
  const clock1 = await card.locator(".clock").textContent();
  if (clock1.slice(11, 13) === clock0.slice(11, 13)) throw new Error(`clock ${clock0} -> ${clock1}`);
  await card.locator("button.clock-back").click();
  await until("clock an hour back", jumped, "-3600");
  step(`clock ${clock0} -> ${clock1} -> back`);

  // The battery: a level, then external power in and out.
  await card.locator("input.battery-level").fill("42");
  await card.locator("button.battery-set").click();
  await until("battery at 42 %", (c) => c.querySelector(".battery").textContent.startsWith("42."));
  await card.locator("button.plug").click();
  await until("plugged in", (c) => c.querySelector(".battery").textContent.includes("external power") &&
    c.querySelector("button.plug").textContent === "Unplug");
  await card.locator("button.plug").click();
  await until("unplugged", (c) => !c.querySelector(".battery").textContent.includes("external"));
  step(`battery ${await card.locator(".battery").textContent()}, plugged in and out`);

  // The network (with sync): down, then back and connected again.
  const network = !(await card.locator("button.network").isDisabled());
  if (network) {
    await card.locator("button.network").click();
    await until("network down", (c) => c.querySelector(".network-text").textContent.startsWith("DOWN") &&
      c.querySelector("button.network").classList.contains("active"));
    await card.locator("button.network").click();
    await until("network back", (c) => c.querySelector(".network-text").textContent === "up · connected");
    step("network dropped and back");
  } else step("network: no sync, the button is disabled");

  // Power cut: off at once, LED dark; power on: the session resumes after a power_loss gap.
  await card.locator("button.power-cut").click();
  await until("off after the cut", (c, a) => c.querySelector(".state").dataset.state === "off" &&
    c.querySelector(".session").dataset.session === a &&
    c.querySelector(".network-text").textContent !== "up · connected" &&
    c.querySelector(".state").textContent === "off (power cut)" &&
    c.querySelector(".led").dataset.led === "off" && c.querySelector("button.record").disabled &&
    !c.querySelector("button.power-on").disabled, session);
  await page.screenshot({path: join(outdir, "controls-off.png"), fullPage: true});
  await card.locator("button.power-on").click();
  await until("back on, the session resumed", (c, a) => c.querySelector(".state").dataset.state === "recording" &&
    c.querySelector(".session").dataset.session === a &&
    [...c.querySelectorAll("table.events tr.kind-interruption")].some((tr) => tr.textContent.includes("power_loss")),
  session);
  step("power cut, power on: session resumed after a power_loss gap");

  await card.locator("button.record").click();
  await card.locator("button.record").click();
  await until("closed", (c) => c.querySelector(".session").dataset.session === "");
  await page.screenshot({path: join(outdir, "controls.png"), fullPage: true});
  console.log(JSON.stringify({ok: true, device: id, session, network}));
} finally {
  await browser.close();
}
