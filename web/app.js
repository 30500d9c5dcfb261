// zms web client: talks to the gateway (`zms web`) over a WebSocket of JSON frames
// (PROTOCOL.md, "Part 2"). Every text from the network reaches the page through
// textContent or text nodes only, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- state ---------------------------------------------------------------------------
const state = {
  user: null,
  key: null,           // secure mode: the user's CURVE secret (Z85), this tab only
  secure: false,
  ws: null,
  open: false,
  retryMs: 500,
  groups: new Map(),   // id -> {id, name, member, lastSeq, messages: Map seq->msg, changes, oldest, start, loading}
  current: null,
  members: new Map(),  // group id -> [{name, online, colour}]
  editing: null,       // {group, seq}: the message the composer is editing
  found: null,         // {group, seq}: the search hit last gone to, marked until another
  cidPrefix: "w" + Date.now().toString(16).padStart(12, "0") +
    Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join(""),
  cidCount: 0,
};

// What survives a reload, per user: last seq and last read seq per group, unsent messages.
const store = {
  get(name, fallback) {
    try { return JSON.parse(localStorage.getItem("zms." + state.user + "." + name)) ?? fallback; }
    catch { return fallback; }
  },
  set(name, value) { localStorage.setItem("zms." + state.user + "." + name, JSON.stringify(value)); },
};
const lastSeqs = () => store.get("last", {});
const readSeqs = () => store.get("read", {});
const outbox = () => store.get("outbox", []);

function noteLast(group, seq) {
  const last = lastSeqs();
  if ((last[group] || 0) < seq) { last[group] = seq; store.set("last", last); }
}
function noteRead(group, seq) {
  const read = readSeqs();
  if ((read[group] || 0) < seq) { read[group] = seq; store.set("read", read); }
}

// ---- connection ----------------------------------------------------------------------
function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const ws = new WebSocket(url);
  state.ws = ws;
  setStatus("connecting…", false);
  ws.onopen = () => {
    state.retryMs = 500;
    send({ type: "hello", user: state.user, key: state.key, last: memberLasts() });
  };
  ws.onmessage = (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { return; }
    handle(frame);
  };
  ws.onclose = (e) => {
    state.open = false;
    if (state.ws !== ws) return;
    state.ws = null;
    if (!state.user) return;
    const why = e.reason ? " (" + e.reason + ")" : "";
    setStatus("disconnected" + why + "; reconnecting…", true);
    setComposer();
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 8000);
  };
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function memberLasts() {
  const last = lastSeqs();
  const out = {};
  for (const [id, seq] of Object.entries(last)) out[id] = seq;
  return out;
}

function setStatus(text, down) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("down", !!down);
}

// ---- frames from the gateway ----------------------------------------------------------
function handle(f) {
  switch (f.type) {
    case "ready":
      state.secure = !!f.secure;
      $("signin-secret").hidden = !state.secure;
      break;
    case "welcome":
      state.open = true;
      setStatus("connected", false);
      showApp();
      break;
    case "groups":
      for (const g of f.groups) upsertGroup(g.group, g.name, g.member, g.last_seq, g.peer);
      renderGroups();
      if (!state.current) {
        const first = [...state.groups.values()].find((g) => g.member) || state.groups.values().next().value;
        if (first) openGroup(first.id);
      } else {
        openGroup(state.current, true);
      }
      flushOutbox();
      setComposer();
      break;
    case "joined": {
      const g = upsertGroup(f.group, f.name, true, f.last_seq, f.peer);
      renderGroups();
      // A conversation someone else opened is listed, not switched to.
      if (f.ref !== undefined || !state.current || state.current === g.id) openGroup(g.id);
      break;
    }
    case "left": {
      const g = state.groups.get(f.group);
      if (g) { g.member = false; }
      renderGroups();
      openGroup(f.group, true);
      break;
    }
    case "removed": {
      const g = state.groups.get(f.group);
      if (g) g.member = false;
      renderGroups();
      if (state.current === f.group) notice("You are no longer a member of " + (g ? g.name : f.group) + ".");
      setComposer();
      break;
    }
    case "message":
      addMessage(f.group, f);
      break;
    case "changed":
      // The change itself comes as a `message`, as to every member.
      break;
    case "found":
      showHits(f);
      break;
    case "moved":
      moveGroup(f.from, f.to);
      break;
    case "history":
      addHistory(f);
      break;
    case "ack": {
      const p = outbox().find((x) => x.cid === f.cid);
      settle(f.cid);
      if (p) addMessage(f.group, { seq: f.seq, ts: f.ts, sender: state.user, text: p.text });
      break;
    }
    case "unsent":
      markUnsent(f.cid, f.message);
      break;
    case "members":
      state.members.set(f.group, f.members);
      if (f.group === state.current) renderMembers();
      break;
    case "presence": {
      const list = state.members.get(f.group);
      if (list) {
        const m = list.find((x) => x.name === f.user);
        if (m) m.online = f.joined; else list.push({ name: f.user, online: f.joined, colour: f.colour });
        if (f.group === state.current) renderMembers();
      }
      break;
    }
    case "server":
      if (f.up) { setStatus("connected", false); flushOutbox(); }
      else setStatus("a group server is not answering; messages are kept and sent when it is back", true);
      break;
    case "error":
      if (f.ref && typeof f.ref === "string" && f.ref.startsWith("cid:")) {
        failed(f.ref.slice(4), f.message);
      } else if (f.ref === "search") {
        $("search-status").textContent = "Search failed: " + f.message;
      } else if (typeof f.ref === "string" && /^(edit|delete):/.test(f.ref)) {
        notice("Not changed: " + f.message);
      } else if (!state.open) {
        signinError(f.message);
      } else {
        notice(f.message);
      }
      break;
  }
}

// ---- groups -------------------------------------------------------------------------
function upsertGroup(id, name, member, lastSeq, peer) {
  let g = state.groups.get(id);
  if (!g) {
    g = {
      id, name, peer: peer || null, member, lastSeq: 0, messages: new Map(),
      changes: new Map(),  // seq -> {deleted, seq: the latest edit's seq, text}
      oldest: Infinity,    // the lowest seq seen, change messages included: where paging goes on
      start: false, loading: false,
    };
    state.groups.set(id, g);
  }
  g.member = member;
  g.lastSeq = Math.max(g.lastSeq, lastSeq || 0);
  // Unread counts start from the first time this browser sees the group.
  if (member && readSeqs()[id] === undefined) noteRead(id, g.lastSeq);
  return g;
}

// A group now lives on another server: same messages and seqs, a new id.
function moveGroup(from, to) {
  const g = state.groups.get(from);
  if (!g || state.groups.has(to)) return;
  state.groups.delete(from);
  g.id = to;
  state.groups.set(to, g);
  for (const name of ["last", "read"]) {
    const seqs = store.get(name, {});
    if (seqs[from] !== undefined) { seqs[to] = seqs[from]; delete seqs[from]; store.set(name, seqs); }
  }
  store.set("outbox", outbox().map((p) => (p.group === from ? { ...p, group: to } : p)));
  if (state.members.has(from)) { state.members.set(to, state.members.get(from)); state.members.delete(from); }
  if (state.current === from) state.current = to;
  renderGroups();
}

function unread(g) {
  if (!g.member) return 0;
  const read = readSeqs()[g.id];
  if (read === undefined) return 0;
  return Math.max(0, g.lastSeq - read);
}

function title(g) { return g.peer ? "@" + g.peer : "#" + g.name; }

function renderGroups() {
  const list = $("group-list");
  const dms = $("dm-list");
  list.replaceChildren();
  dms.replaceChildren();
  const sorted = [...state.groups.values()].sort((a, b) => title(a).localeCompare(title(b)) || a.id.localeCompare(b.id));
  for (const g of sorted) {
    const li = el("li");
    const b = el("button");
    b.dataset.group = g.id;
    b.append(el("span", "", title(g)));
    const n = unread(g);
    if (n > 0) {
      const badge = el("span", "badge", String(n));
      badge.setAttribute("aria-label", n + " unread");
      b.append(badge);
    }
    if (!g.member) { b.classList.add("not-member"); b.title = "not joined"; }
    b.setAttribute("aria-current", g.id === state.current ? "true" : "false");
    b.addEventListener("click", () => { openGroup(g.id); collapseGroups(); });
    li.append(b);
    (g.peer ? dms : list).append(li);
  }
}

function openGroup(id, keep) {
  const g = state.groups.get(id);
  if (!g) return;
  const changed = state.current !== id;
  if (changed) cancelEdit();
  state.current = id;
  $("room-name").textContent = title(g);
  $("join").hidden = g.member;
  $("leave").hidden = !g.member;
  $("toggle-members").hidden = !g.member;
  if (changed || !keep) renderMessages();
  if (g.member) {
    if (!g.start && g.messages.size < 50 && !g.loading) loadOlder();
    send({ type: "members", group: id });
  } else {
    $("members").hidden = true;
  }
  markRead(g);
  renderGroups();
  setComposer();
}

function markRead(g) {
  if (g.member) noteRead(g.id, g.lastSeq);
}

function loadOlder() {
  const g = state.groups.get(state.current);
  if (!g || g.start || g.loading || !g.member) return;
  const before = Number.isFinite(g.oldest) ? g.oldest : 0;
  g.loading = true;
  send({ type: "history", group: g.id, before, limit: 50 });
}

// ---- messages ------------------------------------------------------------------------
// Keeps a message of a group, or applies an edit or deletion to the message it names (which
// may come later, in an older history page). False for a change this page does not know.
function take(g, m) {
  g.oldest = Math.min(g.oldest, m.seq);
  if (m.edit) return change(g, m.edit.seq, m.seq, m.edit.text);
  if (m.delete !== undefined) return change(g, m.delete, m.seq, null);
  if (typeof m.text !== "string") return false;
  g.messages.set(m.seq, { seq: m.seq, ts: m.ts, sender: m.sender, text: m.text, colour: m.colour });
  return true;
}

// A deletion is final; of the edits, the latest (highest seq) wins, in whatever order they come.
function change(g, target, seq, text) {
  const c = g.changes.get(target) || { deleted: false, seq: 0, text: null };
  if (text === null) c.deleted = true;
  else if (seq > c.seq) { c.seq = seq; c.text = text; }
  g.changes.set(target, c);
  if (c.deleted && state.editing && state.editing.group === g.id && state.editing.seq === target) cancelEdit();
  return true;
}

// A message as it reads now: {text, edited, deleted}.
function shown(g, m) {
  const c = g.changes.get(m.seq);
  if (c && c.deleted) return { text: "", edited: false, deleted: true };
  if (c && c.text !== null) return { text: c.text, edited: true, deleted: false };
  return { text: m.text, edited: false, deleted: false };
}

function addMessage(groupId, m) {
  const g = state.groups.get(groupId);
  if (!g) return;
  if (g.messages.has(m.seq)) return;
  if (!take(g, m)) return;
  g.lastSeq = Math.max(g.lastSeq, m.seq);
  noteLast(groupId, m.seq);
  if (groupId === state.current && document.visibilityState !== "hidden") {
    markRead(g);
    renderMessages(true);
  }
  renderGroups();
}

function addHistory(f) {
  const g = state.groups.get(f.group);
  if (!g) return;
  g.loading = false;
  for (const m of f.messages) take(g, m);
  if (f.start) g.start = true;
  if (f.messages.length) {
    g.lastSeq = Math.max(g.lastSeq, f.messages[f.messages.length - 1].seq);
    noteLast(g.id, g.lastSeq);
  }
  if (f.group === state.current) {
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    renderMessages();
    if (f.before) box.scrollTop = box.scrollHeight - fromBottom;
    markRead(g);
    renderGroups();
  }
}

function formatTime(ts) {
  const d = new Date(ts);
  const same = d.toDateString() === new Date().toDateString();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return same ? hm : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm;
}

function colourOf(name) {
  // FNV-1a over the name's UTF-8 bytes, as the terminal client (and the gateway) pick it.
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(name)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return Number(h % 6n);
}

function messageItem(g, m) {
  const li = el("li");
  li.dataset.seq = String(m.seq);
  li.append(el("span", "time", formatTime(m.ts)));
  const colour = "c" + (m.colour ?? colourOf(m.sender));
  const now = shown(g, m);
  if (now.deleted) {
    li.classList.add("deleted");
    li.append(el("span", "sender " + colour, m.sender));
    li.append(el("span", "gone", "(deleted)"));
    return li;
  }
  if (now.text.startsWith("/me ")) {
    li.append(el("span", "sender " + colour, "* " + m.sender));
    li.append(el("span", "text", now.text.slice(4)));
  } else {
    li.append(el("span", "sender " + colour, m.sender));
    li.append(el("span", "text", now.text));
  }
  if (now.edited) li.append(el("span", "edited", "(edited)"));
  if (state.user && m.sender !== state.user && new RegExp("(^|\\W)@" + escapeRe(state.user) + "(\\W|$)").test(now.text)) {
    li.classList.add("mention");
    li.setAttribute("aria-label", "mentions you: " + m.sender + ": " + now.text);
  }
  if (m.sender === state.user && g.member) {
    const what = now.text.length > 40 ? now.text.slice(0, 40) + "…" : now.text;
    const actions = el("span", "actions");
    const edit = el("button", "", "Edit");
    edit.type = "button";
    edit.setAttribute("aria-label", "Edit your message: " + what);
    edit.addEventListener("click", () => startEdit(g, m));
    const del = el("button", "", "Delete");
    del.type = "button";
    del.setAttribute("aria-label", "Delete your message: " + what);
    del.addEventListener("click", () => {
      // Not kept for later, unlike a message: a change waits for the user to see it through.
      if (!send({ type: "delete", group: g.id, seq: m.seq, ref: "delete:" + m.seq })) {
        notice("Not connected: the message was not deleted.");
        return;
      }
      // The button goes with the message: keep the keyboard user's place near it.
      $("messages").focus();
    });
    actions.append(edit, del);
    li.append(actions);
  }
  if (state.editing && state.editing.group === g.id && state.editing.seq === m.seq) li.classList.add("being-edited");
  if (state.found && state.found.group === g.id && state.found.seq === m.seq) li.classList.add("found");
  return li;
}

function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

function pendingItem(p) {
  const li = el("li", "pending" + (p.state === "sending" ? "" : " unsent"));
  li.dataset.cid = p.cid;
  li.append(el("span", "time", "…"));
  li.append(el("span", "sender c" + colourOf(state.user), state.user));
  li.append(el("span", "text", p.text));
  const s = el("span", "state", p.state === "sending" ? "sending…" : "not sent" + (p.reason ? ": " + p.reason : ""));
  if (p.state !== "sending") {
    const retry = el("button", "", "Retry");
    retry.addEventListener("click", () => { updateOutbox(p.cid, { state: "sending", reason: "" }); sendPending(p); });
    const drop = el("button", "", "Discard");
    drop.addEventListener("click", () => settle(p.cid));
    s.append(retry, drop);
  }
  li.append(s);
  return li;
}

function renderMessages(stick) {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const g = state.groups.get(state.current);
  box.replaceChildren();
  if (!g) return;
  $("older").hidden = !g.member || g.start;
  const seqs = [...g.messages.keys()].sort((a, b) => a - b);
  for (const seq of seqs) box.append(messageItem(g, g.messages.get(seq)));
  for (const p of outbox().filter((p) => p.group === g.id)) box.append(pendingItem(p));
  if (!g.member) box.append(el("li", "note", "Join " + g.name + " to read and write here."));
  if (!stick || atBottom) box.scrollTop = box.scrollHeight;
}

function notice(text) {
  const box = $("messages");
  box.append(el("li", "note", text));
  box.scrollTop = box.scrollHeight;
}

// ---- sending ------------------------------------------------------------------------
function nextCid() {
  state.cidCount += 1;
  return state.cidPrefix + "-" + String(state.cidCount).padStart(6, "0");
}

function submit() {
  const box = $("composer-text");
  const text = box.value;
  const g = state.groups.get(state.current);
  if (state.editing) return submitEdit(g, text);
  if (!g || !g.member || !text.trim()) return;
  const p = { cid: nextCid(), group: g.id, text, state: "sending" };
  store.set("outbox", [...outbox(), p]);
  box.value = "";
  autosize();
  renderMessages();
  sendPending(p);
}

// ---- editing --------------------------------------------------------------------------
// The user's latest message in a group that is still there to edit.
function lastOwn(g) {
  let last = null;
  for (const m of g.messages.values()) {
    if (m.sender === state.user && !shown(g, m).deleted && (!last || m.seq > last.seq)) last = m;
  }
  return last;
}

function startEdit(g, m) {
  const box = $("composer-text");
  state.editing = { group: g.id, seq: m.seq };
  box.value = shown(g, m).text;
  $("editing").hidden = false;
  $("composer-label").textContent = "Edit your message";
  $("send").textContent = "Save";
  autosize();
  renderMessages(true);
  box.focus();
  box.selectionStart = box.selectionEnd = box.value.length;
}

function cancelEdit() {
  if (!state.editing) return;
  state.editing = null;
  $("composer-text").value = "";
  $("editing").hidden = true;
  $("composer-label").textContent = "Message";
  $("send").textContent = "Send";
  autosize();
  renderMessages(true);
}

// An unchanged or emptied text changes nothing: Delete is for removing a message.
function submitEdit(g, text) {
  const { group, seq } = state.editing;
  const m = g && g.id === group ? g.messages.get(seq) : null;
  if (m && text.trim() && text !== shown(g, m).text) {
    // Not kept for later, unlike a message: the composer keeps the text to try again.
    if (!send({ type: "edit", group, seq, text, ref: "edit:" + seq })) {
      notice("Not connected: the edit was not sent.");
      return;
    }
  }
  cancelEdit();
  $("composer-text").focus();
}

function sendPending(p) {
  send({ type: "send", group: p.group, cid: p.cid, text: p.text, ref: "cid:" + p.cid });
}

// Every unsettled message again, under its own client id: the server stores each once.
function flushOutbox() {
  for (const p of outbox()) {
    if (p.state === "failed") continue;
    updateOutbox(p.cid, { state: "sending" });
    sendPending(p);
  }
  renderMessages(true);
}

function updateOutbox(cid, change) {
  store.set("outbox", outbox().map((p) => (p.cid === cid ? { ...p, ...change } : p)));
  renderMessages(true);
}

function settle(cid) {
  store.set("outbox", outbox().filter((p) => p.cid !== cid));
  renderMessages(true);
}

function markUnsent(cid, reason) { updateOutbox(cid, { state: "unsent", reason }); }
function failed(cid, reason) { updateOutbox(cid, { state: "failed", reason }); }

// ---- search ---------------------------------------------------------------------------
function search(e) {
  e.preventDefault();
  const query = $("search-query").value.trim();
  if (!query) return;
  $("search-results").hidden = false;
  $("search-status").textContent = "Searching…";
  $("hit-list").replaceChildren();
  if (!send({ type: "search", query, ref: "search" })) $("search-status").textContent = "Not connected.";
}

// The hit's text as text nodes, each matched part in a <mark>; ranges are UTF-16 indices.
function markedText(text, ranges) {
  const span = el("span", "text");
  let at = 0;
  for (const [start, end] of ranges) {
    if (!(start >= at && end > start && end <= text.length)) continue;
    if (start > at) span.append(document.createTextNode(text.slice(at, start)));
    span.append(el("mark", "", text.slice(start, end)));
    at = end;
  }
  if (at < text.length) span.append(document.createTextNode(text.slice(at)));
  return span;
}

function showHits(f) {
  const list = $("hit-list");
  list.replaceChildren();
  const n = f.hits.length;
  const what = "\u201c" + f.query + "\u201d";
  let status = n === 0 ? "No message holds " + what : n + (n === 1 ? " message holds " : " messages hold ") + what;
  if (f.missed && f.missed.length) status += " (" + f.missed.length + " group(s) did not answer)";
  $("search-status").textContent = status;
  for (const hit of f.hits) {
    const g = state.groups.get(hit.group);
    const li = el("li");
    const b = el("button", "hit");
    b.type = "button";
    b.append(el("span", "where", g ? title(g) : "#" + hit.name));
    b.append(el("span", "time", formatTime(hit.ts)));
    b.append(el("span", "sender c" + (hit.colour ?? colourOf(hit.sender)), hit.sender));
    b.append(markedText(hit.text, hit.matches || []));
    b.addEventListener("click", () => goToHit(hit));
    li.append(b);
    list.append(li);
  }
}

function goToHit(hit) {
  if (!state.groups.has(hit.group)) return;
  state.found = { group: hit.group, seq: hit.seq };
  openGroup(hit.group);
  renderMessages(true);
  collapseGroups();
  const li = $("messages").querySelector('li[data-seq="' + Number(hit.seq) + '"]');
  if (li) li.scrollIntoView({ block: "center" });
}

// ---- members and completion -----------------------------------------------------------
function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  const members = state.members.get(state.current) || [];
  const sorted = [...members].sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name));
  for (const m of sorted) {
    const li = el("li");
    li.append(el("span", "dot" + (m.online ? " online" : "")));
    li.append(el("span", "c" + (m.colour ?? colourOf(m.name)), m.name));
    li.append(el("span", "visually-hidden", m.online ? " (online)" : " (offline)"));
    list.append(li);
  }
}

function complete(box) {
  const upto = box.value.slice(0, box.selectionStart);
  const match = /(@?)([^\s@]*)$/.exec(upto);
  if (!match || !match[2]) return false;
  const names = (state.members.get(state.current) || []).map((m) => m.name).filter((n) => n.startsWith(match[2]) && n !== match[2]);
  if (!names.length) return false;
  let common = names[0];
  for (const n of names) while (!n.startsWith(common)) common = common.slice(0, -1);
  const atStart = upto.length === match[0].length && !match[1];
  const insert = names.length === 1 ? names[0] + (atStart ? ": " : " ") : common;
  const start = upto.length - match[2].length;
  box.value = box.value.slice(0, start) + insert + box.value.slice(box.selectionStart);
  box.selectionStart = box.selectionEnd = start + insert.length;
  return true;
}

// ---- page ----------------------------------------------------------------------------
function setComposer() {
  const g = state.groups.get(state.current);
  const on = !!(g && g.member);
  $("composer-text").disabled = !on;
  $("send").disabled = !on;
}

function autosize() {
  const box = $("composer-text");
  box.style.height = "auto";
  box.style.height = Math.min(box.scrollHeight, 160) + "px";
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = state.user;
}

function signinError(text) {
  $("signin-error").textContent = text;
  $("signin").hidden = false;
  $("app").hidden = true;
  const ws = state.ws;
  state.user = null;
  state.ws = null;
  if (ws) ws.close();
}

function collapseGroups() {
  if (window.matchMedia("(max-width: 720px)").matches) {
    $("groups").classList.add("collapsed");
    $("toggle-groups").setAttribute("aria-expanded", "false");
  }
}

// Secure mode: a passphrase becomes the user's CURVE secret key here, never leaving as
// itself. A 40-character Z85 string is taken as a key as it is.
const Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
function z85(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4) {
    let v = ((bytes[i] << 24) >>> 0) + (bytes[i + 1] << 16) + (bytes[i + 2] << 8) + bytes[i + 3];
    const chunk = [];
    for (let j = 0; j < 5; j++) { chunk.unshift(Z85[v % 85]); v = Math.floor(v / 85); }
    out += chunk.join("");
  }
  return out;
}
async function secretFrom(name, passphrase) {
  if (passphrase.length === 40 && [...passphrase].every((c) => Z85.includes(c))) return passphrase;
  const enc = new TextEncoder();
  const base = await crypto.subtle.importKey("raw", enc.encode(passphrase), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: enc.encode("zms-web/1:" + name), iterations: 600000 }, base, 256);
  return z85(new Uint8Array(bits));
}

async function signIn(e) {
  e.preventDefault();
  const name = $("signin-name").value.trim();
  if (!name) return;
  $("signin-error").textContent = "";
  state.key = null;
  if (state.secure) {
    const pass = $("signin-pass").value;
    if (!pass) { $("signin-error").textContent = "This gateway is secure: enter your passphrase."; return; }
    $("signin-go").disabled = true;
    try { state.key = await secretFrom(name, pass); }
    catch { $("signin-error").textContent = "This browser cannot make a key here (it needs HTTPS)."; return; }
    finally { $("signin-go").disabled = false; }
    sessionStorage.setItem("zms.key", state.key);
  }
  state.user = name;
  localStorage.setItem("zms.user", name);
  if (state.ws) state.ws.close();
  connect();
}

function probe() {
  // The gateway says whether it is secure as soon as a socket opens; the sign-in form asks
  // for a passphrase only then.
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const ws = new WebSocket(url);
  ws.onmessage = (e) => {
    try {
      const f = JSON.parse(e.data);
      if (f.type === "ready") { state.secure = !!f.secure; $("signin-secret").hidden = !state.secure; }
    } catch { /* not ours */ }
    ws.close();
  };
}

function init() {
  $("signin-form").addEventListener("submit", signIn);
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  const box = $("composer-text");
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    else if (e.key === "Tab" && !e.shiftKey && box.value) { if (complete(box)) e.preventDefault(); }
    else if (e.key === "ArrowUp" && !box.value && !state.editing) {
      const g = state.groups.get(state.current);
      const m = g && g.member ? lastOwn(g) : null;
      if (m) { e.preventDefault(); startEdit(g, m); }
    } else if (e.key === "Escape" && state.editing) { e.preventDefault(); cancelEdit(); }
  });
  $("edit-cancel").addEventListener("click", () => { cancelEdit(); $("composer-text").focus(); });
  $("search-form").addEventListener("submit", search);
  $("search-close").addEventListener("click", () => { $("search-results").hidden = true; $("search-query").focus(); });
  box.addEventListener("input", autosize);
  $("older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => { if ($("messages").scrollTop === 0) loadOlder(); });
  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $("dm-user").value.trim();
    if (!user) return;
    send({ type: "dm", user, ref: "dm" });
    $("dm-user").value = "";
    collapseGroups();
  });
  $("join").addEventListener("click", () => send({ type: "join", group: state.current, ref: "join" }));
  $("leave").addEventListener("click", () => send({ type: "leave", group: state.current }));
  $("toggle-members").addEventListener("click", () => {
    const m = $("members");
    m.hidden = !m.hidden;
    $("toggle-members").setAttribute("aria-expanded", String(!m.hidden));
  });
  $("toggle-groups").addEventListener("click", () => {
    const collapsed = $("groups").classList.toggle("collapsed");
    $("toggle-groups").setAttribute("aria-expanded", String(!collapsed));
  });
  $("sign-out").addEventListener("click", () => {
    const ws = state.ws;
    state.user = null;
    if (ws) ws.close();
    localStorage.removeItem("zms.user");
    sessionStorage.removeItem("zms.key");
    location.reload();
  });
  document.addEventListener("visibilitychange", () => {
    const g = state.groups.get(state.current);
    if (g && document.visibilityState === "visible") { markRead(g); renderGroups(); }
  });
  const saved = localStorage.getItem("zms.user");
  const key = sessionStorage.getItem("zms.key");
  if (saved) $("signin-name").value = saved;
  if (saved) {
    // Back as the user this browser signed in as (with the key of this tab, when secure).
    state.user = saved;
    state.key = key;
    connect();
  } else {
    probe();
    $("signin-name").focus();
  }
}

init();
