// linechat's web client: IRC over WebSocket (subprotocol text.ircv3.net) to the host that
// served this page, nothing else. IRC rather than the netcat protocol because it is
// structured: several rooms at once (so unread marks mean something), member lists, topics,
// timestamps (server-time), our own lines confirmed by the server (echo-message), and
// scrollback (draft/chathistory). The netcat commands typed here are translated (see
// `command`); see docs/PROTOCOL.md, "The web client".
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SERVICE = 'linechat';
  // What an IRC server reads in one line, without its CRLF (512 with it).
  const MAX_LINE = 510;
  const CAPS = 'server-time echo-message multi-prefix batch message-tags draft/chathistory';
  const KEEP = 500; // entries kept per conversation
  const encoder = new TextEncoder();
  const bytes = (s) => encoder.encode(s).length;
  const key = (s) => s.toLowerCase();

  const state = {
    wanted: '', nick: '', prefix: '', motdShown: false, ws: null, registered: false, everRegistered: false,
    // The password of a registered nickname, for SASL PLAIN on every (re)connection; kept in
    // this page's memory only. `saslWhy`: the server's reason for the last refusal.
    password: '', saslWhy: '',
    quitting: false, retry: 0, timer: null, listTimer: null,
    views: new Map(), // key -> view; rooms keyed "#name", private conversations by nick
    current: null, // key of the view shown
    batches: new Map(), // open BATCH id -> type
    listing: null, listAsked: false, switchTo: null,
  };

  // ---- IRC lines ----

  function unescapeTag(v) {
    return v.replace(/\\(.)/g, (_, c) => ({ ':': ';', s: ' ', r: '\r', n: '\n' }[c] ?? c));
  }

  function parse(line) {
    const msg = { tags: {}, prefix: '', params: [] };
    let i = 0;
    if (line[0] === '@') {
      const end = line.indexOf(' ');
      for (const tag of line.slice(1, end).split(';')) {
        const eq = tag.indexOf('=');
        if (eq < 0) msg.tags[tag] = ''; else msg.tags[tag.slice(0, eq)] = unescapeTag(tag.slice(eq + 1));
      }
      i = end + 1;
    }
    while (line[i] === ' ') i++;
    if (line[i] === ':') {
      const end = line.indexOf(' ', i);
      msg.prefix = line.slice(i + 1, end);
      i = end + 1;
    }
    while (i < line.length) {
      while (line[i] === ' ') i++;
      if (i >= line.length) break;
      if (line[i] === ':' && msg.params.length > 0) { msg.params.push(line.slice(i + 1)); break; }
      let end = line.indexOf(' ', i);
      if (end < 0) end = line.length;
      msg.params.push(line.slice(i, end));
      i = end;
    }
    msg.command = (msg.params.shift() || '').toUpperCase();
    msg.nick = msg.prefix.split('!')[0];
    return msg;
  }

  function send(line) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(line);
  }

  // ---- conversations ----

  function view(name) {
    const k = key(name);
    let v = state.views.get(k);
    if (!v) {
      v = { name, room: name.startsWith('#'), joined: false, topic: '', members: new Map(),
            count: null, log: [], unread: 0 };
      state.views.set(k, v);
    }
    return v;
  }

  const time = (tags) => (tags && tags.time ? new Date(tags.time) : new Date());

  // kind: msg | action | notice | error; a notice or error goes to the current view unless
  // named.
  function add(where, entry) {
    const v = where ? view(where) : (state.current && state.views.get(state.current));
    if (!v) { if (entry.kind === 'error') $('login-error').textContent = entry.text; return; }
    entry.time = entry.time || new Date();
    v.log.push(entry);
    if (v.log.length > KEEP) v.log.shift();
    if (key(v.name) === state.current) {
      appendEntry(entry);
    } else if (entry.kind === 'msg' || entry.kind === 'action') {
      if (!entry.history) v.unread++;
      renderSidebar();
    }
  }

  function notice(where, text) { add(where, { kind: 'notice', text }); }
  function error(text) { add(null, { kind: 'error', text }); }

  function show(name) {
    const v = view(name);
    state.current = key(v.name);
    v.unread = 0;
    render();
  }

  // ---- rendering ----

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function hhmm(d) {
    return d.toTimeString().slice(0, 5);
  }

  function appendEntry(entry) {
    const log = $('log');
    const li = el('li', [entry.kind, entry.mine ? 'mine' : '', entry.history ? 'history' : ''].join(' ').trim());
    const t = el('time', '', hhmm(entry.time));
    t.dateTime = entry.time.toISOString();
    li.append(t, el('span', 'from', entry.from ? (entry.kind === 'action' ? '* ' + entry.from : entry.from) : ''),
      el('span', 'text', entry.text));
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 30;
    log.append(li);
    while (log.children.length > KEEP) log.firstChild.remove();
    if (atBottom || entry.mine) log.scrollTop = log.scrollHeight;
  }

  function renderSidebar() {
    for (const [listId, rooms] of [['rooms', true], ['privates', false]]) {
      const ul = $(listId);
      ul.replaceChildren();
      const views = [...state.views.values()].filter((v) => v.room === rooms && (rooms ? v.joined || v.count !== null : true));
      views.sort((a, b) => a.name.localeCompare(b.name));
      for (const v of views) {
        const b = el('button');
        b.type = 'button';
        b.dataset.view = v.name;
        b.setAttribute('aria-current', key(v.name) === state.current ? 'true' : 'false');
        const count = v.joined ? v.members.size : v.count;
        b.append(el('span', 'name', v.room ? v.name.slice(1) : v.name));
        if (v.room && count !== null) b.append(el('span', 'count', String(count)));
        if (v.unread > 0) {
          const u = el('span', 'unread', String(v.unread));
          u.title = `${v.unread} unread`;
          b.append(u);
        }
        b.addEventListener('click', () => openView(v));
        const li = el('li');
        li.append(b);
        ul.append(li);
      }
    }
    const unread = [...state.views.values()].reduce((n, v) => n + v.unread, 0);
    document.title = unread ? `(${unread}) linechat` : 'linechat';
  }

  function openView(v) {
    if (v.room && !v.joined) { state.switchTo = key(v.name); send('JOIN ' + v.name); return; }
    show(v.name);
    $('input').focus();
  }

  function render() {
    renderSidebar();
    const v = state.current && state.views.get(state.current);
    $('me').textContent = state.nick ? `you are ${state.nick}` : '';
    $('view-title').textContent = v ? (v.room ? v.name.slice(1) : `with ${v.name}`) : '';
    $('topic').textContent = v && v.topic ? v.topic : '';
    const members = $('members');
    members.replaceChildren();
    $('members-title').textContent = v && v.room ? `People (${v.members.size})` : 'People';
    if (v && v.room) {
      for (const nick of [...v.members.values()].sort((a, b) => a.localeCompare(b))) {
        members.append(el('li', key(nick) === key(state.nick) ? 'self' : '', nick));
      }
    }
    const log = $('log');
    log.replaceChildren();
    if (v) for (const entry of v.log) appendEntry(entry);
    log.scrollTop = log.scrollHeight;
  }

  function status(text, down) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('down', !!down);
  }

  // ---- what the server says ----

  const handlers = {
    PING: (m) => send('PONG :' + (m.params[0] || '')),
    '001': (m) => {
      state.nick = m.params[0];
      state.registered = true;
      const again = state.everRegistered;
      state.everRegistered = true;
      state.retry = 0;
      $('login').hidden = true;
      $('chat').hidden = false;
      status('connected');
      const rooms = [...state.views.values()].filter((v) => v.room && v.joined).map((v) => v.name);
      for (const v of state.views.values()) { v.joined = false; v.members.clear(); }
      send('JOIN ' + (rooms.length ? rooms.join(',') : '#lobby'));
      if (again) notice(null, 'Reconnected.');
      list();
      clearInterval(state.listTimer);
      state.listTimer = setInterval(list, 20000);
      render();
      $('input').focus();
    },
    // The message of the day, once: in the lobby, as the server's notices (not again after
    // a reconnect, nor when asked again).
    '372': (m) => { if (!state.motdShown) notice('#lobby', (m.params[1] || '').replace(/^- /, '')); },
    '376': () => { state.motdShown = true; },
    '422': () => { state.motdShown = true; },
    '432': (m) => nickRefused(m, `${m.params[1]}: ${m.params[2] || 'not a valid nickname'}`),
    '433': (m) => nickRefused(m, /registered/i.test(m.params[2] || '')
      ? `${m.params[1]} is registered: give its password to use it, or choose another nickname.`
      : `The nickname ${m.params[1]} is already taken; choose another.`),
    // SASL PLAIN (see `connect`): the reply to AUTHENTICATE PLAIN, then logged in or refused.
    AUTHENTICATE: (m) => {
      if (m.params[0] !== '+') return;
      const plain = encoder.encode(`\0${state.wanted}\0${state.password}`);
      // At most 2 + 32 + 256 bytes: one chunk of under 400 base64 characters.
      send('AUTHENTICATE ' + btoa(String.fromCharCode(...plain)));
    },
    '903': () => send('CAP END'),
    '904': () => {
      // Refused (a wrong password, a name nobody registered): back to the form, without the
      // automatic reconnection, which would only try the same password again.
      const ws = state.ws;
      state.ws = null;
      if (ws) { ws.onclose = null; ws.close(); }
      loginError(state.saslWhy || 'The password was not accepted.');
    },
    '417': (m) => error(`Not sent: ${m.params[m.params.length - 1] || 'the server refused a line as too long'}`),
    '332': (m) => { view(m.params[1]).topic = m.params[2] || ''; render(); },
    '331': (m) => { view(m.params[1]).topic = ''; render(); },
    '353': (m) => {
      const v = view(m.params[2]);
      for (const n of (m.params[3] || '').split(' ').filter(Boolean)) {
        const nick = n.replace(/^[~&@%+]+/, '');
        v.members.set(key(nick), nick);
      }
    },
    '366': () => render(),
    '321': () => { state.listing = new Map(); },
    '322': (m) => {
      if (!state.listing) state.listing = new Map();
      state.listing.set(key(m.params[1]), { name: m.params[1], count: Number(m.params[2]), topic: m.params[3] || '' });
    },
    '323': () => {
      const listing = state.listing || new Map();
      state.listing = null;
      for (const [k, v] of state.views) {
        if (v.room && !v.joined) { if (listing.has(k)) v.count = listing.get(k).count; else state.views.delete(k); }
      }
      for (const r of listing.values()) {
        const v = view(r.name);
        v.count = r.count;
        if (!v.joined) v.topic = r.topic;
      }
      if (state.listAsked) {
        state.listAsked = false;
        const rooms = [...listing.values()].map((r) => `${r.name.slice(1)} (${r.count})`);
        notice(null, rooms.length ? `Rooms: ${rooms.join(', ')}` : 'No rooms.');
      }
      renderSidebar();
    },
    JOIN: (m) => {
      const v = view(m.params[0]);
      if (key(m.nick) === key(state.nick)) {
        state.prefix = m.prefix;
        v.joined = true;
        v.members.clear();
        send(`CHATHISTORY LATEST ${v.name} * 50`);
        if (!state.current || state.switchTo === key(v.name) || (state.switchTo === null && key(v.name) === '#lobby')) {
          state.switchTo = null;
          show(v.name);
        }
        return;
      }
      v.members.set(key(m.nick), m.nick);
      notice(v.name, `${m.nick} has joined.`);
      render();
    },
    PART: (m) => {
      const v = view(m.params[0]);
      if (key(m.nick) === key(state.nick)) {
        v.joined = false;
        v.members.clear();
        if (state.current === key(v.name)) {
          const next = [...state.views.values()].find((o) => o.room && o.joined);
          state.current = next ? key(next.name) : null;
        }
        render();
        return;
      }
      v.members.delete(key(m.nick));
      notice(v.name, `${m.nick} has left${m.params[1] ? ` (${m.params[1]})` : ''}.`);
      render();
    },
    KICK: (m) => {
      const v = view(m.params[0]);
      v.members.delete(key(m.params[1]));
      notice(v.name, `${m.params[1]} was removed by ${m.nick}${m.params[2] ? ` (${m.params[2]})` : ''}.`);
      if (key(m.params[1]) === key(state.nick)) v.joined = false;
      render();
    },
    QUIT: (m) => {
      for (const v of state.views.values()) {
        if (v.members.delete(key(m.nick)) || (!v.room && key(v.name) === key(m.nick))) {
          notice(v.name, `${m.nick} has left the chat${m.params[0] ? ` (${m.params[0]})` : ''}.`);
        }
      }
      render();
    },
    NICK: (m) => {
      const to = m.params[0];
      if (key(m.nick) === key(state.nick)) {
        state.nick = to;
        state.wanted = to;
        const bang = state.prefix.indexOf('!');
        if (bang >= 0) state.prefix = to + state.prefix.slice(bang);
      }
      for (const v of state.views.values()) {
        if (v.members.delete(key(m.nick))) {
          v.members.set(key(to), to);
          notice(v.name, `${m.nick} is now known as ${to}.`);
        }
      }
      const p = state.views.get(key(m.nick));
      if (p && !p.room) {
        state.views.delete(key(m.nick));
        p.name = to;
        state.views.set(key(to), p);
        if (state.current === key(m.nick)) state.current = key(to);
        notice(to, `${m.nick} is now known as ${to}.`);
      }
      render();
    },
    TOPIC: (m) => {
      const v = view(m.params[0]);
      v.topic = m.params[1] || '';
      notice(v.name, v.topic ? `${m.nick} set the topic: ${v.topic}` : `${m.nick} cleared the topic.`);
      render();
    },
    PRIVMSG: (m) => message(m, 'msg'),
    NOTICE: (m) => {
      const target = m.params[0];
      // Before registration a server NOTICE says why a login failed.
      if (!state.registered && !m.prefix.includes('!')) state.saslWhy = capitalized(m.params[1] || '');
      if (target.startsWith('#')) return add(target, { kind: 'notice', from: m.nick, text: m.params[1] || '', time: time(m.tags) });
      add(null, { kind: 'notice', from: m.nick || 'server', text: m.params[1] || '', time: time(m.tags) });
    },
    BATCH: (m) => {
      const ref = m.params[0] || '';
      if (ref.startsWith('+')) state.batches.set(ref.slice(1), m.params[1]);
      else state.batches.delete(ref.slice(1));
    },
    ERROR: (m) => error(`The server closed the connection: ${m.params[0] || ''}`),
    CAP: (m) => {
      if (m.params[1] === 'ACK' && state.password && / ?sasl\b/.test(m.params[2] || '')) send('AUTHENTICATE PLAIN');
      else if (m.params[1] === 'NAK' && state.password) send('CAP END');
    },
  };

  function nickRefused(m, text) {
    if (!state.registered) {
      if (state.everRegistered && m.command === '433') {
        // Reconnecting while the old connection still holds the name: take a variant.
        state.wanted += '_';
        send('NICK ' + state.wanted);
        return;
      }
      loginError(text);
      return;
    }
    error(text);
  }

  function loginError(text) {
    $('login').hidden = false;
    $('chat').hidden = true;
    $('login-error').textContent = text;
    $('nick').disabled = false;
    $('nick').focus();
    $('nick').select();
  }

  const capitalized = (s) => s.charAt(0).toUpperCase() + s.slice(1);

  function message(m, kind) {
    const target = m.params[0];
    let text = m.params[1] || '';
    const action = /^\x01ACTION (.*)\x01?$/.exec(text);
    if (action) { kind = 'action'; text = action[1].replace(/\x01$/, ''); }
    const mine = key(m.nick) === key(state.nick);
    const where = target.startsWith('#') ? target : (mine ? target : m.nick);
    const history = state.batches.get(m.tags.batch) === 'chathistory';
    add(where, { kind, from: m.nick, text, mine, history, time: time(m.tags) });
    if (!target.startsWith('#')) renderSidebar();
  }

  // ---- what the person types ----

  // Others get the line with `:nick!user@host ` in front, and that too must fit IRC's 512
  // bytes (the server refuses it with 417 otherwise); the prefix is known from our own JOIN.
  function fits(line, shown) {
    const prefix = state.prefix ? bytes(state.prefix) + 2 : 0;
    const over = prefix + bytes(line) - MAX_LINE;
    if (over > 0) {
      const len = bytes(shown);
      error(`Not sent: that is ${len} bytes, ${over} over the limit of ${len - over}. Shorten it and send again.`);
      return false;
    }
    return true;
  }

  function say(text, action) {
    const v = state.current && state.views.get(state.current);
    if (!v || (v.room && !v.joined)) { error('Join a room first: /join lobby'); return false; }
    const body = action ? `\x01ACTION ${text}\x01` : text;
    const line = `PRIVMSG ${v.name} :${body}`;
    if (!fits(line, text)) return false;
    send(line);
    return true;
  }

  const HELP = [
    'Commands: /join room, /leave [room], /msg nick text, /me action, /nick name, ' +
      '/topic [text], /who [room], /rooms, /history [n], /time, /ping, /metrics, /throughput, ' +
      '/echo text, /quit [reason]. Alt+Up and Alt+Down move between conversations.',
  ];

  function command(text) {
    if (!text.startsWith('/') || text.startsWith('//')) return say(text.startsWith('//') ? text.slice(1) : text);
    const space = text.indexOf(' ');
    const name = (space < 0 ? text.slice(1) : text.slice(1, space)).toLowerCase();
    const arg = space < 0 ? '' : text.slice(space + 1).trim();
    const cur = state.current && state.views.get(state.current);
    const room = (r) => '#' + r.replace(/^#/, '');
    switch (name) {
      case 'join':
        if (!arg) { error('Usage: /join room'); return false; }
        state.switchTo = key(room(arg));
        if (view(room(arg)).joined) { show(room(arg)); state.switchTo = null; return true; }
        send('JOIN ' + room(arg));
        return true;
      case 'leave': case 'part': {
        const r = arg ? room(arg) : cur && cur.room ? cur.name : null;
        if (!r) { error('Usage: /leave room'); return false; }
        send('PART ' + r);
        return true;
      }
      case 'msg': case 'query': {
        const sp = arg.indexOf(' ');
        const nick = sp < 0 ? arg : arg.slice(0, sp);
        const body = sp < 0 ? '' : arg.slice(sp + 1);
        if (!nick || nick.startsWith('#')) { error('Usage: /msg nick text'); return false; }
        if (body && !fits(`PRIVMSG ${nick} :${body}`, body)) return false;
        view(nick);
        show(nick);
        if (body) send(`PRIVMSG ${nick} :${body}`);
        return true;
      }
      case 'me':
        return arg ? say(arg, true) : (error('Usage: /me action'), false);
      case 'nick':
        if (!arg) { error('Usage: /nick name'); return false; }
        send('NICK ' + arg);
        return true;
      case 'topic':
        if (!cur || !cur.room) { error('Topics belong to rooms; switch to one first.'); return false; }
        if (!arg) { notice(null, cur.topic ? `The topic is: ${cur.topic}` : 'No topic is set.'); return true; }
        if (!fits(`TOPIC ${cur.name} :${arg}`, arg)) return false;
        send(`TOPIC ${cur.name} :${arg}`);
        return true;
      case 'who': {
        const v = arg ? state.views.get(key(room(arg))) : cur;
        if (!v || !v.room || !v.joined) { send('NAMES ' + (arg ? room(arg) : '#lobby')); return true; }
        const names = [...v.members.values()].sort((a, b) => a.localeCompare(b));
        notice(null, `In ${v.name.slice(1)} (${names.length}): ${names.join(', ')}`);
        return true;
      }
      case 'rooms':
        state.listAsked = true;
        list();
        return true;
      case 'history': {
        if (!cur || !cur.room) { error('History belongs to rooms; switch to one first.'); return false; }
        const n = Math.min(Math.max(parseInt(arg, 10) || 20, 1), 100);
        send(`CHATHISTORY LATEST ${cur.name} * ${n}`);
        return true;
      }
      case 'time': case 'ping': case 'metrics': case 'throughput':
        send(`PRIVMSG ${SERVICE} :${name}`);
        return true;
      case 'echo':
        notice(null, arg);
        return true;
      case 'help':
        notice(null, HELP[0]);
        return true;
      case 'quit':
        state.quitting = true;
        send('QUIT :' + (arg || 'left'));
        return true;
      default:
        error(`Unknown command /${name}. Type /help for the list.`);
        return false;
    }
  }

  function list() { send('LIST'); }

  // ---- the connection ----

  function connect() {
    clearTimeout(state.timer);
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try { ws = new WebSocket(url, ['text.ircv3.net']); } catch (e) { return down(); }
    state.ws = ws;
    state.registered = false;
    ws.onopen = () => {
      state.saslWhy = '';
      send('CAP LS 302');
      // With a password the page logs in with SASL PLAIN before registering: CAP END waits
      // for the ACK, AUTHENTICATE and 903 (see the handlers).
      send('CAP REQ :' + CAPS + (state.password ? ' sasl' : ''));
      send('NICK ' + state.wanted);
      send(`USER ${state.wanted} 0 * :${state.wanted} (web)`);
      if (!state.password) send('CAP END');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      const m = parse(ev.data);
      const handle = handlers[m.command];
      if (handle) handle(m);
      else if (/^[45]\d\d$/.test(m.command)) error(m.params.slice(1).join(' '));
    };
    ws.onclose = () => { if (state.ws === ws) down(); };
  }

  function down() {
    state.ws = null;
    state.registered = false;
    clearInterval(state.listTimer);
    if (state.quitting) { status('You left the chat. Reload the page to come back.', true); return; }
    if (!state.everRegistered) {
      $('login-error').textContent = $('login-error').textContent || 'Cannot reach the chat server; trying again…';
    }
    // 1 s, 2 s, 4 s … at most 30 s, each a little shorter or longer so that a restarted
    // server is not met by every page at the same instant.
    const delay = Math.min(30, 2 ** state.retry) * (0.8 + Math.random() * 0.4);
    state.retry++;
    const until = Date.now() + delay * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      status(`Connection lost. Reconnecting in ${left} s (attempt ${state.retry})…`, true);
    };
    tick();
    if (state.everRegistered) notice(null, 'Connection lost; reconnecting…');
    const countdown = setInterval(tick, 1000);
    state.timer = setTimeout(() => { clearInterval(countdown); status('Reconnecting…', true); connect(); }, delay * 1000);
  }

  // ---- the page ----

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const nick = $('nick').value.trim();
    if (!nick) return;
    if (/\s/.test(nick)) { $('login-error').textContent = 'A nickname is one word, without spaces.'; return; }
    $('login-error').textContent = '';
    state.wanted = nick;
    state.password = $('password').value;
    if (state.ws && state.ws.readyState === WebSocket.OPEN && !state.registered && !state.password) {
      send('NICK ' + nick);
      return;
    }
    if (state.ws && !state.registered) {
      // A password is proved by a fresh connection's SASL, so the old one goes quietly.
      const old = state.ws;
      state.ws = null;
      old.onclose = null;
      old.close();
    }
    if (!state.ws) connect();
  });

  $('say').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('input');
    const text = input.value;
    if (!text.trim()) return;
    if (!state.registered) { error('Not connected; your line is kept until the connection is back.'); return; }
    // A refused line stays in the box, so nothing typed is lost.
    if (command(text)) input.value = '';
  });

  document.addEventListener('keydown', (ev) => {
    if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
      const buttons = [...document.querySelectorAll('.sidebar button')];
      const at = buttons.findIndex((b) => b.getAttribute('aria-current') === 'true');
      const next = buttons[(at + (ev.key === 'ArrowUp' ? -1 : 1) + buttons.length) % buttons.length];
      if (next) { ev.preventDefault(); next.click(); }
    } else if (ev.key === 'Escape') {
      $('input').focus();
    }
  });
})();
