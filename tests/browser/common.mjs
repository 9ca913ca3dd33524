// What the browser tests share: arguments, Debian's Chromium started headless with the
// flags this machine's closed network needs, and a page that reports its own errors.
import {createHash} from "node:crypto";
import {chromium} from "playwright-core";

export const STEP_MS = 15000;

export const step = (what) => console.log(`step: ${what}`);
export const sha = (buf) => createHash("sha256").update(buf).digest("hex").slice(0, 16);

export function args(script) {
  const [url, outdir] = process.argv.slice(2);
  if (!url || !outdir) {
    console.error(`usage: node ${script} URL OUTDIR`);
    process.exit(2);
  }
  return {url, outdir};
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The machine's network is closed: no background connections, no sandbox as root.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export async function open(browser, url) {
  const page = await browser.newPage({viewport: {width: 1100, height: 1000}});
  page.on("pageerror", (err) => console.log(`page error: ${err}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") console.log(`console: ${msg.text()}`);
  });
  await page.goto(url);
  return page;
}
