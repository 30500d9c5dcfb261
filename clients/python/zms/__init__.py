"""A Python client for ZMS/1, the zms group messaging protocol, written from PROTOCOL.md alone.

Every ZMS/1 message is one ZeroMQ frame: ``"ZMS1"``, a command octet, for requests and replies a
``u32`` request id, then big-endian fields (strings are a ``u8`` length and UTF-8, texts a ``u32``
length and UTF-8). Clients talk to servers over DEALER sockets; servers use ROUTER.

>>> with Client("127.0.0.1:5555", "alice") as c:          # doctest: +SKIP
...     c.join("general")
...     seq = c.send("general", "hello")
...     for message in c.messages("general", timeout=30):  # until 30 s pass quietly
...         print(message["sender"], message["text"])

``Client(..., secure=True)`` speaks CURVE, pinning server keys in the ``zms`` command's
``known_servers`` file. The package also holds the codec (:func:`encode`, :func:`decode`) and
the limits, which :mod:`zms.group_server` shares. Only dependency: pyzmq. A :class:`Client` is
not thread-safe.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Sequence, Union

import zmq

__all__ = [
    "Client",
    "ZmsError",
    "ZmsTimeout",
    "ZmsSecurityError",
    "ServerKeyChanged",
    "DecodeError",
    "Frame",
    "encode",
    "decode",
    "format_ts",
    "parse_time",
    "KeyPair",
    "Pins",
    "fetch_key",
    "default_config_dir",
    "ReadState",
    "Change",
    "parse_change",
    "edit_text",
    "delete_text",
    "fold",
]

# --- Limits and timings (PROTOCOL.md, "Limits" and "Heartbeats and timeouts") ---------------

MAX_TEXT = 65536
MAX_BATCH = 256
MAX_BATCH_FRAME = 69632
MAX_NAME = 64
MAX_FRAME = 1048576
HISTORY_PAGE_MAX = 1000
SEARCH_MAX = 100
MAX_QUERY = 256
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

_log = logging.getLogger("zms")

#: How long a send waits out a server's rate limit (ERROR 429) before raising it.
RATE_LIMIT_PATIENCE = 10.0
# How long a request refused by a server that no longer hosts its group (404, 503) waits for
# the message server to list the group's new owner (cluster mode), in seconds.
HANDOVER_PATIENCE = 15.0
# Most seconds between questions to the message server about a lost server's groups.
LOOKUP_MAX = 8.0

# Numbers the clients of this process, for their client ids.
_clients = itertools.count()

# --- Commands -----------------------------------------------------------------------------

SIGNATURE = b"ZMS"
VERSION = 0x31  # "1"

REGISTER, UNREGISTER, HELLO, LIST, KEY, STATUS = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
JOIN, LEAVE, SUBSCRIBE, SEND, HISTORY, MEMBERS, PING, INVITE, SENDS = range(0x10, 0x19)
KICK, BAN = 0x19, 0x1A
CREATE, DROP, SET, UNBAN, IMPORT = 0x1B, 0x1C, 0x1D, 0x1E, 0x1F
SEARCH, READ, UNREAD, EDIT, DELETE = range(0x20, 0x25)
DM = 0x25
OK, ERROR, GROUPS, JOINED, ACK, MESSAGES, MEMBER_LIST, PONG, KEY_REPLY, ACKS = range(0x80, 0x8A)
STATUS_REPLY = 0x8A
FOUND, UNREAD_REPLY = 0x8B, 0x8C
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
    STATUS: (),
    JOIN: ("str", "str"),
    LEAVE: ("str", "str"),
    SUBSCRIBE: ("str", "str"),
    SEND: ("str", "str", "str", "text"),
    SENDS: ("str", "str", ("list", ("str", "text"))),
    HISTORY: ("str", "str", "u64", "i64", "u32"),
    MEMBERS: ("str", "str"),
    PING: (),
    INVITE: ("str", "str", "str"),
    KICK: ("str", "str"),
    BAN: ("str", "str"),
    CREATE: ("str", "u8"),  # group, flags (bit 0: private)
    DROP: ("str",),
    SET: ("str", "u8"),  # group, flags (bit 0: private)
    UNBAN: ("str", "str"),
    IMPORT: ("str", ("list", ("msg", "str"))),  # group, [(message, client id)]
    SEARCH: ("str", "str", "i64", "u32", "text"),  # group, user, since_ms, limit, query
    READ: ("str", "str", "u64"),  # group, user, seq read up to
    UNREAD: ("str", "str"),
    EDIT: ("str", "str", "str", "u64", "text"),  # group, user, client id, seq, new text
    DELETE: ("str", "str", "str", "u64"),  # group, user, client id, seq
    DM: ("str", "str"),
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
    STATUS_REPLY: ("text",),  # one JSON object
    # group, hits: seq, ts, sender, text, matched octet ranges (start, end)
    FOUND: ("str", ("list", ("u64", "i64", "str", "text", ("list", ("u32", "u32"))))),
    UNREAD_REPLY: ("str", "u64", "u64"),  # group, last seq, read seq
}
#: Fields a reply may end with, read when octets remain: MESSAGES's first kept seq, sent
#: only once the server's retention trimmed the group (absent, it is 1).
OPTIONAL_REPLY_FIELDS: dict[int, Schema] = {
    MESSAGES: ("u64",),
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
    MSGS: "MSGS", STATUS: "STATUS", STATUS_REPLY: "STATUS", KICK: "KICK", BAN: "BAN",
    CREATE: "CREATE", DROP: "DROP", SET: "SET", UNBAN: "UNBAN", IMPORT: "IMPORT",
    SEARCH: "SEARCH", READ: "READ", UNREAD: "UNREAD", EDIT: "EDIT", DELETE: "DELETE",
    FOUND: "FOUND", UNREAD_REPLY: "UNREAD",
    DM: "DM",
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
    """No reply within every try."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNREACHABLE, reason)


class ZmsSecurityError(ZmsError):
    """The client refuses a server: no key known for it, or a key that differs from the one
    pinned in ``known_servers``. Carries code 401 (:data:`UNAUTHORIZED`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNAUTHORIZED, reason)
        self.args = (reason,)  # shown as it is, without a code: the refusal is this client's


class ServerKeyChanged(ZmsSecurityError):
    """A server offers a key other than the one pinned for its address: possibly an
    impersonator. The message says which line of which file to remove if the change is known."""


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
    optional = OPTIONAL_REPLY_FIELDS.get(command, ()) if command in REPLIES else ()
    if len(fields) == len(schema) + len(optional):
        schema += optional
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
            # An element's smallest size; a list within it takes at least its count.
            smallest = sum(4 if isinstance(k, tuple) else _MIN[k] for k in kind[1])
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
        if kind == "reply" and reader.left():
            fields += [reader.read(k) for k in OPTIONAL_REPLY_FIELDS.get(command, ())]
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


def conversation_name(user: str, peer: str) -> str:
    """The conversation of two users: ``@`` and the names in octet order (``@alice@bob``).
    ValueError for a name that is not a user's, or the same name twice."""
    for name in (user, peer):
        if (why := user_name_error(name)) is not None:
            raise ValueError(why)
    if user == peer:
        raise ValueError(f"a conversation needs two users; '{user}' named themself")
    low, high = sorted((user, peer), key=str.encode)
    return f"@{low}@{high}"


def conversation_users(name: str) -> tuple[str, str] | None:
    """The two users of a conversation name, in octet order; None for anything else."""
    low, sep, high = name.removeprefix("@").partition("@")
    if not name.startswith("@") or not sep:
        return None
    if user_name_error(low) or user_name_error(high) or not low.encode() < high.encode():
        return None
    return low, high


def group_or_conversation_error(name: str) -> str | None:
    """Why ``name`` is neither a group name nor a conversation name, or None."""
    if not name.startswith("@"):
        return group_name_error(name)
    if conversation_users(name) is None:
        return f"'{name}' is not a conversation name (@USER@USER, the two names in octet order)"
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


TimeLike = Union[int, float, str, datetime.datetime, datetime.date, datetime.timedelta]

#: A unix time below this is seconds, at or above it milliseconds. 100,000,000,000 seconds is
#: the year 5138, and as milliseconds it is March 1973: no time a user means is ambiguous.
SECONDS_BELOW = 100_000_000_000

_DATE_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|z|[+-]\d{2}:?\d{2})?)?"
)
_DURATION_PART_RE = re.compile(r"\s*(\d+)\s*([a-z]+)")
_UNIT_MS = {
    **dict.fromkeys(("ms", "msec", "millis"), 1),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1000),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
    **dict.fromkeys(("w", "week", "weeks"), 604_800_000),
}
_TIME_FORMS = (
    "unix seconds or milliseconds, a date (2026-12-03, local midnight), a date-time "
    "(2026-12-03T14:30, local; or RFC 3339 with Z or an offset), or a duration ago (90s, 10m, "
    "2h, 1d, 1h 30m)"
)


def parse_time(when: TimeLike, now_ms: int | None = None) -> int:
    """Unix milliseconds from a time as people write it, the forms ``zms history --since`` takes:

    * a number, or a string of digits: unix **seconds** when below 100,000,000,000
      (:data:`SECONDS_BELOW`), unix **milliseconds** at or above it;
    * a date, ``2026-12-03``: local midnight; a ``datetime.date`` likewise;
    * a date-time without a zone, ``2026-12-03T14:30`` or ``2026-12-03 14:30:05.250``: local
      time; a naive ``datetime`` likewise, as Python's own ``datetime.timestamp`` reads it;
    * RFC 3339 with a zone, ``2026-12-03T14:30:00Z`` or ``…+01:00``; an aware ``datetime``;
    * a duration before now (``now_ms``, default the clock): ``90s``, ``10m``, ``2h``, ``1d``,
      ``1h 30m`` (units ms, s, m, h, d, w); a ``datetime.timedelta`` likewise.

    Raises ValueError naming the accepted forms for anything else, TypeError for other types.
    """
    if isinstance(when, bool) or not isinstance(when, (int, float, str, datetime.date,
                                                       datetime.timedelta)):
        raise TypeError(f"a time is a number, text, a datetime, a date or a timedelta, "
                        f"not {when!r}")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if isinstance(when, str):
        text = when.strip()
        if text.isascii() and text.isdigit():
            return _unix_ms(int(text))
        moment = _parse_date_time(text)
        if moment is not None:
            return moment
        ago = _parse_duration(text)
        if ago is None:
            raise ValueError(f"bad time '{when}': use {_TIME_FORMS}")
        return now - ago
    if isinstance(when, (int, float)):
        return _unix_ms(when)
    if isinstance(when, datetime.timedelta):
        return now - when // datetime.timedelta(milliseconds=1)
    if not isinstance(when, datetime.datetime):  # a date: its local midnight
        when = datetime.datetime(when.year, when.month, when.day)
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as datetime.timestamp() reads a naive one
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (when - epoch) // datetime.timedelta(milliseconds=1)


def _unix_ms(value: int | float) -> int:
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"bad time {value!r}: a unix time is a number 0 or more")
    ms = int(value * 1000) if value < SECONDS_BELOW else int(value)
    if ms >= 1 << 63:
        raise ValueError(f"bad time {value!r}: later than any timestamp can say")
    return ms


def _parse_date_time(text: str) -> int | None:
    """Unix ms of a date or date-time (see :func:`parse_time`), or None if ``text`` is not one.
    Raises ValueError for one that has the shape but not a real day or time (2026-02-30)."""
    match = _DATE_TIME_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
        )
    except ValueError as err:
        raise ValueError(f"bad time '{text}': {err}") from None
    if zone is None:
        return parse_time(moment)  # local
    if zone in ("Z", "z"):
        offset = datetime.timedelta(0)
    else:
        digits = zone[1:].replace(":", "")
        offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if zone[0] == "-":
            offset = -offset
    return parse_time(moment.replace(tzinfo=datetime.timezone(offset)))


def _parse_duration(text: str) -> int | None:
    """Milliseconds of a duration such as ``1h 30m``, or None if ``text`` is not one."""
    total, pos, text = 0, 0, text.lower()
    while pos < len(text):
        match = _DURATION_PART_RE.match(text, pos)
        if match is None or match.group(2) not in _UNIT_MS:
            return None
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    return total if pos else None


# --- CURVE keys and pins (PROTOCOL.md, "Security") ------------------------------------------
#
# The same files, in the same formats, as the Rust client's, so that both share a user's
# identity and one set of trusted server keys.

_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def key_error(key: str) -> str | None:
    """Why ``key`` is not a CURVE public or secret key in Z85 (40 characters), or None."""
    if len(key) != 40 or not set(key) <= _Z85:
        return f"'{key}' is not a CURVE key (40 characters of Z85)"
    return None


def default_config_dir() -> str | None:
    """Where a user's keys and pins live: ``$ZMS_HOME``, else ``$XDG_CONFIG_HOME/zms``, else
    ``$HOME/.config/zms``; None when none of those is set."""
    if os.environ.get("ZMS_HOME"):
        return os.environ["ZMS_HOME"]
    if os.environ.get("XDG_CONFIG_HOME"):
        return os.path.join(os.environ["XDG_CONFIG_HOME"], "zms")
    if os.environ.get("HOME"):
        return os.path.join(os.environ["HOME"], ".config", "zms")
    return None


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair in Z85. Its ``repr`` never shows the secret."""

    public: str
    secret: str = field(repr=False)

    @staticmethod
    def generate() -> KeyPair:
        """A fresh pair from libzmq (ValueError when it was built without CURVE)."""
        if not zmq.has("curve"):
            raise ValueError("this pyzmq's libzmq has no CURVE support (zmq.has('curve'))")
        public, secret = zmq.curve_keypair()
        return KeyPair(public.decode("ascii"), secret.decode("ascii"))

    @staticmethod
    def load(path: str) -> KeyPair:
        """Reads a key file (``public = "…"`` and ``secret = "…"`` lines, as ``zms keygen``
        writes); ValueError naming the file if it is unreadable or malformed."""
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as err:
            raise ValueError(f"cannot read key file {path}: {err.strerror}") from None
        found: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            value = value.strip().strip('"')
            if sep and name.strip() in ("public", "secret") and key_error(value) is None:
                found.setdefault(name.strip(), value)
        for name in ("public", "secret"):
            if name not in found:
                raise ValueError(f'key file {path} has no valid `{name} = "…"` line')
        return KeyPair(found["public"], found["secret"])

    def save(self, path: str) -> None:
        """Writes the pair to a new file ``path``, readable by its owner only."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("# zms CURVE key pair. Keep this file secret; share only the public key.\n"
                       f'public = "{self.public}"\nsecret = "{self.secret}"\n')

    @staticmethod
    def load_or_create(path: str) -> KeyPair:
        """The pair in ``path``, made and saved there first if the file does not exist."""
        if os.path.exists(path):
            return KeyPair.load(path)
        pair = KeyPair.generate()
        pair.save(path)
        return pair


def user_key_path(directory: str, name: str) -> str:
    """The file holding user ``name``'s key pair in the config ``directory``."""
    return os.path.join(directory, "keys", f"{name}.key")


class Pins:
    """Server keys trusted on first use, by ``HOST:PORT``, kept in a ``known_servers`` file of
    ``HOST:PORT KEY`` lines (as SSH's known_hosts): the first key seen for an address is pinned,
    and a different one later is refused."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.keys: dict[str, str] = {}
        try:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    line = line.strip()
                    parts = line.split(None, 1)
                    if len(parts) == 2 and not parts[0].startswith("#"):
                        self.keys[parts[0]] = parts[1].strip()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror}") from None

    def get(self, address: str) -> str | None:
        """The key pinned for ``address``, if any."""
        return self.keys.get(address)

    def check_or_pin(self, address: str, key: str) -> bool:
        """Accepts ``key`` for ``address``: pins it if the address is new (True), agrees if it
        matches the pin (False), and raises :class:`ServerKeyChanged` for a different key."""
        pinned = self.keys.get(address)
        if pinned == key:
            return False
        if pinned is not None:
            raise ServerKeyChanged(
                f"WARNING: the key of {address} has CHANGED (pinned {pinned}, now offered {key}). "
                "Someone may be impersonating it; refusing to connect. If the server's key was "
                f"replaced on purpose, remove its line from {self.path}")
        self.keys[address] = key
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        lines = "".join(f"{a} {k}\n" for a, k in sorted(self.keys.items()))
        with open(self.path, "w", encoding="utf-8") as file:
            file.write("# zms: server keys trusted on first use (HOST:PORT KEY)\n" + lines)
        return True


def fetch_key(address: str, timeout: float, tries: int = 1,
              context: zmq.Context[Any] | None = None) -> str:
    """Asks the plaintext key service of the secure server at ``address`` (``HOST:PORT``; the
    service is on the next port up) for its public key. Raises :class:`ZmsTimeout` when no
    service answers and :class:`ZmsSecurityError` when it offers no key."""
    host, _, port = normalize_address(address).rpartition(":")
    service = f"{host}:{int(port) + 1}"
    ctx = context or zmq.Context.instance()
    for _ in range(max(1, tries)):
        sock = ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{service}")
            sock.send(encode(KEY, 1))
            if not sock.poll(max(1, int(timeout * 1000))):
                continue
            try:
                reply = decode(sock.recv(), "incoming")
            except DecodeError:
                reply = None
            if reply is None or reply.command != KEY_REPLY or key_error(reply.fields[0]):
                raise ZmsSecurityError(f"{address} offered no key (is it running --secure?)")
            return str(reply.fields[0])
        finally:
            sock.close(linger=0)
    raise ZmsTimeout(f"no key service at {service} (is {address} running --secure?)")


@dataclass
class _Security:
    """How a client authenticates itself and its servers."""

    keys: KeyPair
    pins: Pins
    server_key: str | None  # the message server's key as given: trusted over any pin
    trust_on_first_use: bool  # fetch and pin an unknown server's key; else refuse it


@dataclass(frozen=True)
class _Curve:
    """The CURVE settings of one connection."""

    keys: KeyPair
    server_key: str
    pinned: bool  # the server key came from known_servers (so a silence may be a new key)


# --- Edits, deletions and read positions (PROTOCOL.md, "EDIT and DELETE", "UNREAD") --------

#: The first character of an edit's or a deletion's text: U+0001, which no SEND may hold.
CHANGE_MARK = "\x01"
_SEQ_DIGITS = re.compile(r"0|[1-9][0-9]*")  # a seq in decimal: no sign, no leading zero


@dataclass(frozen=True)
class Change:
    """What a change message does to message ``seq`` of its group: an edit to ``text``, or
    a deletion (``text`` None)."""

    seq: int
    text: str | None

    @property
    def deleted(self) -> bool:
        return self.text is None


def edit_text(seq: int, text: str) -> str:
    """The stored text of an edit of message ``seq`` to ``text``: ``\\x01edit SEQ TEXT``."""
    return f"{CHANGE_MARK}edit {seq} {text}"


def delete_text(seq: int) -> str:
    """The stored text of the deletion of message ``seq``: ``\\x01delete SEQ``."""
    return f"{CHANGE_MARK}delete {seq}"


def _seq_of(digits: str) -> int | None:
    if not digits.isascii() or not _SEQ_DIGITS.fullmatch(digits) or int(digits) >= 1 << 64:
        return None
    return int(digits)


def parse_change(text: str) -> Change | None:
    """The change a message's text makes, if it is an edit or a deletion; None for any other
    text (a plain message, or one that only looks like a change: ``\\x01edit 012 x``)."""
    if not text.startswith(CHANGE_MARK):
        return None
    rest = text[1:]
    if rest.startswith("edit "):
        digits, space, new_text = rest[5:].partition(" ")
        seq = _seq_of(digits) if space else None
        return None if seq is None else Change(seq, new_text)
    if rest.startswith("delete "):
        seq = _seq_of(rest[7:])
        return None if seq is None else Change(seq, None)
    return None


def fold(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a reader sees them once their edits and deletions are applied, as
    ``zms history`` shows them: ``messages`` (dicts as :meth:`Client.history` and
    :meth:`Client.messages` give them, in seq order) without the change messages, each
    original with its latest ``text``, and ``edited_ts``/``edited_ts_ms`` (the last edit's
    time) once edited, or ``deleted: True`` and an empty ``text`` once deleted. A deletion is
    final: a later edit of a deleted message is ignored. A change of a message not among
    ``messages`` is dropped. The dicts are copies; messages of several groups fold apart.

    ``zms.fold(client.history(group))`` equals the objects ``zms history --json`` prints."""
    shown: list[dict[str, Any]] = []
    where: dict[tuple[Any, int], dict[str, Any]] = {}  # (group, seq) -> its shown dict
    for message in messages:
        change = parse_change(message["text"])
        if change is None:
            copy = dict(message)
            shown.append(copy)
            where[(message.get("group"), message["seq"])] = copy
            continue
        original = where.get((message.get("group"), change.seq))
        if original is None or original.get("deleted"):
            continue
        if change.text is None:
            original["text"] = ""  # an earlier edit's time stays, as zms history shows it
            original["deleted"] = True
        else:
            original["text"] = change.text
            original["edited_ts"] = format_ts(message["ts_ms"])
            original["edited_ts_ms"] = message["ts_ms"]
    return shown


class ReadState(NamedTuple):
    """Where a user stands in a group (UNREAD's answer): its last seq and how far they have
    read it. ``unread`` is how many messages came after their read position."""

    last_seq: int
    read_seq: int

    @property
    def unread(self) -> int:
        return max(0, self.last_seq - self.read_seq)


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

    def __init__(self, ctx: zmq.Context[Any], address: str, curve: _Curve | None) -> None:
        self.ctx = ctx
        self.address = address
        self.curve = curve  # None: plaintext
        self.sock: zmq.Socket[Any] | None = None
        self.epoch: int | None = None
        self.ping_id: int | None = None
        self.unanswered_since: float | None = None  # first PING with no PONG yet
        self.subs: dict[str, _Sub] = {}
        # While lost: when to ask the message server next where its groups live, and the
        # pause after that.
        self.lookup: tuple[float, float] | None = None

    def socket(self) -> zmq.Socket[Any]:
        if self.sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            if self.curve is not None:
                sock.curve_publickey = self.curve.keys.public.encode("ascii")
                sock.curve_secretkey = self.curve.keys.secret.encode("ascii")
                sock.curve_serverkey = self.curve.server_key.encode("ascii")
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


def _expect(reply: Frame, command: int) -> Frame:
    """``reply`` if it is a ``command``; else the server broke the protocol (ERROR 500)."""
    if reply.command != command:
        raise ZmsError(INTERNAL, f"expected {NAMES[command]}, got {reply.name}")
    return reply


def _check_seq(seq: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 1 << 64:
        raise ValueError(f"a seq is a whole number from 0 to 2^64-1, not {seq!r}")


class Client:
    """A ZMS/1 user.

    ``server`` is a message server ``HOST:PORT``, or several separated by commas (the first that
    answers is used). ``name`` is the user name every request carries. A GROUP argument is a
    group name the message server lists, ``NAME@HOST:PORT`` (the group server directly, no
    message server needed), or a group server's ``HOST:PORT`` when it hosts exactly one group.

    Every request waits at most ``timeout`` seconds per try and makes ``tries`` tries, each on a
    new socket, then raises :class:`ZmsTimeout`. ERROR replies raise :class:`ZmsError`.

    Security (PROTOCOL.md, "Security"), as the Rust client has it: with ``secure=True`` every
    connection uses CURVE, and a server whose key is not yet known has it fetched from its key
    service and pinned (trust on first use). ``server_key`` gives the message server's key
    instead (CURVE, trusted over any pin). Group servers' keys come from the message server's
    list, else a pin, else (``secure``) first use. Without either, CURVE is still used when a
    message server's key is already pinned. The user's key pair is ``keys/NAME.key`` and the
    pins are ``known_servers`` in ``config_dir`` (default: ``$ZMS_HOME``, else
    ``$XDG_CONFIG_HOME/zms``, else ``~/.config/zms``): the same files as the ``zms`` command's,
    so both share the user's identity and trust. A key that differs from its pin raises
    :class:`ServerKeyChanged`.
    """

    def __init__(
        self,
        server: str | Sequence[str],
        name: str,
        *,
        timeout: float = REQUEST_TIMEOUT_MS / 1000,
        tries: int = REQUEST_TRIES,
        context: zmq.Context[Any] | None = None,
        secure: bool = False,
        server_key: str | None = None,
        config_dir: str | None = None,
    ) -> None:
        parts = server.split(",") if isinstance(server, str) else list(server)
        self.servers = [normalize_address(s) for s in parts if s.strip()]
        self.name = name
        self.timeout = timeout
        self.tries = max(1, tries)
        self._ctx = context or zmq.Context.instance()
        self._conns: dict[str, _Conn] = {}
        self._where: dict[str, str] = {}  # group name -> group server address
        self._security = self._make_security(secure, server_key, config_dir)
        # Group server keys as the (trusted) message server listed them, by address.
        self._listed_keys: dict[str, str] = {}
        self._ids = itertools.count(secrets.randbelow(1 << 31) + 1)
        # Client ids that rise (PROTOCOL.md, "Sequencing"): this client's start time, process
        # and number, then a counter.
        self._client_prefix = f"{time.time_ns() // 1_000_000:012x}{os.getpid():08x}{next(_clients):04x}-"
        self._sent = itertools.count(1)

    def _make_security(
        self, secure: bool, server_key: str | None, directory: str | None
    ) -> _Security | None:
        wanted = secure or server_key is not None
        if server_key is not None and (why := key_error(server_key)) is not None:
            raise ValueError(f"server_key: {why}")
        directory = directory or default_config_dir()
        if directory is None:
            if wanted:
                raise ValueError("no HOME, XDG_CONFIG_HOME or ZMS_HOME to keep keys in: "
                                 "pass config_dir")
            return None
        pins = Pins(os.path.join(directory, "known_servers"))
        if not wanted and not any(pins.get(address) for address in self.servers):
            return None
        if (why := user_name_error(self.name)) is not None:
            raise ZmsError(BAD_REQUEST, why)  # as a server would, before it names a key file
        keys = KeyPair.load_or_create(user_key_path(directory, self.name))
        return _Security(keys, pins, server_key, secure)

    @property
    def public_key(self) -> str | None:
        """The user's CURVE public key (what ``zms whoami`` prints), or None without security."""
        return None if self._security is None else self._security.keys.public

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
        return [{"name": n, "address": a, "key": k} for n, a, k in self._list()]

    # -- group server --

    def join(self, group: str) -> dict[str, Any]:
        """Joins ``group``: ``{"group", "address", "last_seq"}``."""
        def join_at(name: str, conn: _Conn) -> dict[str, Any]:
            reply = self._request(conn, JOIN, name, self.name)
            return {"group": reply.fields[0], "address": conn.address,
                    "last_seq": reply.fields[1]}

        joined: dict[str, Any] = self._following(group, join_at)
        return joined

    def conversation(self, peer: str) -> dict[str, str]:
        """Opens the conversation with ``peer`` (DM at the message server, then JOIN where it
        lives, which creates it if new): ``{"group", "address"}``. A GROUP argument of
        ``@peer`` anywhere else names it too."""
        name, conn = self._resolve(f"@{peer.removeprefix('@')}")
        return {"group": name, "address": conn.address}

    def dm(self, peer: str, text: str, *, client_id: str | None = None) -> int:
        """Sends ``text`` to ``peer`` alone, in your conversation; returns its seq."""
        return self.send(f"@{peer.removeprefix('@')}", text, client_id=client_id)

    def leave(self, group: str) -> None:
        """Leaves ``group`` (ERROR 403 if not a member)."""
        name, conn = self._resolve(group)
        self._request(conn, LEAVE, name, self.name)

    def send(self, group: str, text: str, *, client_id: str | None = None) -> int:
        """Sends ``text`` and returns its seq. Retries resend the same frame and client id, so
        the message is stored once however many tries it takes."""
        return self._store(group, SEND, client_id, text)

    def _store(self, group: str, command: int, client_id: str | None, *rest: Any) -> int:
        """A SEND, EDIT or DELETE (``rest``: its fields after the client id) under one client
        id however many tries it takes; the seq its ACK gives."""
        if client_id is None:
            client_id = f"{self._client_prefix}{next(self._sent):06d}"

        def store_once(name: str, conn: _Conn) -> int:
            # Over the server's rate limit: wait and try again (the same id, so stored at most
            # once), slowing this sender down rather than failing it, for a bounded time.
            pause, give_up = 0.05, time.monotonic() + RATE_LIMIT_PATIENCE
            while True:
                try:
                    reply = self._request(conn, command, name, self.name, client_id, *rest)
                    return int(_expect(reply, ACK).fields[0])
                except ZmsError as err:
                    if err.code != LIMITED or time.monotonic() + pause >= give_up:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

        # A group that moved to another group server is followed there, under the same id.
        seq: int = self._following(group, store_once)
        return seq

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
        reply = self._following(
            group, lambda name, conn: self._request(conn, MEMBERS, name, self.name))
        return [{"name": n, "online": bool(o)} for n, o in reply.fields[1]]

    def history(
        self, group: str, since: TimeLike | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored messages, oldest first. With ``since``: those at or after it (the first
        ``limit``). Without: all, or the last ``limit``. Pages as the spec says.

        ``since`` is any time :func:`parse_time` reads, as ``zms history --since`` takes it:
        unix seconds or milliseconds (below 100,000,000,000 is seconds), ``"2026-12-03"``
        (local midnight), ``"2026-12-03T14:30"`` (local), RFC 3339, ``"10m"``/``"2h"``/``"1d"``
        ago, or a ``datetime``, ``date`` or ``timedelta``. A bad one raises ValueError.

        Edits and deletions are among them as they are stored (``\\x01edit SEQ TEXT``,
        ``\\x01delete SEQ``); :func:`fold` applies them to the messages they change."""
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
            _, last_seq, messages, *_ = reply.fields
            fresh = [m for m in messages if m[0] > after]
            out += [self._message(name, conn.address, m) for m in fresh]
            if not fresh or fresh[-1][0] >= last_seq:
                break  # every page moves ``after`` forward, so this ends
            after = fresh[-1][0]
        return out

    def search(
        self, group: str, query: str, *, since: TimeLike | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The messages of ``group`` whose latest text holds every word of ``query``, whatever
        their case and accents, newest first: at most ``limit`` (the server caps it at
        ``SEARCH_MAX``), only those at or after ``since`` (any time :func:`parse_time` reads)
        if given. Edits and deletions are never hits, nor are deleted messages; an edited
        message is found by its latest text, which the hit carries.

        Each hit is a message dict as :meth:`history` gives (``group``, ``address``, ``seq``,
        ``ts``, ``ts_ms``, ``sender``, ``text``) with ``matches``: the matched words as
        ``(start, end)`` octet ranges of the UTF-8 text (``text.encode()[start:end]``), in
        order. Raises :class:`ZmsError` 400 for a query without a letter or digit, longer than
        ``MAX_QUERY`` octets or holding a control character, 403 for a group the user is not
        a member of."""
        if limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}")
        since_ms = parse_time(since) if since is not None else 0
        limit = min(limit, 0xFFFFFFFF)

        def search_at(name: str, conn: _Conn) -> list[dict[str, Any]]:
            reply = self._request(conn, SEARCH, name, self.name, since_ms, limit, query)
            hits = _expect(reply, FOUND).fields[1]
            return [self._hit(name, conn.address, hit) for hit in hits]

        hits: list[dict[str, Any]] = self._following(group, search_at)
        return hits

    def search_all(
        self, query: str, *, since: TimeLike | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """:meth:`search` over every group the user is a member of (:meth:`my_groups`), one
        SEARCH each where the group lives, the hits merged newest first, at most ``limit`` in
        all. The first group that refuses the search raises, as ``zms search QUERY`` does."""
        hits: list[dict[str, Any]] = []
        for entry in self.my_groups():
            where = f"{entry['group']}@{entry['address']}"
            hits += self.search(where, query, since=since, limit=limit)
        hits.sort(key=lambda h: (h["ts_ms"], h["group"], h["seq"]), reverse=True)
        return hits[:limit]

    def mark_read(self, group: str, seq: int) -> None:
        """Tells the server the user has seen ``group`` up to message ``seq``. The read
        position only moves forward, and never past the group's last seq (a larger ``seq``
        means all of it, as it is now). Send it as messages are shown, not once each."""
        _check_seq(seq)
        self._following(group, lambda name, conn: _expect(
            self._request(conn, READ, name, self.name, seq), OK))

    def read_state(self, group: str) -> ReadState:
        """The group's last seq and the user's read position in it (0 if they never sent
        READ), as :class:`ReadState` (a ``(last_seq, read_seq)`` tuple whose ``unread`` is
        how many are new). ERROR 403 if the user is not a member."""
        def unread_at(name: str, conn: _Conn) -> ReadState:
            reply = _expect(self._request(conn, UNREAD, name, self.name), UNREAD_REPLY)
            return ReadState(int(reply.fields[1]), int(reply.fields[2]))

        state: ReadState = self._following(group, unread_at)
        return state

    def unread(self, group: str) -> ReadState:
        """:meth:`read_state`: ``last_seq, read_seq = client.unread("general")``."""
        return self.read_state(group)

    def my_groups(self) -> list[dict[str, Any]]:
        """The groups the message server lists of which the user is a member, with where they
        stand in each, as ``zms unread --json`` prints them: ``{"group", "address",
        "last_seq", "read_seq", "unread"}``. Every listed group is asked (UNREAD); those that
        answer 403 or 404 are left out, and so (with a warning logged) are those whose server
        does not answer or does not know UNREAD."""
        mine: list[dict[str, Any]] = []
        for name, address, _key in self._list():
            try:
                state = self.read_state(f"{name}@{address}")
            except ZmsError as err:
                if err.code not in (NOT_MEMBER, UNKNOWN_GROUP):
                    _log.warning("cannot tell whether a member of %s@%s: %s", name, address, err)
                continue
            mine.append({"group": name, "address": address, "last_seq": state.last_seq,
                         "read_seq": state.read_seq, "unread": state.unread})
        return mine

    def edit(self, group: str, seq: int, text: str, *, client_id: str | None = None) -> int:
        """Replaces the text of the user's message ``seq`` with ``text``; returns the seq of
        the edit, a new message of the group that every member's client folds into the
        original (:func:`fold`). Retried as :meth:`send` is, under one client id, so it is
        stored once. ERROR 403 for another's message, 400 for a seq the group does not keep or
        one that is itself a change, and ``text`` follows SEND's rules (413, 400)."""
        _check_seq(seq)
        return self._store(group, EDIT, client_id, seq, text)

    def delete(self, group: str, seq: int, *, client_id: str | None = None) -> int:
        """Deletes the user's message ``seq``; returns the seq of the deletion. As
        :meth:`edit`: a new message, stored once, refused alike."""
        _check_seq(seq)
        return self._store(group, DELETE, client_id, seq)

    def messages(
        self, group: str, *, after: int | None = None, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """New messages of ``group`` (a group the user has joined), live, each once, in order.

        Subscribes, then yields every message after JOINED's last seq (or after ``after``, to
        replay stored ones first). Drops repeats, fills holes from HISTORY, PINGs every
        heartbeat and uses the PONG's last seqs and epoch to find lost pushes, lost
        subscriptions and restarts, and replaces a socket whose PINGs go unanswered. Ends when
        ``timeout`` seconds pass without a message (None: never), so a ``for`` loop over it
        finishes once the group is quiet. Raises :class:`ZmsError` if the subscription is
        refused (not a member, unknown group). Like any generator, it does nothing (not even
        subscribe) until first advanced. An edit or a deletion comes as the message it is
        stored as (:func:`parse_change` reads it; :func:`fold` applies a list of them).
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
                    return  # quiet for ``timeout`` seconds
                if sub.need_subscribe or sub.known > sub.last:
                    try:
                        self._repair(conn, sub)
                    except ZmsError as err:
                        # Not hosted there now: follow it to where the message server lists it.
                        moved = None
                        if err.code == UNKNOWN_GROUP and name in self._where:
                            moved = self._await_relocation(name, conn)
                        if moved is None:
                            raise
                        conn = self._move_sub(sub, conn, moved)
                        continue
                    if sub.ready:
                        continue
                if now >= next_ping:
                    if self._is_lost(conn, now) and name in self._where:
                        moved = self._follow_lost(name, conn, now)
                        if moved is not None:
                            conn = self._move_sub(sub, conn, moved)
                            continue
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

    def _conn(self, address: str, directory: bool = False) -> _Conn:
        if address not in self._conns:
            curve = self._curve_for(address, directory)
            self._conns[address] = _Conn(self._ctx, address, curve)
        return self._conns[address]

    def _curve_for(self, address: str, directory: bool) -> _Curve | None:
        """The CURVE settings for a server, or None without security. A message server's key
        is the one given, else the pinned one, else (first use) fetched and pinned; a group
        server's is the one the message server lists, else pinned, else fetched."""
        if self._security is None:
            return None
        if not directory and address not in self._listed_keys and self.servers:
            try:
                self._list()  # the message server vouches for the group servers it lists
            except ZmsError:
                pass
        security = self._security
        given = security.server_key if directory else self._listed_keys.get(address)
        if given is not None:
            return _Curve(security.keys, given, pinned=False)
        pinned = security.pins.get(address)
        if pinned is not None:
            return _Curve(security.keys, pinned, pinned=True)
        if not security.trust_on_first_use:
            raise ZmsSecurityError(f"no key known for {address}: pass server_key=KEY, or "
                                   "secure=True to trust it on first use")
        key = fetch_key(address, self.timeout, self.tries, self._ctx)
        security.pins.check_or_pin(address, key)
        _log.warning("trusting the key of %s on first use (%s); pinned in %s", address, key,
                     security.pins.path)
        return _Curve(security.keys, key, pinned=False)

    def _explain_silence(self, conn: _Conn, err: ZmsError) -> ZmsError:
        """A CURVE server whose key changed looks silent (the handshake fails): when a server
        whose key was pinned does not answer, ask its key service, so a replaced key reads as
        :class:`ServerKeyChanged`, not as a timeout."""
        if self._security is None or conn.curve is None or not conn.curve.pinned:
            return err
        try:
            key = fetch_key(conn.address, self.timeout, 1, self._ctx)
            self._security.pins.check_or_pin(conn.address, key)
        except ServerKeyChanged as changed:
            return changed
        except ZmsError:
            pass
        return err

    def _list(self) -> list[tuple[str, str, str]]:
        """The message server's GROUPS entries; remembers the group servers' keys."""
        groups: list[tuple[str, str, str]] = self._directory(LIST).fields[0]
        for _name, address, key in groups:
            if key:
                self._listed_keys[address] = key
        return groups

    @staticmethod
    def _hit(group: str, address: str,
             hit: tuple[int, int, str, str, list[tuple[int, int]]]) -> dict[str, Any]:
        found = Client._message(group, address, hit[:4])
        found["matches"] = [(int(start), int(end)) for start, end in hit[4]]
        return found

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
        head, _, tail = group.rpartition("@")
        if group.startswith("@") and conversation_users(head) is not None:
            return head, self._conn(normalize_address(tail))  # @alice@bob@HOST:PORT
        if group.startswith("@"):  # @USER: the conversation with USER, opened
            name = conversation_name(self.name, group[1:])
            if name in self._where:
                return name, self._conn(self._where[name])
            entry = self._directory(DM, self.name, group[1:]).fields[0][0]
            if entry[2]:
                self._listed_keys[entry[1]] = entry[2]
            conn = self._conn(entry[1])
            self._request(conn, JOIN, name, self.name)
            self._where[name] = entry[1]
            return name, conn
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
        for entry in self._list():
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
                try:
                    conn = self._conn(address, directory=True)
                except ZmsTimeout:
                    continue  # its key service is silent too: try the next
                reply = self._try(conn, frame, rid)
                if reply is not None:
                    return reply
        silence = ZmsTimeout(f"no reply from message server {', '.join(self.servers)}")
        for address in self.servers:
            if address in self._conns:
                explained = self._explain_silence(self._conns[address], silence)
                if explained is not silence:
                    raise explained
        raise silence

    def _request(self, conn: _Conn, command: int, *fields: Any, tries: int | None = None) -> Frame:
        """Lazy Pirate: the same frame (same id) on a new socket each try."""
        rid = self._next_id()
        frame = encode(command, rid, *fields)
        for _ in range(tries or self.tries):
            reply = self._try(conn, frame, rid)
            if reply is not None:
                return reply
        raise self._explain_silence(
            conn, ZmsTimeout(f"no reply from {conn.address} to {NAMES[command]}"))

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
        conn.lookup = None
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

    def _following(self, group: str, call: Any) -> Any:
        """``call(name, conn)`` against where ``group`` lives now. A group found through the
        message server by name is followed when it moves: after a timeout the message server
        is asked once where it lives, after a 404 or 503 for a while (its new owner may not be
        listed yet); listed elsewhere, ``call`` runs again there."""
        name, conn = self._resolve(group)
        for _ in range(4):
            try:
                return call(name, conn)
            except ZmsTimeout:
                if name not in self._where:
                    raise
                moved = self._relocate(name, conn)
                if moved is None:
                    raise
            except ZmsError as err:
                if name not in self._where or err.code not in (UNKNOWN_GROUP, UNAVAILABLE):
                    raise
                moved = self._await_relocation(name, conn)
                if moved is None:
                    raise
            conn = moved
        return call(name, conn)

    def _relocate(self, name: str, conn: _Conn) -> _Conn | None:
        """Asks the message server where group ``name`` lives; the connection there if it is
        not ``conn``'s server (and remembers it), else None."""
        try:
            listed = [a for n, a, _ in self._list() if n == name]
        except ZmsError:
            return None
        if not listed or listed[0] == conn.address:
            return None
        _log.info("%s moved from %s to %s", name, conn.address, listed[0])
        self._where[name] = listed[0]
        return self._conn(listed[0])

    def _await_relocation(self, name: str, conn: _Conn) -> _Conn | None:
        """As :meth:`_relocate`, asking again for up to ``HANDOVER_PATIENCE`` while the
        message server lists the group nowhere (between owners)."""
        give_up, pause = time.monotonic() + HANDOVER_PATIENCE, 0.2
        while True:
            try:
                listed = [a for n, a, _ in self._list() if n == name]
            except ZmsError:
                return None
            if listed:
                return self._relocate(name, conn)
            if time.monotonic() + pause >= give_up:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    @staticmethod
    def _is_lost(conn: _Conn, now: float) -> bool:
        """Three heartbeats without a PONG."""
        lost_after = 3 * HEARTBEAT_MS / 1000
        return conn.unanswered_since is not None and now - conn.unanswered_since >= lost_after

    def _follow_lost(self, name: str, conn: _Conn, now: float) -> _Conn | None:
        """For a lost server: asks where ``name`` lives, at most every few seconds (backing
        off up to ``LOOKUP_MAX`` while it stays lost)."""
        due, pause = conn.lookup if conn.lookup is not None else (now, 1.0)
        if now < due:
            return None
        conn.lookup = (now + pause, min(pause * 2, LOOKUP_MAX))
        return self._relocate(name, conn)

    @staticmethod
    def _move_sub(sub: _Sub, old: _Conn, new: _Conn) -> _Conn:
        """A subscription moves with its place in the stream: SUBSCRIBE at ``new``, then the
        gap from history."""
        old.subs.pop(sub.group, None)
        new.subs[sub.group] = sub
        sub.need_subscribe = True
        return new

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
        _, last_seq, messages, *trimmed = reply.fields
        progressed = False
        first_seq = trimmed[0] if trimmed else 1
        if first_seq > sub.last + 1:  # trimmed by the server's retention: never coming
            sub.last = first_seq - 1
            for seq in [s for s in sub.pending if s <= sub.last]:
                del sub.pending[seq]
            progressed = True
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
