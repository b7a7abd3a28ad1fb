// Drives headless Chromium through the tracker test page (used by
// ingest/tests/browser.rs): load, SPA navigation (and a repeated push to the
// same path, which must not count), a custom event with revenue, an
// outbound link click (new tab), then leaving the page. Usage:
// node drive.mjs <page url>
import { chromium } from 'playwright-core';

const url = process.argv[2];
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  // A regular desktop Chrome user agent: ingest drops "HeadlessChrome" as a bot.
  const context = await browser.newContext({
    userAgent:
      'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  });
  const page = await context.newPage();
  const posted = [];
  page.on('requestfinished', async (r) => {
    if (process.env.TALLY_DEBUG && r.method() === 'POST') {
      const resp = await r.response();
      console.error('answered', resp && resp.status(), r.postData());
    }
  });
  page.on('requestfailed', (r) => console.error('failed', r.url(), r.failure() && r.failure().errorText));
  page.on('request', (r) => {
    if (r.method() === 'POST') posted.push(r.postData());
    if (process.env.TALLY_DEBUG) console.error(r.method(), r.url(), r.postData());
  });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => typeof window.tally === 'function' && !window.tally.q);
  await page.waitForTimeout(150);
  await page.click('#spa');
  await page.waitForFunction(() => location.pathname === '/spa/route');
  await page.click('#spa'); // same path again: de-duplicated
  await page.waitForTimeout(150);
  await page.click('#buy');
  await page.waitForTimeout(100);
  // The outbound link opens a new tab (as outbound links usually do).
  await Promise.all([context.waitForEvent('page'), page.click('#out')]);
  await page.waitForTimeout(100);
  // Leave the page: its engagement ping goes out on pagehide.
  await page.goto(new URL('/left', url).href);
  await page.waitForTimeout(500);
  await context.close();
  console.log(JSON.stringify({ posted: posted.length }));
} finally {
  await browser.close();
}
