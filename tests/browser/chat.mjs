// The web client in real Chromium (Debian's, driven by playwright-core), with a real `nc`
// user and a raw-socket IRC user in the same rooms. Started by tests/browser.rs, which gives
// the server binary in LINECHAT_BIN and where to put screenshots in SHOTS. Exits non-zero,
// saying what went wrong, on the first failed step.
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.LINECHAT_BIN;
const SHOTS = process.env.SHOTS || 'target/browser';
const WAIT = 15000;
mkdirSync(SHOTS, { recursive: true });
const MOTD = `${SHOTS}/motd.txt`;
writeFileSync(MOTD, 'Be kind: this is a test server.\n');

const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const [LINE, IRC, WEB] = [await freePort(), await freePort(), await freePort()];
const BASE = `http://127.0.0.1:${WEB}`;
// Accounts need a data directory; it lasts across the restart below, as a real one would.
const DATA = mkdtempSync(join(tmpdir(), 'linechat-browser-'));

let server;
function startServer() {
  server = spawn(BIN, ['--listen', `line://127.0.0.1:${LINE}`, '--listen', `irc://127.0.0.1:${IRC}`,
    '--listen', `http://127.0.0.1:${WEB}`, '--server-name', 'test.local', '--shutdown-grace', '1',
    '--data-dir', DATA, '--motd', MOTD],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  server.stderr.on('data', (d) => { log += d; });
  return new Promise((resolve, reject) => {
    const t = setInterval(() => { if ((log.match(/listening/g) || []).length >= 3) { clearInterval(t); resolve(); } }, 50);
    server.on('exit', (code) => { clearInterval(t); reject(new Error(`server exited (${code}): ${log}`)); });
  });
}
function stopServer() {
  return new Promise((resolve) => { server.removeAllListeners('exit'); server.on('exit', resolve); server.kill('SIGTERM'); });
}

// A line-reading socket-like client: the real `nc` or a TCP socket for IRC.
class Lines {
  constructor(name, readable, write) {
    this.name = name; this.lines = []; this.waiters = []; this.write = write; let buf = '';
    readable.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) { this.push(buf.slice(0, i).replace(/\r$/, '')); buf = buf.slice(i + 1); }
      if (buf.startsWith('Please enter your nickname: ')) { this.push(buf); buf = ''; }
    });
  }
  push(line) { this.lines.push(line); for (const w of [...this.waiters]) w(); }
  // Waits for a line containing `part` (after those already consumed) and returns it.
  async expect(part) {
    const deadline = Date.now() + WAIT;
    for (;;) {
      const i = this.lines.findIndex((l) => l.includes(part));
      if (i >= 0) { const [line] = this.lines.splice(0, i + 1).slice(-1); return line; }
      if (Date.now() > deadline) throw new Error(`${this.name}: no line with ${JSON.stringify(part)}; had ${JSON.stringify(this.lines.slice(-15))}`);
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, 200); });
      this.waiters = [];
    }
  }
  send(line) { this.write(line + '\n'); }
}

function netcat(nick) {
  const nc = spawn('nc', ['-N', '127.0.0.1', String(LINE)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const c = new Lines(`nc ${nick}`, nc.stdout, (s) => nc.stdin.write(s));
  c.proc = nc;
  return c;
}

async function ircUser(nick) {
  const sock = connect(IRC, '127.0.0.1');
  const c = new Lines(`irc ${nick}`, sock, (s) => sock.write(s.replace(/\n$/, '\r\n')));
  sock.on('data', (d) => { for (const l of d.toString().split('\r\n')) if (l.startsWith('PING')) sock.write('PONG' + l.slice(4) + '\r\n'); });
  c.send(`NICK ${nick}`); c.send(`USER ${nick} 0 * :${nick}`);
  await c.expect(' 001 ');
  c.sock = sock;
  return c;
}

const step = (what) => console.log(`- ${what}`);
const requests = [];

async function page(browser, nick, viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1100, height: 700 } });
  const p = await context.newPage();
  p.on('request', (r) => requests.push(r.url()));
  p.on('websocket', (ws) => requests.push(ws.url()));
  p.on('pageerror', (e) => { throw new Error(`${nick}'s page: ${e}`); });
  await p.goto(BASE + '/');
  if (nick) await login(p, nick);
  return p;
}

async function login(p, nick) {
  await p.fill('#nick', nick);
  await p.press('#nick', 'Enter');
}

const inLog = (p, text) => p.locator('#log li', { hasText: text }).first().waitFor({ timeout: WAIT });
const say = async (p, text) => { await p.fill('#input', text); await p.press('#input', 'Enter'); };
async function title(p, want) {
  await p.waitForFunction((w) => document.getElementById('view-title').textContent === w, want, { timeout: WAIT });
}

let browser;
try {
  await startServer();
  step('a netcat user and an IRC user are in the lobby');
  const nora = netcat('nora');
  await nora.expect('Please enter your nickname');
  nora.send('nora');
  await nora.expect('Welcome to the chat, nora!');
  nora.send('/topic where everyone starts');
  await nora.expect('set the topic');
  nora.send('said before anyone came');
  const ivan = await ircUser('ivan');
  ivan.send('JOIN #lobby');
  await ivan.expect(' 366 ivan #lobby ');

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  step('a taken nickname and an invalid one say why');
  const alice = await page(browser, null);
  await login(alice, 'nora');
  await alice.locator('#login-error', { hasText: 'The nickname nora is already taken; choose another.' }).waitFor({ timeout: WAIT });
  await login(alice, 'no spaces');
  await alice.locator('#login-error', { hasText: 'A nickname is one word, without spaces.' }).waitFor({ timeout: WAIT });
  await login(alice, 'bad!nick');
  await alice.locator('#login-error', { hasText: 'bad!nick: Erroneous nickname: a nickname is 1-' }).waitFor({ timeout: WAIT });
  await login(alice, 'alice');
  await title(alice, 'lobby');
  step('the lobby opens with its scrollback and topic, and the message of the day');
  await alice.locator('#log li.history', { hasText: 'said before anyone came' }).waitFor({ timeout: WAIT });
  await alice.locator('#log li', { hasText: 'Be kind: this is a test server.' }).waitFor({ timeout: WAIT });
  await alice.locator('#topic', { hasText: 'where everyone starts' }).waitFor({ timeout: WAIT });
  await nora.expect('alice has joined');
  await ivan.expect(':alice!');

  step('two browser users, a netcat user and an IRC user see each other');
  const bob = await page(browser, 'bob', { width: 390, height: 800 });
  await title(bob, 'lobby');
  await inLog(alice, 'bob has joined.');
  await say(alice, 'hello from alice');
  await inLog(bob, 'hello from alice');
  await nora.expect('alice: hello from alice');
  await ivan.expect('PRIVMSG #lobby :hello from alice');
  nora.send('hi from netcat');
  await inLog(alice, 'hi from netcat');
  await inLog(bob, 'hi from netcat');
  ivan.send('PRIVMSG #lobby :hi from irc');
  await inLog(alice, 'hi from irc');
  await inLog(bob, 'hi from irc');
  await nora.expect('ivan: hi from irc');
  for (const nick of ['alice', 'bob', 'ivan', 'nora']) {
    await alice.locator('#members li', { hasText: nick }).waitFor({ timeout: WAIT });
  }
  const own = alice.locator('#log li.mine', { hasText: 'hello from alice' });
  await own.waitFor({ timeout: WAIT });
  if (!(await own.locator('time').textContent()).match(/^\d\d:\d\d$/)) throw new Error('no time on a message');
  await say(alice, '/me waves');
  await nora.expect('* alice waves');

  step('leaves and joins of the others are shown');
  ivan.send('PART #lobby :brb');
  await inLog(alice, 'ivan has left (brb).');
  await inLog(bob, 'ivan has left (brb).');
  ivan.send('JOIN #lobby');
  await inLog(alice, 'ivan has joined.');

  step('room switching, counts and unread marks');
  await say(alice, '/join dev');
  await title(alice, 'dev');
  nora.send('while you were away');
  const lobbyButton = alice.locator('.sidebar button[data-view="#lobby"]');
  await lobbyButton.locator('.unread', { hasText: '1' }).waitFor({ timeout: WAIT });
  await alice.locator('.sidebar button[data-view="#dev"] .count', { hasText: '1' }).waitFor({ timeout: WAIT });
  await say(alice, '/topic all about dev');
  await inLog(alice, 'alice set the topic: all about dev');
  await alice.keyboard.press('Alt+ArrowUp'); // keyboard alone: to the previous conversation
  await title(alice, 'lobby');
  await inLog(alice, 'while you were away');
  if (await lobbyButton.locator('.unread').count()) throw new Error('unread mark not cleared');
  await alice.click('.sidebar button[data-view="#dev"]');
  await title(alice, 'dev');

  step('private messages, from the page and from netcat');
  await say(alice, '/msg bob psst, bob');
  await title(alice, 'with bob');
  await bob.locator('.sidebar button[data-view="alice"] .unread').waitFor({ timeout: WAIT });
  await bob.click('.sidebar button[data-view="alice"]');
  await inLog(bob, 'psst, bob');
  await say(bob, 'hi alice, just us');
  await inLog(alice, 'hi alice, just us');
  nora.send('/msg alice a word from netcat');
  await alice.locator('.sidebar button[data-view="nora"] .unread').waitFor({ timeout: WAIT });
  await say(bob, '/msg nora hello nora');
  await nora.expect('hello nora');

  step('a line over the limit is refused visibly and kept');
  await alice.click('.sidebar button[data-view="#dev"]');
  const long = 'x'.repeat(600);
  await say(alice, long);
  await inLog(alice, 'Not sent: that is 600 bytes');
  if ((await alice.inputValue('#input')) !== long) throw new Error('the refused line was not kept');
  // Short enough as typed, too long once others get it behind alice's nick!user@host.
  const near = 'y'.repeat(490);
  await say(alice, near);
  await inLog(alice, 'Not sent: that is 490 bytes');
  if ((await alice.inputValue('#input')) !== near) throw new Error('the refused line was not kept');
  await alice.fill('#input', '');

  await alice.click('.sidebar button[data-view="#lobby"]');
  await alice.screenshot({ path: `${SHOTS}/chat.png` });
  await bob.click('.sidebar button[data-view="#lobby"]');
  await bob.screenshot({ path: `${SHOTS}/phone.png` });

  step('the server restarts: the pages say so, reconnect by themselves and chat again');
  await stopServer();
  await alice.locator('#status', { hasText: 'Reconnecting' }).waitFor({ timeout: WAIT });
  await alice.screenshot({ path: `${SHOTS}/reconnecting.png` });
  await startServer();
  await inLog(alice, 'Reconnected.');
  await inLog(bob, 'Reconnected.');
  await alice.locator('#status', { hasText: 'connected' }).waitFor({ timeout: WAIT });
  await alice.click('.sidebar button[data-view="#lobby"]');
  await bob.locator('.sidebar button[data-view="#lobby"]').click();
  await bob.locator('#members li', { hasText: 'alice' }).waitFor({ timeout: WAIT });
  await say(alice, 'after the restart');
  await inLog(bob, 'after the restart');

  step('a registered nickname is used with its password, given in the form (SASL PLAIN)');
  const rita = netcat('rita');
  await rita.expect('Please enter your nickname');
  rita.send('rita');
  await rita.expect('Welcome to the chat, rita!');
  rita.send('/register rita-secret');
  await rita.expect('Your nickname rita is registered.');
  rita.send('/quit');
  await rita.expect('Goodbye!');
  const r = await page(browser, null);
  await login(r, 'rita');
  await r.locator('#login-error', { hasText: 'rita is registered: give its password to use it' }).waitFor({ timeout: WAIT });
  await r.fill('#password', 'not-her-password');
  await login(r, 'rita');
  await r.locator('#login-error', { hasText: 'Password incorrect for the registered nickname' }).waitFor({ timeout: WAIT });
  await r.screenshot({ path: `${SHOTS}/login-password.png` });
  await r.fill('#password', 'rita-secret');
  await login(r, 'rita');
  await title(r, 'lobby');
  await inLog(alice, 'rita has joined.');
  if ((await r.locator('#me').textContent()) !== 'you are rita') throw new Error('not logged in as rita');

  step('a page that leaves is seen leaving');
  await say(bob, '/quit bye');
  await inLog(alice, 'bob has left the chat');

  const foreign = requests.filter((u) => !u.startsWith(BASE) && !u.startsWith(`ws://127.0.0.1:${WEB}/`) && !u.startsWith('data:'));
  if (foreign.length) throw new Error(`requests to other hosts: ${foreign.join(', ')}`);
  console.log(`browser tests passed (${requests.length} requests, all to ${BASE})`);
  process.exitCode = 0;
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server && server.exitCode === null) await stopServer();
  rmSync(DATA, { recursive: true, force: true });
  process.exit(process.exitCode);
}
