"""A minimal ZMS/1 group server in Python, written from PROTOCOL.md alone.

It hosts the groups named with ``--group`` in memory (nothing survives a restart: each start
is a new epoch with empty groups), registers them with every message server of ``--server``
once a heartbeat, and answers LIST, JOIN, LEAVE, SUBSCRIBE, SEND, SENDS, HISTORY, MEMBERS, PING,
KEY, INVITE, KICK, BAN, UNBAN, CREATE, DROP, SET, IMPORT, SEARCH, READ, UNREAD, EDIT and DELETE
on one ROUTER socket (STATUS with ERROR 400: not implemented here), pushing MSG, MSGS (a SENDS's
new messages) and PRESENCE to subscribed connections. An EDIT or a DELETE is stored as a new
message (``\\x01edit SEQ TEXT``, ``\\x01delete SEQ``), as PROTOCOL.md says, and only the
original's sender may make one (there are no operator keys without security). SEARCH matches
whole words, whatever their case and accents (Unicode NFKD without combining marks), against
each message's latest text. A conversation (``@alice@bob``) is created on the JOIN of
either of its two users, as PROTOCOL.md's "Direct messages" says. It has no
security: KEY answers an empty key and no group is private. Limits as PROTOCOL.md's security
section gives them for a group server: text (413), frame size, members per group and live
connections (429); no SEND rate limit, as an open server has none. KICK, BAN and the other
administration requests come from operators, who are, without security, peers on the server's own host: this server takes them
only when it is bound to a loopback address (so every peer is local), else ERROR 401.

    python3 -m zms.group_server --server 127.0.0.1:5555 --bind 127.0.0.1:0 --group general random

The first line on stdout is ``listening on HOST:PORT`` (the real port when binding port 0),
printed once a message server has acknowledged the first REGISTER. SIGTERM or Ctrl-C stops it:
it sends UNREGISTER, waits briefly for the answers, and exits 0.
"""

from __future__ import annotations

import argparse
import bisect
import ipaddress
import secrets
import signal
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import zmq

import zms
from zms import (
    CREATE, DROP, IMPORT, SET, UNBAN,
    ACK, ACKS, BAN, ERROR, GROUPS, HISTORY, INVITE, JOIN, KICK, JOINED, KEY, KEY_REPLY, LEAVE, LIST,
    MEMBER_LIST, MEMBERS, MESSAGES, MSG, MSGS, OK, PING, PONG, PRESENCE, REGISTER, SEND, SENDS,
    SUBSCRIBE, UNREGISTER,
    DELETE, EDIT, FOUND, READ, SEARCH, UNREAD, UNREAD_REPLY,
    DecodeError, decode, encode,
)

# Requests that name a group and a user, checked in the spec's order before their own checks.
GROUP_REQUESTS = {JOIN, LEAVE, SUBSCRIBE, SEND, SENDS, HISTORY, MEMBERS, INVITE,
                  SEARCH, READ, UNREAD, EDIT, DELETE}
ADMIN_REQUESTS = {KICK, BAN, UNBAN, CREATE, DROP, SET, IMPORT}
BATCH = 1024  # requests read per wake-up, so registration and expiry are never starved
MAX_MEMBERS = 10000  # members per group: ERROR 429 on a JOIN past it
MAX_CONNECTIONS = 10000  # subscribed connections: ERROR 429 on JOIN or SUBSCRIBE from another
FRAME_LIMIT = zms.MAX_BATCH_FRAME  # ZMQ_MAXMSGSIZE: a longer frame is a disconnection


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the loop."""


# Characters that show as nothing or change how others show (Unicode's
# Default_Ignorable_Code_Point): never in a name, and not enough to make a message.
_INVISIBLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _invisible(c: str) -> bool:
    return any(lo <= ord(c) <= hi for lo, hi in _INVISIBLE)


def text_error(text: str) -> str | None:
    """Why a message text is refused (400): empty or only whitespace, or a control character
    other than newline and tab (PROTOCOL.md, "Text")."""
    if all(c.isspace() or _invisible(c) for c in text):
        return "message is empty (or only spaces); nothing to send"
    for at, c in enumerate(text):
        if unicodedata.category(c) == "Cc" and c not in "\n\t":
            offset = len(text[:at].encode())
            return (f"message holds control character U+{ord(c):04X} at byte {offset}; "
                    "only newline and tab are allowed")
    return None


def query_error(query: str) -> str | None:
    """Why a SEARCH query is refused (400): longer than MAX_QUERY octets, without a letter or
    digit, or holding a control character (PROTOCOL.md, "SEARCH")."""
    if len(query.encode()) > zms.MAX_QUERY:
        return f"a search query is at most {zms.MAX_QUERY} bytes"
    if not any(c.isalnum() for c in query):
        return "a search query needs at least one word"
    if any(unicodedata.category(c) == "Cc" for c in query):
        return "a search query may not hold control characters"
    return None


def _plain(word: str) -> str:
    """A word as search compares it: accents taken off (NFKD, without combining marks) and
    case folded, so 'Café' finds 'cafe' and 'CAFÉ'."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[tuple[int, int, str]]:
    """The words of ``text`` as search sees them: runs of letters and digits (with the marks
    that follow them), each as (start octet, end octet, plain form); anything else separates
    words, so a query's punctuation is no syntax."""
    found: list[tuple[int, int, str]] = []
    start: int | None = None
    at = 0  # octet offset of the character being read
    begun = 0  # character index where the current word began
    for i, c in enumerate(text):
        inside = c.isalnum() or (start is not None and unicodedata.category(c).startswith("M"))
        if inside and start is None:
            start, begun = at, i
        elif not inside and start is not None:
            found.append((start, at, _plain(text[begun:i])))
            start = None
        at += len(c.encode())
    if start is not None:
        found.append((start, at, _plain(text[begun:])))
    return found


def disguised_name_error(name: str) -> str | None:
    """Why a user name is refused (400) beyond zms.user_name_error: an invisible character,
    or a form other than Unicode NFKC ('ａｌｉｃｅ' may not pose as 'alice')."""
    if any(_invisible(c) or unicodedata.category(c) == "Cc" for c in name):
        return f"user name {name!a} may not hold invisible characters (bidi controls, zero-width)"
    plain = unicodedata.normalize("NFKC", name)
    if plain != name:
        return f"user name {name!a} is not in its plain form (Unicode NFKC); write it as {plain!a}"
    return None


def local_only(bound: str) -> bool:
    """Whether a server bound at ``bound`` (HOST:PORT) is reachable from its own host only."""
    host = bound.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Group:
    name: str
    messages: list[tuple[int, int, str, str]] = field(default_factory=list)  # seq, ts, sender, text
    stamps: list[int] = field(default_factory=list)  # each message's ts, for since_ms
    members: set[str] = field(default_factory=set)
    client_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (sender, id) -> seq
    subscribers: set[bytes] = field(default_factory=set)  # routing ids
    banned: set[str] = field(default_factory=set)  # users a BAN refuses to JOIN
    reads: dict[str, int] = field(default_factory=dict)  # member -> read position (READ)
    # An edited or deleted message's seq -> its latest text, None once deleted (for SEARCH).
    changed: dict[int, str | None] = field(default_factory=dict)

    def keep(self, message: tuple[int, int, str, str]) -> None:
        """Appends a message; an edit or a deletion also changes what its original reads as
        (a deletion is final)."""
        self.messages.append(message)
        self.stamps.append(message[1])
        change = zms.parse_change(message[3])
        if (change is not None and change.seq < message[0]
                and self.changed.get(change.seq, "") is not None):
            self.changed[change.seq] = change.text

    @property
    def last_seq(self) -> int:
        return len(self.messages)


@dataclass
class Connection:
    """A subscribed connection: on behalf of one user, for one or more groups."""

    user: str
    groups: set[str] = field(default_factory=set)
    seen: float = 0.0  # monotonic time of its last decodable request


@dataclass
class Directory:
    """A message server: one DEALER on which REGISTER goes every heartbeat."""

    address: str
    sock: zmq.Socket[Any] | None = None
    last_ok: float = 0.0
    complained: bool = False


class GroupServer:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        bind: str,
        directories: Sequence[str],
        groups: Sequence[str],
        advertise: str | None = None,
    ) -> None:
        for name in groups:
            if (why := zms.group_name_error(name)) is not None:
                raise ValueError(why)
        self.ctx = ctx
        self.groups = {name: Group(name) for name in sorted(set(groups))}
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, zms.SERVER_SNDHWM)
        self.router.setsockopt(zmq.RCVHWM, zms.SERVER_RCVHWM)
        self.router.setsockopt(zmq.MAXMSGSIZE, FRAME_LIMIT)
        self.router.setsockopt(zmq.LINGER, 0)
        host, sep, port = bind.strip().removeprefix("tcp://").rpartition(":")
        if not sep or not host or not (port == "*" or port.isdigit() and int(port) <= 65535):
            raise ValueError(f"bad --bind '{bind}': expected HOST:PORT (port 0: any free port)")
        self.router.bind(f"tcp://{host}:{'*' if port in ('0', '*') else int(port)}")
        real_port = self.router.getsockopt(zmq.LAST_ENDPOINT).decode().rpartition(":")[2]
        self.bound = f"{host}:{real_port}"  # where it listens; ``address`` is what it announces
        if advertise:
            self.address = zms.normalize_address(advertise)
        elif host in ("0.0.0.0", "*", "[::]", "::"):
            self.address = f"127.0.0.1:{real_port}"
            print(f"warning: bound {host}; announcing {self.address} (use --advertise)",
                  file=sys.stderr)
        else:
            self.address = f"{host}:{real_port}"
        self.epoch = secrets.randbits(64) or 1
        self.conns: dict[bytes, Connection] = {}
        self.directories = [Directory(zms.normalize_address(d)) for d in directories]
        self.ids = 0
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        for d in self.directories:
            self._open(d)

    # -- message servers --

    def _next_id(self) -> int:
        self.ids = self.ids % 0xFFFFFFFF + 1
        return self.ids

    def _open(self, d: Directory) -> None:
        if d.sock is not None:
            self.poller.unregister(d.sock)
            d.sock.close(linger=0)
        d.sock = self.ctx.socket(zmq.DEALER)
        d.sock.setsockopt(zmq.LINGER, 0)
        d.sock.setsockopt(zmq.SNDHWM, 4)  # a few REGISTERs wait for a connection, no more
        d.sock.connect(f"tcp://{d.address}")
        d.last_ok = time.monotonic()
        self.poller.register(d.sock, zmq.POLLIN)

    def _register(self, now: float) -> None:
        frame = encode(REGISTER, self._next_id(), self.address, zms.REGISTRATION_TTL_MS,
                       sorted(self.groups), "")
        for d in self.directories:
            if now - d.last_ok > 3 * zms.HEARTBEAT_MS / 1000:
                self._open(d)  # three heartbeats without OK: a fresh connection
            assert d.sock is not None
            try:
                d.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                pass  # not connected yet; the next heartbeat tries again

    def _directory_reply(self, d: Directory) -> bool:
        """Reads a message server's answers; True if one was OK."""
        ok = False
        assert d.sock is not None
        for _ in range(BATCH):
            try:
                parts = d.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                frame = decode(parts[-1], "incoming")
            except DecodeError:
                continue
            if frame.command == OK:
                d.last_ok = time.monotonic()
                d.complained = False
                ok = True
            elif frame.command == ERROR and not d.complained:
                d.complained = True
                print(f"message server {d.address} refused REGISTER: {frame.fields[0]} "
                      f"{frame.fields[1]}", file=sys.stderr, flush=True)
        return ok

    def _unregister(self) -> None:
        """UNREGISTER with every message server, waiting at most a request timeout."""
        pending = []
        for d in self.directories:
            assert d.sock is not None
            try:
                d.sock.send(encode(UNREGISTER, self._next_id(), self.address), zmq.NOBLOCK)
                pending.append(d)
            except zmq.Again:
                pass
        deadline = time.monotonic() + zms.REQUEST_TIMEOUT_MS / 1000
        while pending and (left := deadline - time.monotonic()) > 0:
            ready = dict(self.poller.poll(int(left * 1000) + 1))
            for d in list(pending):
                if d.sock in ready and self._directory_reply(d):
                    pending.remove(d)

    # -- the loop --

    def serve(
        self,
        stop: threading.Event | None = None,
        on_listening: Callable[[str], None] | None = None,
    ) -> None:
        """Serves until ``stop`` is set (checked every heartbeat) or an exception (Stop, from
        a signal) ends it; then unregisters. ``on_listening`` gets the announced address once
        a message server has acknowledged REGISTER (default: print ``listening on …``)."""
        self._on_listening = on_listening or (lambda a: print(f"listening on {a}", flush=True))
        heartbeat = zms.HEARTBEAT_MS / 1000
        announced = False
        announce_by = time.monotonic() + zms.REQUEST_TIMEOUT_MS * zms.REQUEST_TRIES / 1000
        next_beat = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._register(now)
                    self._expire(now)
                    next_beat = now + heartbeat
                if not announced and (now >= announce_by or not self.directories):
                    if self.directories:
                        print("warning: no message server acknowledged REGISTER yet",
                              file=sys.stderr, flush=True)
                    announced = self._announce()
                wait = next_beat - now if announced else min(next_beat, announce_by) - now
                ready = dict(self.poller.poll(max(0, int(wait * 1000)) + 1))
                if self.router in ready:
                    self._serve_batch()
                for d in self.directories:
                    if d.sock in ready and self._directory_reply(d) and not announced:
                        announced = self._announce()
        finally:
            self._unregister()
            self.router.close(linger=0)
            for d in self.directories:
                if d.sock is not None:
                    d.sock.close(linger=0)

    def _announce(self) -> bool:
        self._on_listening(self.address)
        return True

    def _serve_batch(self) -> None:
        for _ in range(BATCH):
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(parts[0], parts[1:])

    def _expire(self, now: float) -> None:
        ttl = zms.SUBSCRIPTION_TTL_MS / 1000
        for rid in [r for r, c in self.conns.items() if now - c.seen > ttl]:
            self._forget(rid)

    # -- sending --

    def _send(self, rid: bytes, frame: bytes) -> None:
        """Sends to one connection: dropped if its queue is full, forgotten if it is gone."""
        try:
            self.router.send_multipart([rid, frame], zmq.NOBLOCK)
        except zmq.Again:
            pass  # queue full (SERVER_SNDHWM): the client repairs from history
        except zmq.ZMQError as err:
            if err.errno != zmq.EHOSTUNREACH:
                raise
            self._forget(rid)

    def _push(self, group: Group, frame: bytes) -> None:
        for rid in list(group.subscribers):
            self._send(rid, frame)

    def _error(self, rid: bytes, request_id: int, code: int, reason: str) -> None:
        self._send(rid, encode(ERROR, request_id, code, reason))

    # -- subscriptions --

    def _subscribe(self, rid: bytes, group: Group, user: str) -> None:
        conn = self.conns.setdefault(rid, Connection(user))
        conn.user = user  # a connection subscribes on behalf of the user it named last
        conn.seen = time.monotonic()
        conn.groups.add(group.name)
        group.subscribers.add(rid)

    def _unsubscribe(self, rid: bytes, group: Group) -> None:
        group.subscribers.discard(rid)
        conn = self.conns.get(rid)
        if conn is not None:
            conn.groups.discard(group.name)
            if not conn.groups:
                del self.conns[rid]

    def _forget(self, rid: bytes) -> None:
        conn = self.conns.pop(rid, None)
        if conn is not None:
            for name in conn.groups:
                self.groups[name].subscribers.discard(rid)

    def _online(self, group: Group, user: str) -> bool:
        return any(self.conns[r].user == user for r in group.subscribers if r in self.conns)

    # -- requests --

    def handle(self, rid: bytes, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self._error(rid, 0, 400, "a ZMS message is exactly one frame")
            return
        try:
            req = decode(frames[0], "request")
        except DecodeError as err:
            self._error(rid, err.request_id, err.code, err.reason)
            return
        if req.command == SENDS and not 1 <= len(req.fields[2]) <= zms.MAX_BATCH:
            self._error(rid, req.request_id or 0, 400,
                        f"a SENDS carries 1 to {zms.MAX_BATCH} messages, not {len(req.fields[2])}")
            return
        if rid in self.conns:
            self.conns[rid].seen = time.monotonic()  # any request is a heartbeat
        rq = req.request_id or 0
        cmd = req.command
        if cmd in (REGISTER, UNREGISTER, zms.HELLO, zms.DM):
            self._error(rid, rq, 400, f"{req.name} is a message server request; "
                                      "this is a group server")
        elif cmd == LIST:
            entries = [(name, self.address, "") for name in sorted(self.groups)]
            self._send(rid, encode(GROUPS, rq, entries))
        elif cmd == KEY:
            self._send(rid, encode(KEY_REPLY, rq, ""))
        elif cmd == PING:
            conn = self.conns.get(rid)
            names = sorted(conn.groups) if conn else []
            self._send(rid, encode(PONG, rq, self.epoch,
                                   [(n, self.groups[n].last_seq) for n in names]))
        elif cmd in GROUP_REQUESTS:
            self._group_request(rid, rq, cmd, req.fields)
        elif cmd in ADMIN_REQUESTS:
            self._admin_request(rid, rq, cmd, req.fields)
        else:  # STATUS (PROTOCOL.md: this server does not implement it), or one unknown
            self._error(rid, rq, 400, f"{req.name} is not implemented by this group server")

    def _group_request(self, rid: bytes, rq: int, cmd: int, fields: list[Any]) -> None:
        name, user = fields[0], fields[1]
        why = (zms.group_or_conversation_error(name) or zms.user_name_error(user)
               or disguised_name_error(user))
        if why is not None:
            self._error(rid, rq, 400, why)
            return
        pair = zms.conversation_users(name)
        if pair is not None and user not in pair:
            self._error(rid, rq, 401, f"'{name}' is the conversation of {pair[0]} and {pair[1]}")
            return
        group = self.groups.get(name)
        if group is None and pair is not None and cmd == JOIN:
            # Created by either user's JOIN, the other a member from the start.
            if len(self.groups) >= zms.MAX_GROUPS_PER_SERVER:
                self._error(rid, rq, 429, "this server hosts its maximum of groups")
                return
            other = pair[0] if user == pair[1] else pair[1]
            group = self.groups[name] = Group(name, members={other})
        if group is None:
            hosted = ", ".join(g for g in self.groups if not g.startswith("@"))
            self._error(rid, rq, 404, f"no group '{name}' on this server (it hosts: {hosted})")
            return
        if cmd != JOIN and user not in group.members:
            self._error(rid, rq, 403, f"'{user}' is not a member of '{name}'")
            return
        if cmd == JOIN and user not in group.members and user in group.banned:
            self._error(rid, rq, 401, f"'{user}' is banned from '{name}'")
            return

        new_connection = rid not in self.conns
        if cmd in (JOIN, SUBSCRIBE) and new_connection and len(self.conns) >= MAX_CONNECTIONS:
            self._error(rid, rq, 429, f"this server has {MAX_CONNECTIONS} live connections")
        elif cmd == JOIN and user not in group.members and len(group.members) >= MAX_MEMBERS:
            self._error(rid, rq, 429, f"'{name}' has {MAX_MEMBERS} members, the most it may")
        elif cmd == JOIN:
            new = user not in group.members
            group.members.add(user)
            self._subscribe(rid, group, user)
            self._send(rid, encode(JOINED, rq, name, group.last_seq))
            if new:
                self._push(group, encode(PRESENCE, None, name, user, True))
        elif cmd == SUBSCRIBE:
            self._subscribe(rid, group, user)
            self._send(rid, encode(JOINED, rq, name, group.last_seq))
        elif cmd == LEAVE:
            group.members.discard(user)
            for sub in [r for r in group.subscribers if self.conns[r].user == user]:
                self._unsubscribe(sub, group)
            self._send(rid, encode(OK, rq))
            self._push(group, encode(PRESENCE, None, name, user, False))
        elif cmd == SEND:
            self._store(rid, rq, group, user, fields[2], fields[3])
        elif cmd == SENDS:
            self._store_batch(rid, rq, group, user, fields[2])
        elif cmd == HISTORY:
            self._history(rid, rq, group, fields[2], fields[3], fields[4])
        elif cmd == MEMBERS:
            members = [(m, self._online(group, m)) for m in sorted(group.members)]
            self._send(rid, encode(MEMBER_LIST, rq, name, members))
        elif cmd == INVITE:
            self._error(rid, rq, 400, f"'{name}' is not a private group; anyone may join it")
        elif cmd == SEARCH:
            self._search(rid, rq, group, fields[2], fields[3], fields[4])
        elif cmd == READ:
            # Only forward, and never past the last seq: a later message is still unread.
            seq = min(fields[2], group.last_seq)
            group.reads[user] = max(group.reads.get(user, 0), seq)
            self._send(rid, encode(OK, rq))
        elif cmd == UNREAD:
            read = min(group.reads.get(user, 0), group.last_seq)
            self._send(rid, encode(UNREAD_REPLY, rq, name, group.last_seq, read))
        elif cmd == EDIT:
            self._change(rid, rq, group, user, fields[2], fields[3], fields[4])
        elif cmd == DELETE:
            self._change(rid, rq, group, user, fields[2], fields[3], None)

    def _admin_request(self, rid: bytes, rq: int, cmd: int, fields: list[Any]) -> None:
        name = fields[0]
        user = fields[1] if cmd in (KICK, BAN, UNBAN) else ""
        if not local_only(self.bound):
            self._error(rid, rq, 401, "without --secure, only a client on this host may do this")
            return
        why = zms.group_name_error(name) or (
            user and (zms.user_name_error(user) or disguised_name_error(user)) or None)
        if why is not None:
            self._error(rid, rq, 400, why)
            return
        group = self.groups.get(name)
        if cmd == CREATE and group is None:
            # No security here: a private flag has nothing to admit by; it is accepted.
            self.groups[name] = Group(name)
            self._send(rid, encode(OK, rq))
            return
        if cmd == CREATE:
            self._error(rid, rq, 400, f"group '{name}' exists already on this server")
            return
        if group is None:
            hosted = ", ".join(self.groups)
            self._error(rid, rq, 404, f"no group '{name}' on this server (it hosts: {hosted})")
            return
        if cmd == DROP:
            for sub in list(group.subscribers):
                self._unsubscribe(sub, group)
            del self.groups[name]
            self._send(rid, encode(OK, rq))
            return
        if cmd == SET:
            self._send(rid, encode(OK, rq))
            return
        if cmd == UNBAN:
            if user not in group.banned:
                self._error(rid, rq, 400, f"'{user}' is not banned from '{name}'")
                return
            group.banned.discard(user)
            self._send(rid, encode(OK, rq))
            return
        if cmd == IMPORT:
            self._import(rid, rq, group, fields[1])
            return
        if cmd == KICK and user not in group.members:
            self._error(rid, rq, 403, f"'{user}' is not a member of '{name}'")
            return
        if cmd == BAN:
            group.banned.add(user)
        member = user in group.members
        group.members.discard(user)
        for sub in [r for r in group.subscribers if self.conns[r].user == user]:
            self._unsubscribe(sub, group)
        self._send(rid, encode(OK, rq))
        if member:
            self._push(group, encode(PRESENCE, None, name, user, False))

    def _import(self, rid: bytes, rq: int, group: Group,
                messages: list[tuple[tuple[int, int, str, str], str]]) -> None:
        """IMPORT: messages that keep their seq and ts, following the group's last seq."""
        last, ts = group.last_seq, group.stamps[-1] if group.stamps else 0
        for (seq, stamp, sender, text), _ in messages:
            if seq != last + 1:
                reason = (f"the group holds messages up to seq {group.last_seq}, so an import "
                          f"continues at seq {group.last_seq + 1}; this one starts at seq {seq}"
                          if last == group.last_seq else f"not contiguous: seq {seq} follows seq {last}")
                self._error(rid, rq, 400, reason)
                return
            if stamp < ts:
                self._error(rid, rq, 400, f"seq {seq} goes back in time ({stamp} < {ts})")
                return
            why = zms.user_name_error(sender)
            if why is not None or len(text.encode()) > zms.MAX_TEXT:
                self._error(rid, rq, 400, f"seq {seq}: {why or 'text too long'}")
                return
            last, ts = seq, stamp
        new = []
        for message, cid in messages:
            seq, _, sender, _ = message
            group.keep(message)
            if cid:
                group.client_ids[(sender, cid)] = seq
            new.append(message)
        self._send(rid, encode(ACKS, rq, [(m[0], m[1], False) for m in new]))
        if len(new) == 1:
            self._push(group, encode(MSG, None, group.name, new[0]))
        else:
            self._push(group, encode(MSGS, None, group.name, new))

    def _search(self, rid: bytes, rq: int, group: Group, since: int, limit: int,
                query: str) -> None:
        """SEARCH: the messages whose latest text holds every word of ``query``, newest first;
        changes and deleted messages are never hits."""
        why = query_error(query)
        if why is not None:
            self._error(rid, rq, 400, why)
            return
        wanted = {word for _, _, word in words(query)}
        limit = min(limit, zms.SEARCH_MAX)
        hits: list[tuple[int, int, str, str, list[tuple[int, int]]]] = []
        for seq, ts, sender, text in reversed(group.messages):
            if len(hits) >= limit or (since > 0 and ts < since):
                break  # ts never decreases along seq: all older ones are earlier still
            if zms.parse_change(text) is not None:
                continue
            latest = group.changed.get(seq, text)
            if latest is None:
                continue  # deleted
            found = words(latest)
            if not wanted <= {word for _, _, word in found}:
                continue
            matches = [(start, end) for start, end, word in found if word in wanted]
            hits.append((seq, ts, sender, latest, matches))
        self._send(rid, encode(FOUND, rq, group.name, hits))

    def _change(self, rid: bytes, rq: int, group: Group, user: str, cid: str, seq: int,
                text: str | None) -> None:
        """EDIT (``text``) or DELETE (None) of message ``seq``: stored as a new message of the
        group that refers to it, as a SEND's is (sequenced, de-duplicated, pushed)."""
        if not 1 <= seq <= group.last_seq:
            self._error(rid, rq, 400, f"'{group.name}' has no message {seq} "
                                      f"(it keeps 1 to {group.last_seq})")
            return
        if text is not None and (why := self._text_refusal(text)) is not None:
            self._error(rid, rq, *why)
            return
        _, _, sender, original = group.messages[seq - 1]
        if zms.parse_change(original) is not None:
            self._error(rid, rq, 400,
                        f"message {seq} is an edit or a deletion; change the original")
            return
        if sender != user:  # without security there are no operator keys: only the sender
            self._error(rid, rq, 403,
                        f"only its sender ({sender}) or an operator may change message {seq}")
            return
        stored = zms.delete_text(seq) if text is None else zms.edit_text(seq, text)
        self._acknowledge(rid, rq, group, user, cid, stored)

    @staticmethod
    def _text_refusal(text: str) -> tuple[int, str] | None:
        """Why SEND refuses ``text``: (413, reason) past MAX_TEXT, (400, reason) by the rules
        of PROTOCOL.md's "Text"; None if it may be stored."""
        size = len(text.encode())
        if size > zms.MAX_TEXT:
            return 413, f"text of {size} bytes is longer than {zms.MAX_TEXT}"
        why = text_error(text)
        return None if why is None else (400, why)

    def _store(self, rid: bytes, rq: int, group: Group, user: str, cid: str, text: str) -> None:
        why = self._text_refusal(text)
        if why is not None:
            self._error(rid, rq, *why)
            return
        self._acknowledge(rid, rq, group, user, cid, text)

    def _acknowledge(self, rid: bytes, rq: int, group: Group, user: str, cid: str,
                     text: str) -> None:
        """Stores one message (or finds it stored under its client id), answers ACK and pushes
        a new one as MSG."""
        seq, ts, duplicate, message = self._append(group, user, cid, text)
        self._send(rid, encode(ACK, rq, seq, ts, duplicate))
        if message is not None:
            self._push(group, encode(MSG, None, group.name, message))

    def _store_batch(self, rid: bytes, rq: int, group: Group, user: str,
                     messages: list[tuple[str, str]]) -> None:
        for i, (_, text) in enumerate(messages):
            size = len(text.encode())
            if size > zms.MAX_TEXT:
                self._error(rid, rq, 413, f"message {i + 1} of the batch has {size} bytes, "
                                          f"more than {zms.MAX_TEXT}")
                return
            why = text_error(text)
            if why is not None:
                self._error(rid, rq, 400, f"message {i + 1} of the batch: {why}")
                return
        acks, new = [], []
        for cid, text in messages:
            seq, ts, duplicate, message = self._append(group, user, cid, text)
            acks.append((seq, ts, duplicate))
            if message is not None:
                new.append(message)
        self._send(rid, encode(ACKS, rq, acks))
        if len(new) == 1:
            self._push(group, encode(MSG, None, group.name, new[0]))
        elif new:
            self._push(group, encode(MSGS, None, group.name, new))

    def _append(self, group: Group, user: str, cid: str,
                text: str) -> tuple[int, int, bool, tuple[int, int, str, str] | None]:
        """Stores one message (seq, ts, False, message), or finds it stored under the sender's
        client id (seq, ts, True, None)."""
        if cid and (user, cid) in group.client_ids:
            seq, ts, _, _ = group.messages[group.client_ids[(user, cid)] - 1]
            return seq, ts, True, None
        ts = max(int(time.time() * 1000), group.stamps[-1] if group.stamps else 0)
        message = (group.last_seq + 1, ts, user, text)
        group.keep(message)
        if cid:
            group.client_ids[(user, cid)] = message[0]
        return message[0], ts, False, message

    def _history(self, rid: bytes, rq: int, group: Group, after: int, since: int,
                 limit: int) -> None:
        start = min(after, group.last_seq)  # index of the first message with seq > after
        if since > 0:
            start = max(start, bisect.bisect_left(group.stamps, since))
        page: list[tuple[int, int, str, str]] = []
        size = 0
        for message in group.messages[start : start + min(limit, zms.HISTORY_PAGE_MAX)]:
            size += 21 + len(message[2].encode()) + len(message[3].encode())
            if page and size > zms.MAX_REPLY:
                break
            page.append(message)
        self._send(rid, encode(MESSAGES, rq, group.name, group.last_seq, page))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m zms.group_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", default=None,
                        help="message server HOST:PORT (repeat or comma-separate); "
                             "default 127.0.0.1:5555")
    parser.add_argument("--bind", default="127.0.0.1:5556", help="HOST:PORT; port 0: any free")
    parser.add_argument("--group", action="extend", nargs="+", default=None,
                        help="groups to host (default general)")
    parser.add_argument("--advertise", help="HOST:PORT users are told (default: the bound one)")
    args = parser.parse_args(argv)
    servers = [s for arg in (args.server or ["127.0.0.1:5555"]) for s in arg.split(",") if s]
    try:
        server = GroupServer(zmq.Context.instance(), args.bind, servers,
                             args.group or ["general"], args.advertise)
    except (ValueError, zmq.ZMQError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop; UNREGISTER is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve()
    except Stop:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
