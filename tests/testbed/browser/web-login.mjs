#!/usr/bin/env node
// web-login.mjs - drive the broker's web login pages in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core), against the real test OP (op/server.mjs).
// Install first: ../setup-browser.sh.
//
//   node web-login.mjs LINK PROVIDER LOGIN [--revoke] [--screenshot FILE]
//       Open LINK (a one-time login link http://127.0.0.1:P/login/<token>; the broker
//       redirects to /web), press the login button of section[data-provider=PROVIDER], log
//       in at the OP as LOGIN (any password), consent if asked, until the browser is back on
//       the broker's origin. Prints one JSON object:
//         {"who": "Signed in as ...", "status": "<.status of the section>",
//          "flash": "<.flash>" | null, "url": "<final URL>"}
//       --revoke then presses the section's revoke button and adds "status_after_revoke"
//       (and "flash_after_revoke"). --back-at ORIGIN: the provider sends the browser back to
//       ORIGIN, not LINK's origin (another replica of the broker behind the same name). --screenshot FILE saves a full-page PNG of the last page
//       (also when the run fails).
//   node web-login.mjs --reuse LINK [--screenshot FILE]
//       Just open LINK; prints {"url": final URL, "h1": first h1 | null, "status": HTTP status
//       of the final response}. Exit 0 whatever the status.
//
// Exit 1 with one line on stderr on any unexpected page (with its URL and h1/title), 2 on
// bad usage. Only loopback hosts are loaded: any other request (the OP's pages @import a web
// font) is aborted, so nothing waits for the closed network.
//
// Environment (optional): TESTBED_CHROMIUM (/usr/bin/chromium), WEB_LOGIN_PASSWORD
// ("password"; the OP's devInteractions accept any), WEB_LOGIN_TIMEOUT_MS (15000, per step),
// WEB_LOGIN_DEBUG=1 (log each page to stderr).
//
// Also a module: launchBrowser() / isLoopbackUrl() for the testbed's own scripts.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  // without these Chromium phones home and this machine's closed network refuses it
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const TIMEOUT_MS = Number.parseInt(process.env.WEB_LOGIN_TIMEOUT_MS || '15000', 10) || 15000;
const DEBUG = process.env.WEB_LOGIN_DEBUG === '1';

function debug(...parts) {
  if (DEBUG) console.error('[web-login]', ...parts);
}

export function isLoopbackUrl(raw) {
  let u;
  try { u = new URL(raw); } catch { return false; }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return true; // data:, about:, blob:
  const h = u.hostname.toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '[::1]' || /^127(\.\d{1,3}){3}$/.test(h);
}

// launchBrowser(): { context, page, close() } - a fresh profile in a temporary directory,
// removed again by close(). Requests to non-loopback hosts are aborted.
export async function launchBrowser({ executablePath = process.env.TESTBED_CHROMIUM || '/usr/bin/chromium' } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'web-login-profile-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 60000,
      // we close the browser ourselves on signals, so the profile directory goes too
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
      viewport: { width: 1000, height: 800 },
    });
  } catch (err) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  context.setDefaultTimeout(TIMEOUT_MS);
  context.setDefaultNavigationTimeout(TIMEOUT_MS);
  await context.route((url) => !isLoopbackUrl(url.href), (route) => {
    debug(`blocked ${route.request().url()}`);
    return route.abort('blockedbyclient');
  });
  const page = context.pages()[0] || await context.newPage();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try { await context.close(); } catch { /* already gone */ }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, close };
}

// ---------------------------------------------------------------------------------------

class Unexpected extends Error {}

const oneLine = (s) => (s == null ? '' : String(s).replace(/\s+/g, ' ').trim());
// a playwright error as one short line (without its ANSI-coloured "Call log:")
const errText = (err) => oneLine(String(err?.message ?? err).split('Call log:')[0].replace(/\x1b\[[0-9;]*m/g, '')).slice(0, 300);
const cssString = (s) => JSON.stringify(String(s)); // a valid CSS string literal
const SUBMIT = 'button[type=submit], input[type=submit], button:not([type])';

async function textOf(locator) {
  if ((await locator.count()) === 0) return null;
  return oneLine(await locator.first().textContent());
}

// "URL (h1: ...; title: ...)" for error messages
async function describePage(page) {
  const parts = [];
  try {
    const h1 = await textOf(page.locator('h1'));
    if (h1) parts.push(`h1: ${h1}`);
    const title = oneLine(await page.title());
    if (title) parts.push(`title: ${title}`);
    // the OP's error page lists error / error_description in <pre>s; a broker page may flash
    const pre = oneLine((await page.locator('pre').allTextContents()).join(' '));
    if (pre) parts.push(pre.slice(0, 300));
    const flash = oneLine((await page.locator('.flash').allTextContents()).join(' '));
    if (flash) parts.push(`flash: ${flash.slice(0, 300)}`);
  } catch { /* page gone */ }
  return `${page.url()}${parts.length ? ` (${parts.join('; ')})` : ''}`;
}

// click LOCATOR and wait until the next document of the main frame has loaded
async function clickAndLoad(page, locator) {
  const navigated = page.waitForEvent('framenavigated', {
    predicate: (f) => f === page.mainFrame(),
    timeout: TIMEOUT_MS,
  });
  await locator.click();
  await navigated;
  await page.waitForLoadState('load');
  debug(`-> ${page.url()}`);
}

async function brokerSection(page, provider, where) {
  if ((await page.locator('#who').count()) === 0) {
    throw new Unexpected(`${where}: no #who on the page at ${await describePage(page)}`);
  }
  const section = page.locator(`section.provider[data-provider=${cssString(provider)}]`);
  if ((await section.count()) !== 1) {
    const names = await page.locator('section.provider').evaluateAll(
      (els) => els.map((e) => e.getAttribute('data-provider')),
    );
    throw new Unexpected(`${where}: ${await section.count()} sections for provider ${provider} `
      + `(present: ${names.join(', ') || 'none'}) at ${await describePage(page)}`);
  }
  return section;
}

async function brokerState(page, section) {
  return {
    who: await textOf(page.locator('#who')),
    status: await textOf(section.locator('.status')),
    flash: await textOf(page.locator('p.flash, .flash')),
  };
}

function actionButton(section, kind, provider) {
  // the form's action is "/web/KIND/NAME" (also accepted: an absolute URL ending that way)
  const form = section.locator(`form[action$=${cssString(`/web/${kind}/${provider}`)}]`);
  return { form, button: form.locator(SUBMIT).first() };
}

async function opPageKind(page) {
  const forms = page.locator('form');
  const n = await forms.count();
  for (let i = 0; i < n; i += 1) {
    const f = forms.nth(i);
    const promptInput = f.locator('input[name=prompt]');
    const prompt = (await promptInput.count()) > 0 ? await promptInput.first().getAttribute('value') : null;
    if ((await f.locator('input[name=login]').count()) > 0 && (await f.locator('input[name=password]').count()) > 0) {
      return { kind: 'login', form: f };
    }
    if (prompt === 'consent') return { kind: 'consent', form: f };
  }
  return { kind: 'unknown' };
}

async function webLogin(page, { link, provider, login, revoke, backAt }) {
  let brokerOrigin = new URL(link).origin;
  const password = process.env.WEB_LOGIN_PASSWORD || 'password';

  const resp = await page.goto(link, { waitUntil: 'load' });
  debug(`goto ${link} -> ${page.url()} (${resp?.status()})`);
  if (!resp || !resp.ok() || new URL(page.url()).origin !== brokerOrigin) {
    throw new Unexpected(`login link answered HTTP ${resp?.status() ?? '-'} at ${await describePage(page)}`);
  }
  let section = await brokerSection(page, provider, 'after the login link');
  const login1 = actionButton(section, 'login', provider);
  if ((await login1.button.count()) === 0) {
    throw new Unexpected(`no login form for ${provider} at ${await describePage(page)}`);
  }
  await clickAndLoad(page, login1.button);
  if (backAt) brokerOrigin = backAt;

  // at the OP (or wherever the broker sent us) until we are back on the broker
  const seen = [];
  for (let step = 0; new URL(page.url()).origin !== brokerOrigin; step += 1) {
    if (step >= 10) throw new Unexpected(`gave up after ${step} pages (${seen.join(' ')}) at ${await describePage(page)}`);
    const { kind, form } = await opPageKind(page);
    seen.push(kind);
    debug(`page ${step}: ${kind} at ${page.url()}`);
    if (kind === 'login') {
      await form.locator('input[name=login]').fill(login);
      await form.locator('input[name=password]').fill(password);
      await clickAndLoad(page, form.locator(SUBMIT).first());
    } else if (kind === 'consent') {
      await clickAndLoad(page, form.locator(SUBMIT).first());
    } else {
      throw new Unexpected(`unexpected page ${await describePage(page)}`);
    }
  }

  section = await brokerSection(page, provider, 'back on the broker');
  const out = { ...(await brokerState(page, section)), url: page.url() };

  if (revoke) {
    const { button } = actionButton(section, 'revoke', provider);
    if ((await button.count()) === 0) {
      throw new Unexpected(`no revoke form for ${provider} after the login (status: ${out.status}) at ${await describePage(page)}`);
    }
    await clickAndLoad(page, button);
    section = await brokerSection(page, provider, 'after revoke');
    const after = await brokerState(page, section);
    out.status_after_revoke = after.status;
    out.flash_after_revoke = after.flash;
    out.url_after_revoke = page.url();
  }
  return out;
}

async function reuse(page, { link }) {
  let resp;
  try {
    resp = await page.goto(link, { waitUntil: 'load' });
  } catch (err) {
    throw new Unexpected(`cannot open ${link}: ${errText(err)}`);
  }
  return { url: page.url(), h1: await textOf(page.locator('h1')), status: resp ? resp.status() : null };
}

// ---------------------------------------------------------------------------------------

const USAGE = 'usage: web-login.mjs LINK PROVIDER LOGIN [--revoke] [--screenshot FILE] [--back-at ORIGIN] | --reuse LINK [--screenshot FILE]';

function parseArgs(argv) {
  const opts = { revoke: false, reuse: false, screenshot: null, backAt: null };
  const pos = [];
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--revoke') opts.revoke = true;
    else if (a === '--reuse') opts.reuse = true;
    else if (a === '--screenshot') {
      opts.screenshot = argv[i + 1];
      i += 1;
      if (!opts.screenshot) return null;
    } else if (a === '--back-at') {
      try { opts.backAt = new URL(argv[i + 1]).origin; } catch { return null; }
      i += 1;
    } else if (a.startsWith('--')) return null;
    else pos.push(a);
  }
  if (opts.reuse) {
    if (pos.length !== 1 || opts.revoke) return null;
    [opts.link] = pos;
  } else {
    if (pos.length !== 3) return null;
    [opts.link, opts.provider, opts.login] = pos;
  }
  try { new URL(opts.link); } catch { return null; } // eslint-disable-line no-new
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts) {
    console.error(USAGE);
    return 2;
  }
  let browser;
  const onSignal = async (sig) => {
    if (browser) await browser.close();
    console.error(`web-login: ${sig}`);
    process.exit(1);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, onSignal);

  let rc = 0;
  try {
    browser = await launchBrowser();
    const { page } = browser;
    try {
      const out = opts.reuse ? await reuse(page, opts) : await webLogin(page, opts);
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } catch (err) {
      rc = 1;
      if (err instanceof Unexpected) console.error(`web-login: ${err.message}`);
      else console.error(`web-login: ${errText(err)} at ${await describePage(page)}`);
    }
    if (opts.screenshot) {
      try {
        await page.screenshot({ path: opts.screenshot, fullPage: true });
      } catch (err) {
        console.error(`web-login: screenshot failed: ${errText(err)}`);
        rc ||= 1;
      }
    }
  } catch (err) {
    console.error(`web-login: cannot start chromium: ${errText(err)}`);
    rc = 1;
  } finally {
    if (browser) await browser.close();
  }
  return rc;
}

// run main() only as a script, not when imported (e.g. by `node --input-type=module -e`, whose
// argv[1] is then the script's first argument)
function isMain() {
  try {
    return import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}
if (isMain()) process.exitCode = await main();
