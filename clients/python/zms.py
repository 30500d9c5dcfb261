"""A Python client for ZMS/1, the zms group messaging protocol, written from PROTOCOL.md alone.

Every ZMS/1 message is one ZeroMQ frame: ``"ZMS1"``, a command octet, for requests and replies a
``u32`` request id, then big-endian fields (strings are a ``u8`` length and UTF-8, texts a ``u32``
length and UTF-8). Clients talk to servers over DEALER sockets; servers use ROUTER.

>>> with Client("127.0.0.1:5555", "alice") as c:          # doctest: +SKIP
...     c.join("general")
...     seq = c.send("general", "hello")
...     for message in c.messages("general", timeout=30):
...         print(message["sender"], message["text"])

The module also holds the codec (:func:`encode`, :func:`decode`) and the limits, which
``group_server.py`` shares. Only dependency: pyzmq. A :class:`Client` is not thread-safe.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

import zmq

__all__ = [
    "Client",
    "ZmsError",
    "ZmsTimeout",
    "DecodeError",
    "Frame",
    "encode",
    "decode",
    "format_ts",
    "parse_time",
]

# --- Limits and timings (PROTOCOL.md, "Limits" and "Heartbeats and timeouts") ---------------

MAX_TEXT = 65536
MAX_BATCH = 256
MAX_BATCH_FRAME = 69632
MAX_NAME = 64
MAX_FRAME = 1048576
HISTORY_PAGE_MAX = 1000
MAX_REPLY = 1048576
MAX_GROUPS_PER_SERVER = 10000
HEARTBEAT_MS = 1000
REGISTRATION_TTL_MS = 3000
MAX_REGISTRATION_TTL_MS = 60000
SUBSCRIPTION_TTL_MS = 5000
REQUEST_TIMEOUT_MS = 2000
REQUEST_TRIES = 3
SERVER_SNDHWM = 10000
SERVER_RCVHWM = 10000

# Numbers the clients of this process, for their client ids.
_clients = itertools.count()

# --- Commands -----------------------------------------------------------------------------

SIGNATURE = b"ZMS"
VERSION = 0x31  # "1"

REGISTER, UNREGISTER, HELLO, LIST, KEY = 0x01, 0x02, 0x03, 0x04, 0x05
JOIN, LEAVE, SUBSCRIBE, SEND, HISTORY, MEMBERS, PING, INVITE, SENDS = range(0x10, 0x19)
OK, ERROR, GROUPS, JOINED, ACK, MESSAGES, MEMBER_LIST, PONG, KEY_REPLY, ACKS = range(0x80, 0x8A)
MSG, PRESENCE, MSGS = 0xC0, 0xC1, 0xC2

# Error codes.
BAD_REQUEST, UNAUTHORIZED, NOT_MEMBER, UNKNOWN_GROUP = 400, 401, 403, 404
TOO_LARGE, LIMITED, INTERNAL, UNAVAILABLE, UNSUPPORTED_VERSION = 413, 429, 500, 503, 505
#: Not a server code: no reply came (every try timed out). ``ZmsTimeout`` carries it.
UNREACHABLE = 0

# Field types: "u8" "u16" "u32" "u64" "i64" "bool" "str" (u8 length) "text" (u32 length),
# "msg" (seq u64, ts i64, sender str, text text), and ("list", (element field types)).
_MESSAGE = ("u64", "i64", "str", "text")
Schema = tuple[Any, ...]

#: Fields after the request id, per request command.
REQUESTS: dict[int, Schema] = {
    REGISTER: ("str", "u32", ("list", ("str",)), "str"),
    UNREGISTER: ("str",),
    HELLO: ("str",),
    LIST: (),
    KEY: (),
    JOIN: ("str", "str"),
    LEAVE: ("str", "str"),
    SUBSCRIBE: ("str", "str"),
    SEND: ("str", "str", "str", "text"),
    SENDS: ("str", "str", ("list", ("str", "text"))),
    HISTORY: ("str", "str", "u64", "i64", "u32"),
    MEMBERS: ("str", "str"),
    PING: (),
    INVITE: ("str", "str", "str"),
}
#: Fields after the request id, per reply command.
REPLIES: dict[int, Schema] = {
    OK: (),
    ERROR: ("u16", "text"),
    GROUPS: (("list", ("str", "str", "str")),),
    JOINED: ("str", "u64"),
    ACK: ("u64", "i64", "bool"),
    ACKS: (("list", ("u64", "i64", "bool")),),
    MESSAGES: ("str", "u64", ("list", ("msg",))),
    MEMBER_LIST: ("str", ("list", ("str", "bool"))),
    PONG: ("u64", ("list", ("str", "u64"))),
    KEY_REPLY: ("str",),
}
#: Fields after the command octet (no request id), per event command.
EVENTS: dict[int, Schema] = {
    MSG: ("str", "msg"),
    PRESENCE: ("str", "str", "bool"),
    MSGS: ("str", ("list", ("msg",))),
}
NAMES: dict[int, str] = {
    REGISTER: "REGISTER", UNREGISTER: "UNREGISTER", HELLO: "HELLO", LIST: "LIST", KEY: "KEY",
    JOIN: "JOIN", LEAVE: "LEAVE", SUBSCRIBE: "SUBSCRIBE", SEND: "SEND", HISTORY: "HISTORY",
    MEMBERS: "MEMBERS", PING: "PING", INVITE: "INVITE", SENDS: "SENDS", OK: "OK", ERROR: "ERROR",
    GROUPS: "GROUPS", JOINED: "JOINED", ACK: "ACK", MESSAGES: "MESSAGES",
    MEMBER_LIST: "MEMBERS", PONG: "PONG", KEY_REPLY: "KEY", ACKS: "ACKS", MSG: "MSG",
    PRESENCE: "PRESENCE",
    MSGS: "MSGS",
}

_FIXED = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8, "bool": 1}
_MIN = {**_FIXED, "str": 1, "text": 4, "msg": 21}


class ZmsError(Exception):
    """An ERROR reply (``code`` 400–599), or ``code`` 0 (:data:`UNREACHABLE`) for no reply."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if code else reason)
        self.code = code
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """Whether the spec allows retrying the same request: 5xx and no-reply."""
        return self.code == UNREACHABLE or 500 <= self.code <= 599


class ZmsTimeout(ZmsError, TimeoutError):
    """No reply within every try, or no message within an iterator's ``timeout``."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNREACHABLE, reason)


class DecodeError(ValueError):
    """A frame that is not valid ZMS/1: what a server answers with ERROR ``code``."""

    def __init__(self, reason: str, request_id: int = 0, code: int = BAD_REQUEST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.code = code


@dataclass
class Frame:
    """A decoded frame. ``request_id`` is None for events; ``fields`` follow the schema."""

    command: int
    request_id: int | None
    fields: list[Any]
    kind: str  # "request", "reply" or "event"

    @property
    def name(self) -> str:
        return NAMES.get(self.command, f"0x{self.command:02X}")


# --- Encoding -----------------------------------------------------------------------------


def _put(out: bytearray, kind: Any, value: Any) -> None:
    if isinstance(kind, tuple):  # ("list", element types)
        elems = list(value)
        out += len(elems).to_bytes(4, "big")
        for elem in elems:
            parts = (elem,) if len(kind[1]) == 1 else elem
            for k, v in zip(kind[1], parts, strict=True):
                _put(out, k, v)
    elif kind == "msg":
        for k, v in zip(_MESSAGE, value, strict=True):
            _put(out, k, v)
    elif kind == "i64":
        out += int(value).to_bytes(8, "big", signed=True)
    elif kind == "bool":
        out.append(1 if value else 0)
    elif kind in _FIXED:
        out += int(value).to_bytes(_FIXED[kind], "big")
    else:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if kind == "str":
            if len(data) > 255:
                raise ValueError(f"a string is at most 255 octets, not {len(data)}")
            out.append(len(data))
        else:
            out += len(data).to_bytes(4, "big")
        out += data


def encode(command: int, request_id: int | None, *fields: Any) -> bytes:
    """One ZMS/1 frame. ``request_id`` is None for an event."""
    schema = REQUESTS.get(command) or REPLIES.get(command) or EVENTS.get(command)
    if schema is None and command not in REQUESTS and command not in REPLIES:
        raise ValueError(f"unknown command 0x{command:02X}")
    schema = schema or ()
    if len(fields) != len(schema):
        raise ValueError(f"{NAMES[command]} takes {len(schema)} fields, not {len(fields)}")
    out = bytearray(SIGNATURE)
    out += bytes((VERSION, command))
    if command < 0xC0:
        out += int(request_id or 0).to_bytes(4, "big")
    for kind, value in zip(schema, fields):
        _put(out, kind, value)
    return bytes(out)


# --- Decoding -----------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise DecodeError(f"truncated: needed {n} more bytes, had {self.left()}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def utf8(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("string is not valid UTF-8") from None

    def read(self, kind: Any) -> Any:
        if isinstance(kind, tuple):
            count = int.from_bytes(self.take(4), "big")
            smallest = sum(_MIN[k] for k in kind[1])
            if count * smallest > self.left():
                raise DecodeError(f"list of {count} elements does not fit in the frame")
            if len(kind[1]) == 1:
                return [self.read(kind[1][0]) for _ in range(count)]
            return [tuple(self.read(k) for k in kind[1]) for _ in range(count)]
        if kind == "msg":
            return tuple(self.read(k) for k in _MESSAGE)
        if kind == "i64":
            return int.from_bytes(self.take(8), "big", signed=True)
        if kind == "bool":
            return self.take(1)[0] != 0  # any non-zero octet reads as true
        if kind in _FIXED:
            return int.from_bytes(self.take(_FIXED[kind]), "big")
        if kind == "str":
            return self.utf8(self.take(1)[0])
        return self.utf8(int.from_bytes(self.take(4), "big"))


def decode(data: bytes, expect: str = "any") -> Frame:
    """Decodes one frame, or raises :class:`DecodeError` holding the ERROR a server answers.

    ``expect`` is "request" (a server: replies and events are unknown commands), "incoming" (a
    client: requests are unknown) or "any". An event command with no schema decodes as a Frame
    with empty fields, which a client ignores.
    """
    data = bytes(data)
    if len(data) < 5 or data[:3] != SIGNATURE:
        raise DecodeError(f'not a ZMS message ({len(data)} bytes without the "ZMS" signature)')
    if data[3] != VERSION:
        shown = chr(data[3]) if 0x20 <= data[3] < 0x7F else f"\\x{data[3]:02x}"
        raise DecodeError(
            f"unsupported protocol version '{shown}'; this server speaks version 1",
            code=UNSUPPORTED_VERSION,
        )
    command = data[4]
    reader = _Reader(data, 5)
    request_id: int | None = None
    if command >= 0xC0 and expect != "request":
        schema = EVENTS.get(command)
        if schema is None:
            return Frame(command, None, [], "event")  # unknown event: the receiver ignores it
        kind = "event"
    else:
        # A server reads octets 5-8 as the request id whatever the command, so that even a
        # command it does not handle (a reply, an event) gets an ERROR it can match.
        request_id = int.from_bytes(reader.take(4), "big")
        table = {"request": REQUESTS, "incoming": REPLIES}.get(expect, {**REQUESTS, **REPLIES})
        if command not in table:
            raise DecodeError(f"unknown command 0x{command:02X}", request_id)
        schema = table[command]
        kind = "request" if command < 0x80 else "reply"
    try:
        fields = [reader.read(k) for k in schema]
        if reader.left():
            raise DecodeError(f"{reader.left()} unexpected bytes after the last field")
    except DecodeError as err:
        err.request_id = request_id or 0
        raise
    return Frame(command, request_id, fields, kind)


# --- Names, addresses and times -------------------------------------------------------------

_GROUP_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# Unicode White_Space.
_WHITE_SPACE = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def group_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid group name (ERROR 400's reason), or None."""
    if not 1 <= len(name.encode()) <= MAX_NAME:
        return f"group name must be 1 to {MAX_NAME} bytes"
    if not _GROUP_RE.fullmatch(name):
        return f"group name '{name}' may hold only letters, digits, '_', '.' and '-'"
    return None


def user_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid user name (ERROR 400's reason), or None."""
    if not 1 <= len(name.encode()) <= MAX_NAME:
        return f"user name must be 1 to {MAX_NAME} bytes"
    for ch in name:
        if ch in _WHITE_SPACE or ch == "@" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            return f"user name '{name}' may not hold spaces, control characters or '@'"
    return None


def normalize_address(address: str) -> str:
    """``HOST:PORT`` from ``HOST:PORT`` or ``tcp://HOST:PORT``; ValueError if neither."""
    address = address.strip()
    if address.startswith("tcp://"):
        address = address[len("tcp://") :]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad address '{address}': expected HOST:PORT with a port 1-65535")
    return f"{host}:{int(port)}"


def format_ts(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2026-11-24T23:05:15.543Z``."""
    seconds, millis = divmod(ms, 1000)
    try:
        moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    except OverflowError:
        return f"{ms}ms"  # outside the years datetime can show
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


TimeLike = Union[int, str, datetime.datetime]


def parse_time(when: TimeLike) -> int:
    """Unix milliseconds from an int (unix ms), a datetime (naive = UTC) or RFC 3339 text."""
    if isinstance(when, bool) or not isinstance(when, (int, str, datetime.datetime)):
        raise TypeError(f"a time is unix ms, a datetime or RFC 3339 text, not {when!r}")
    if isinstance(when, int):
        return when
    if isinstance(when, str):
        text = when.strip()
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not take "Z"
            text = text[:-1] + "+00:00"
        when = datetime.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (when - epoch) // datetime.timedelta(milliseconds=1)


# --- The client -----------------------------------------------------------------------------


@dataclass
class _Sub:
    """A live subscription followed by a messages() iterator."""

    group: str
    last: int | None = None  # highest seq accepted for delivery; None until JOINED
    known: int = 0  # highest seq the server is known to have
    need_subscribe: bool = False
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # early MSGs by seq
    ready: deque[dict[str, Any]] = field(default_factory=deque)  # in order, to yield


class _Conn:
    """One DEALER to one server, replaced whenever a try times out (Lazy Pirate)."""

    def __init__(self, ctx: zmq.Context[Any], address: str) -> None:
        self.ctx = ctx
        self.address = address
        self.sock: zmq.Socket[Any] | None = None
        self.epoch: int | None = None
        self.ping_id: int | None = None
        self.unanswered_since: float | None = None  # first PING with no PONG yet
        self.subs: dict[str, _Sub] = {}

    def socket(self) -> zmq.Socket[Any]:
        if self.sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.connect(f"tcp://{self.address}")
            self.sock = sock
        return self.sock

    def reset(self) -> None:
        """A new connection: the server holds none of our subscriptions on it."""
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        self.ping_id = None
        self.unanswered_since = None
        for sub in self.subs.values():
            if sub.last is not None:
                sub.need_subscribe = True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


class Client:
    """A ZMS/1 user.

    ``server`` is a message server ``HOST:PORT``, or several separated by commas (the first that
    answers is used). ``name`` is the user name every request carries. A GROUP argument is a
    group name the message server lists, ``NAME@HOST:PORT`` (the group server directly, no
    message server needed), or a group server's ``HOST:PORT`` when it hosts exactly one group.

    Every request waits at most ``timeout`` seconds per try and makes ``tries`` tries, each on a
    new socket, then raises :class:`ZmsTimeout`. ERROR replies raise :class:`ZmsError`.
    """

    def __init__(
        self,
        server: str | Sequence[str],
        name: str,
        *,
        timeout: float = REQUEST_TIMEOUT_MS / 1000,
        tries: int = REQUEST_TRIES,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        parts = server.split(",") if isinstance(server, str) else list(server)
        self.servers = [normalize_address(s) for s in parts if s.strip()]
        self.name = name
        self.timeout = timeout
        self.tries = max(1, tries)
        self._ctx = context or zmq.Context.instance()
        self._conns: dict[str, _Conn] = {}
        self._where: dict[str, str] = {}  # group name -> group server address
        self._ids = itertools.count(secrets.randbelow(1 << 31) + 1)
        # Client ids that rise (PROTOCOL.md, "Sequencing"): this client's start time, process
        # and number, then a counter.
        self._client_prefix = f"{time.time_ns() // 1_000_000:012x}{os.getpid():08x}{next(_clients):04x}-"
        self._sent = itertools.count(1)

    # -- lifecycle --

    def close(self) -> None:
        """Closes every socket. Memberships stay (the server stores them)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- message server --

    def hello(self) -> None:
        """Announces the user name to the message server (optional; checks the name)."""
        self._directory(HELLO, self.name)

    def list_groups(self) -> list[dict[str, str]]:
        """The message server's groups: ``{"name", "address", "key"}``, sorted by name."""
        reply = self._directory(LIST)
        return [{"name": n, "address": a, "key": k} for n, a, k in reply.fields[0]]

    # -- group server --

    def join(self, group: str) -> dict[str, Any]:
        """Joins ``group``: ``{"group", "address", "last_seq"}``."""
        name, conn = self._resolve(group)
        reply = self._request(conn, JOIN, name, self.name)
        return {"group": reply.fields[0], "address": conn.address, "last_seq": reply.fields[1]}

    def leave(self, group: str) -> None:
        """Leaves ``group`` (ERROR 403 if not a member)."""
        name, conn = self._resolve(group)
        self._request(conn, LEAVE, name, self.name)

    def send(self, group: str, text: str, *, client_id: str | None = None) -> int:
        """Sends ``text`` and returns its seq. Retries resend the same frame and client id, so
        the message is stored once however many tries it takes."""
        name, conn = self._resolve(group)
        if client_id is None:
            client_id = f"{self._client_prefix}{next(self._sent):06d}"
        reply = self._request(conn, SEND, name, self.name, client_id, text)
        return int(reply.fields[0])

    def send_many(self, group: str, texts: list[str]) -> list[int]:
        """Sends ``texts`` in order and returns their seqs: as SENDS of up to ``MAX_BATCH``
        messages and ``MAX_BATCH_FRAME`` octets, each stored all or none. A batch the server
        refuses as a whole for its size or rate (400, 429) goes again as one SEND each, under
        the same client ids, so nothing is stored twice."""
        name, conn = self._resolve(group)
        for text in texts:
            if len(text.encode("utf-8")) > MAX_TEXT:
                raise ZmsError(TOO_LARGE, f"a message is at most {MAX_TEXT} octets")
        header = len(encode(SENDS, 0, name, self.name, []))
        seqs: list[int] = []
        rest = list(texts)
        while rest:
            batch: list[tuple[str, str]] = []
            size = header
            for text in rest[:MAX_BATCH]:
                client_id = f"{self._client_prefix}{next(self._sent):06d}"
                more = 1 + len(client_id.encode("utf-8")) + 4 + len(text.encode("utf-8"))
                if batch and size + more > MAX_BATCH_FRAME:
                    break  # the id skipped leaves no hole that matters: ids need only rise
                size += more
                batch.append((client_id, text))
            rest = rest[len(batch):]
            try:
                reply = self._request(conn, SENDS, name, self.name, batch)
            except ZmsError as err:
                if err.code not in (BAD_REQUEST, LIMITED):
                    raise
                for client_id, text in batch:
                    seqs.append(self.send(group, text, client_id=client_id))
                continue
            acks = reply.fields[0]
            if reply.command != ACKS or len(acks) != len(batch):
                raise ZmsError(INTERNAL, f"expected {len(batch)} ACKS entries, got {reply.name}")
            seqs.extend(int(seq) for seq, _ts, _duplicate in acks)
        return seqs

    def members(self, group: str) -> list[dict[str, Any]]:
        """The members of ``group``: ``{"name", "online"}``, sorted by name."""
        name, conn = self._resolve(group)
        reply = self._request(conn, MEMBERS, name, self.name)
        return [{"name": n, "online": bool(o)} for n, o in reply.fields[1]]

    def history(
        self, group: str, since: TimeLike | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored messages, oldest first. With ``since``: those at or after it (the first
        ``limit``). Without: all, or the last ``limit``. Pages as the spec says."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}")
        name, conn = self._resolve(group)
        since_ms = parse_time(since) if since is not None else 0
        after = 0
        if since is None and limit is not None:
            last_seq = self._request(conn, HISTORY, name, self.name, 0, 0, 0).fields[1]
            after = max(0, last_seq - limit)
        out: list[dict[str, Any]] = []
        while limit is None or len(out) < limit:
            page = HISTORY_PAGE_MAX if limit is None else min(HISTORY_PAGE_MAX, limit - len(out))
            reply = self._request(conn, HISTORY, name, self.name, after, since_ms, page)
            _, last_seq, messages = reply.fields
            fresh = [m for m in messages if m[0] > after]
            out += [self._message(name, conn.address, m) for m in fresh]
            if not fresh or fresh[-1][0] >= last_seq:
                break  # every page moves ``after`` forward, so this ends
            after = fresh[-1][0]
        return out

    def messages(
        self, group: str, *, after: int | None = None, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """New messages of ``group`` (a group the user has joined), live, each once, in order.

        Subscribes, then yields every message after JOINED's last seq (or after ``after``, to
        replay stored ones first). Drops repeats, fills holes from HISTORY, PINGs every
        heartbeat and uses the PONG's last seqs and epoch to find lost pushes, lost
        subscriptions and restarts, and replaces a socket whose PINGs go unanswered. Raises
        :class:`ZmsTimeout` when ``timeout`` seconds pass without a message (None: never), and
        :class:`ZmsError` if the subscription is refused (not a member, unknown group). Like
        any generator, it does nothing (not even subscribe) until first advanced.
        """
        name, conn = self._resolve(group)
        if name in conn.subs:
            raise ValueError(f"already iterating the messages of {name}@{conn.address}")
        sub = _Sub(name)
        conn.subs[name] = sub
        try:
            joined = self._request(conn, SUBSCRIBE, name, self.name)
            sub.known = joined.fields[1]
            sub.last = joined.fields[1] if after is None else after
            sub.need_subscribe = False
            heartbeat = HEARTBEAT_MS / 1000
            next_ping = time.monotonic() + heartbeat
            idle_deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                self._advance(sub)
                if sub.ready:
                    yield sub.ready.popleft()
                    if timeout is not None:
                        idle_deadline = time.monotonic() + timeout
                    continue
                now = time.monotonic()
                if idle_deadline is not None and now >= idle_deadline:
                    raise ZmsTimeout(f"no message in {name}@{conn.address} for {timeout} s")
                if sub.need_subscribe or sub.known > sub.last:
                    self._repair(conn, sub)
                    if sub.ready:
                        continue
                if now >= next_ping:
                    self._ping(conn)
                    next_ping = now + heartbeat
                    continue
                wait = next_ping - now
                if idle_deadline is not None:
                    wait = min(wait, idle_deadline - now)
                if sub.need_subscribe or sub.known > sub.last:
                    wait = min(wait, heartbeat / 4)  # a repair failed: try again soon
                self._pump(conn, max(0.0, wait))
        finally:
            conn.subs.pop(name, None)

    # -- internals --

    def _next_id(self) -> int:
        while True:
            rid = next(self._ids) & 0xFFFFFFFF
            if rid:
                return rid

    def _conn(self, address: str) -> _Conn:
        if address not in self._conns:
            self._conns[address] = _Conn(self._ctx, address)
        return self._conns[address]

    @staticmethod
    def _message(group: str, address: str, m: tuple[int, int, str, str]) -> dict[str, Any]:
        seq, ts, sender, text = m
        return {
            "group": group,
            "address": address,
            "seq": seq,
            "ts": format_ts(ts),
            "ts_ms": ts,
            "sender": sender,
            "text": text,
        }

    def _resolve(self, group: str) -> tuple[str, _Conn]:
        """(group name, connection to its group server) for a GROUP argument."""
        if "@" in group:
            name, _, address = group.partition("@")
            return name, self._conn(normalize_address(address))
        if group in self._where:
            return group, self._conn(self._where[group])
        if ":" in group:  # a group server's address: it must host exactly one group
            address = normalize_address(group)
            hosted = self._request(self._conn(address), LIST).fields[0]
            if len(hosted) != 1:
                names = ", ".join(n for n, _, _ in hosted) or "none"
                raise ZmsError(BAD_REQUEST, f"{address} hosts {len(hosted)} groups ({names}): "
                               "name one as NAME@HOST:PORT")
            return hosted[0][0], self._conn(address)
        for entry in self._directory(LIST).fields[0]:
            if entry[0] == group:
                self._where[group] = entry[1]
                return group, self._conn(entry[1])
        raise ZmsError(UNKNOWN_GROUP, f"unknown group '{group}': no message server lists it")

    def _directory(self, command: int, *fields: Any) -> Frame:
        """A request to the message servers: each gets one try a round, ``tries`` rounds."""
        if not self.servers:
            raise ZmsError(BAD_REQUEST, "no message server address")
        rid = self._next_id()
        frame = encode(command, rid, *fields)
        for _ in range(self.tries):
            for address in self.servers:
                reply = self._try(self._conn(address), frame, rid)
                if reply is not None:
                    return reply
        raise ZmsTimeout(f"no reply from message server {', '.join(self.servers)}")

    def _request(self, conn: _Conn, command: int, *fields: Any, tries: int | None = None) -> Frame:
        """Lazy Pirate: the same frame (same id) on a new socket each try."""
        rid = self._next_id()
        frame = encode(command, rid, *fields)
        for _ in range(tries or self.tries):
            reply = self._try(conn, frame, rid)
            if reply is not None:
                return reply
        raise ZmsTimeout(f"no reply from {conn.address} to {NAMES[command]}")

    def _try(self, conn: _Conn, frame: bytes, rid: int) -> Frame | None:
        """One try: the reply, None on timeout (the socket is then replaced), or ZmsError."""
        deadline = time.monotonic() + self.timeout
        sock = conn.socket()
        try:
            sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout * 1000)))
            sock.send(frame)  # waits for the connection (ZMQ_IMMEDIATE), bounded
        except zmq.Again:
            conn.reset()
            return None
        while (left := deadline - time.monotonic()) > 0:
            reply = self._pump(conn, left, rid)
            if reply is not None:
                if reply.command == ERROR:
                    raise ZmsError(reply.fields[0], reply.fields[1])
                return reply
        conn.reset()
        return None

    def _pump(self, conn: _Conn, wait: float, rid: int | None = None) -> Frame | None:
        """Receives what arrives within ``wait`` seconds: events go to subscriptions, PONGs
        to the heartbeat; returns the reply to ``rid`` (or an id-0 ERROR) as soon as it comes."""
        sock = conn.socket()
        if not sock.poll(int(wait * 1000)):
            return None
        for _ in range(10000):  # drain what is queued, bounded
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            if len(parts) != 1:
                continue
            try:
                frame = decode(parts[0], "incoming")
            except DecodeError:
                continue  # not a frame we can read: ignore it
            if frame.kind == "event":
                self._on_event(conn, frame)
            elif rid is not None and (
                frame.request_id == rid or (frame.request_id == 0 and frame.command == ERROR)
            ):
                return frame
            elif frame.command == PONG and frame.request_id == conn.ping_id:
                self._on_pong(conn, frame.fields[0], frame.fields[1])
            # anything else is a late reply to an abandoned request: dropped
        return None

    def _on_event(self, conn: _Conn, frame: Frame) -> None:
        if frame.command == MSG:
            group, m = frame.fields
            messages = [m]
        elif frame.command == MSGS:
            group, messages = frame.fields  # each handled as a MSG of its own
        else:
            return  # PRESENCE is a courtesy; unknown events are ignored
        sub = conn.subs.get(group)
        if sub is None:
            return
        for m in messages:
            if sub.last is not None and m[0] <= sub.last:
                continue  # a repeat
            if len(sub.pending) < HISTORY_PAGE_MAX:
                sub.pending[m[0]] = self._message(group, conn.address, m)
            sub.known = max(sub.known, m[0])

    def _on_pong(self, conn: _Conn, epoch: int, groups: list[tuple[str, int]]) -> None:
        conn.ping_id = None
        conn.unanswered_since = None
        restarted = conn.epoch is not None and epoch != conn.epoch
        conn.epoch = epoch
        listed = dict(groups)
        for name, sub in conn.subs.items():
            if sub.last is None:
                continue  # its SUBSCRIBE is still on the way
            if restarted or name not in listed:
                sub.need_subscribe = True
            else:
                sub.known = max(sub.known, listed[name])

    def _ping(self, conn: _Conn) -> None:
        now = time.monotonic()
        lost_after = 3 * HEARTBEAT_MS / 1000  # three heartbeats without a PONG
        if conn.unanswered_since is not None and now - conn.unanswered_since >= lost_after:
            conn.reset()  # server lost: a new socket, and keep PINGing
        rid = self._next_id()
        try:
            conn.socket().send(encode(PING, rid), zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected: counts as a PING without PONG
        conn.ping_id = rid
        if conn.unanswered_since is None:
            conn.unanswered_since = now

    def _advance(self, sub: _Sub) -> None:
        """Moves pushed messages that continue the sequence to ``ready``; drops repeats."""
        if sub.last is None:
            return
        for seq in sorted(sub.pending):
            if seq <= sub.last:
                del sub.pending[seq]
            elif seq == sub.last + 1:
                sub.ready.append(sub.pending.pop(seq))
                sub.last = seq
            else:
                break

    def _repair(self, conn: _Conn, sub: _Sub) -> None:
        """Resubscribes, or fetches one page of a hole. A server that does not answer is left
        to the heartbeat; a refusal (not a member, unknown group) is raised."""
        assert sub.last is not None
        try:
            if sub.need_subscribe:
                last_seq = self._request(conn, SUBSCRIBE, sub.group, self.name, tries=1).fields[1]
                sub.need_subscribe = False
                if last_seq < sub.last:  # the store lost messages: follow the server from here
                    sub.last = last_seq
                    sub.known = last_seq
                    sub.pending.clear()
                sub.known = max(sub.known, last_seq)
                return
            reply = self._request(
                conn, HISTORY, sub.group, self.name, sub.last, 0, HISTORY_PAGE_MAX, tries=1
            )
        except ZmsError as err:
            if err.retryable:
                return
            raise
        _, last_seq, messages = reply.fields
        progressed = False
        for m in messages:
            if m[0] == sub.last + 1:
                sub.ready.append(self._message(sub.group, conn.address, m))
                sub.last = m[0]
                sub.pending.pop(m[0], None)
                progressed = True
        if not progressed:
            sub.known = min(sub.known, max(last_seq, sub.last))
            if sub.known > sub.last:  # the server says more exist but sent none: resync
                sub.need_subscribe = True
