"""Interoperability of the Python side (the zms package and zms.group_server) with the Rust
binary.

Run from this directory: ``ZMS_BIN=../../target/debug/zms python3 -m unittest -v test_interop``;
with ``ZMS_TEST_SECURE=1`` the Rust servers run ``--secure`` and every client speaks CURVE.
Servers run as child processes on 127.0.0.1 ephemeral ports; every wait has a deadline.
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import unittest.mock
from pathlib import Path
from typing import Any, Callable

import zmq

import zms
from zms import group_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ZMS_BIN = os.environ.get("ZMS_BIN", str(ROOT / "target" / "debug" / "zms"))
PROTOCOL = ROOT / "PROTOCOL.md"
LIMIT = 15.0  # seconds a child process or a reply may take
#: The run against a secure (CURVE) deployment; the plaintext run otherwise.
SECURE = os.environ.get("ZMS_TEST_SECURE") == "1"
#: CI: what cannot be checked here fails instead of being skipped.
REQUIRED = os.environ.get("ZMS_REQUIRE_PYTHON") == "1"


class Proc:
    """A child process whose stdout lines arrive on a queue; its stderr goes to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self._stderr = open(log, "ab")
        self.popen = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=HERE, env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def line(self, limit: float = LIMIT) -> str:
        try:
            return self.lines.get(timeout=limit)
        except queue.Empty:
            raise AssertionError(f"no output from {self.args[:2]} in {limit} s; stderr:\n"
                                 f"{self.log.read_text(errors='replace')[-2000:]}") from None

    def listening(self) -> str:
        line = self.line()
        assert line.startswith("listening on "), f"unexpected first line: {line!r}"
        return line[len("listening on "):]

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, limit: float = LIMIT) -> int:
        return self.popen.wait(timeout=limit)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=LIMIT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()


def zms_cli(
    *args: str, stdin: str | None = None, ok: bool = True, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a one-shot `zms` command (keys and pins in ``home``); by default requires success."""
    env = {**os.environ, "ZMS_HOME": str(home)} if home is not None else None
    done = subprocess.run([ZMS_BIN, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, stdin=None if stdin is not None else subprocess.DEVNULL,
                          env=env)
    if ok and done.returncode != 0:
        raise AssertionError(f"zms {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def raw_exchange(address: str, frames: list[bytes], multipart: bool = False,
                 secure: bool = SECURE) -> bytes:
    """Sends frames on a fresh DEALER (one message, or one multipart message) and returns the
    first frame that comes back. ``secure``: over CURVE, with the key the server's key service
    gives and a fresh key pair."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if secure:
        pair = zms.KeyPair.generate()
        sock.curve_publickey = pair.public.encode()
        sock.curve_secretkey = pair.secret.encode()
        sock.curve_serverkey = zms.fetch_key(address, LIMIT).encode()
    try:
        sock.connect(f"tcp://{address}")
        if multipart:
            sock.send_multipart(frames)
        else:
            for frame in frames:
                sock.send(frame)
        assert sock.poll(int(LIMIT * 1000)), f"no reply from {address}"
        return bytes(sock.recv())
    finally:
        sock.close(linger=0)


class Deployment(unittest.TestCase):
    """A Rust message server (``--secure`` in the secure run), and helpers to start group
    servers of either kind. The users' keys and pins, Rust's and Python's alike, are in
    ``home``."""

    secure = SECURE

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="zms-py-"))
        self.home = self.tmp / "home"
        self.procs: list[Proc] = []
        self.flags = ["--secure"] if self.secure else []
        self.directory = self.spawn([ZMS_BIN, "message-server", "--bind", "127.0.0.1:0",
                                     *self.flags])
        self.server = self.directory.listening()

    def tearDown(self) -> None:
        for proc in self.procs:
            proc.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, args: list[str]) -> Proc:
        # Servers keep their own keys apart from the users'.
        env = {**os.environ, "ZMS_HOME": str(self.tmp / "server-home")}
        proc = Proc(args, self.tmp / f"stderr-{len(self.procs)}.log", env)
        self.procs.append(proc)
        return proc

    def rust_group_server(self, bind: str = "127.0.0.1:0") -> Proc:
        (self.tmp / "data").mkdir(exist_ok=True)
        return self.spawn([ZMS_BIN, "group-server", "--server", self.server, "--bind", bind,
                           "--group", "general", "--data", str(self.tmp / "data"), *self.flags])

    def python_group_server(self, *extra: str) -> Proc:
        return self.spawn([sys.executable, "-m", "zms.group_server", "--server",
                           self.server, "--bind", "127.0.0.1:0", *extra])

    def cli(self, *args: str, name: str | None = None, stdin: str | None = None,
            ok: bool = True) -> subprocess.CompletedProcess[str]:
        more = ["--server", self.server] + (["--name", name] if name else []) + self.flags
        return zms_cli(*args, *more, stdin=stdin, ok=ok, home=self.home)

    def client(self, name: str, server: str | None = None, **options: Any) -> zms.Client:
        options = {"secure": self.secure, "config_dir": str(self.home), **options}
        client = zms.Client(server or self.server, name, **options)
        self.addCleanup(client.close)
        return client


class RustServers(Deployment):
    """The Python client against the Rust message server and group server."""

    def setUp(self) -> None:
        super().setUp()
        self.group = self.rust_group_server()
        self.group_address = self.group.listening()

    def test_python_and_rust_clients_chat_both_ways(self) -> None:
        bob = self.client("bob")
        listed = bob.list_groups()
        self.assertEqual([(g["name"], g["address"]) for g in listed],
                         [("general", self.group_address)])
        if self.secure:
            self.assertIsNone(zms.key_error(listed[0]["key"]), "a secure group server's key")
        else:
            self.assertEqual(listed[0]["key"], "")
        self.assertEqual(bob.join("general"),
                         {"group": "general", "address": self.group_address, "last_seq": 0})
        self.cli("join", "general", name="alice")

        seq = bob.send("general", "hello from python ✓")
        self.assertEqual(seq, 1)
        rust_view = json_lines(self.cli("history", "general", "--json", name="alice"))
        self.assertEqual([(m["seq"], m["sender"], m["text"]) for m in rust_view],
                         [(1, "bob", "hello from python ✓")])

        sent = json_lines(self.cli("send", "general", "hello from rust", "--json", name="alice"))
        self.assertEqual(sent[0]["seq"], 2)
        # The same messages, field for field, as `zms history --json` shows them.
        rust_view = json_lines(self.cli("history", "general", "--json", name="alice"))
        self.assertEqual(bob.history("general"), rust_view)
        self.assertEqual(bob.history(f"general@{self.group_address}"), rust_view)
        self.assertRegex(rust_view[1]["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

        # Live: what Rust sends, the Python iterator yields, in order, once.
        got: list[dict[str, Any]] = []
        texts = [f"live {i}" for i in range(5)]
        sender = threading.Thread(target=lambda: self.cli(
            "send", "general", name="alice", stdin="".join(t + "\n" for t in texts)))
        sender.start()
        for message in bob.messages("general", after=2, timeout=LIMIT):
            got.append(message)
            if len(got) == len(texts):
                break
        sender.join(LIMIT)
        self.assertEqual([m["text"] for m in got], texts)
        self.assertEqual([m["seq"] for m in got], [3, 4, 5, 6, 7])
        self.assertEqual(got, json_lines(self.cli("history", "general", "--json", "--limit", "5",
                                                  name="alice")))

        # bob's connection is subscribed (JOIN subscribes it); alice's one-shot ones are gone.
        self.assertEqual(bob.members("general"),
                         [{"name": "alice", "online": False}, {"name": "bob", "online": True}])

        # A retried SEND (same client id) is stored once.
        first = bob.send("general", "once", client_id="retry-1")
        again = bob.send("general", "once", client_id="retry-1")
        self.assertEqual(first, again)
        self.assertEqual([m["text"] for m in bob.history("general", limit=2)],
                         ["live 4", "once"])

        with self.assertRaises(zms.ZmsError) as caught:
            self.client("carol").send("general", "not a member")
        self.assertEqual(caught.exception.code, 403)
        with self.assertRaises(zms.ZmsError) as caught:
            bob.join("nope")
        self.assertEqual(caught.exception.code, 404)
        with self.assertRaises(zms.ZmsError) as caught:
            bob.join(f"nope@{self.group_address}")
        self.assertEqual(caught.exception.code, 404)
        with self.assertRaises(zms.ZmsError) as caught:
            self.client("bad name").join("general")
        self.assertEqual(caught.exception.code, 400)

        bob.leave("general")
        self.assertEqual(self.client("alice").members("general"),
                         [{"name": "alice", "online": False}])

    def test_python_and_rust_clients_talk_directly(self) -> None:
        alice = self.client("alice")
        self.assertEqual(alice.conversation("bob"),
                         {"group": "@alice@bob", "address": self.group_address})
        self.assertEqual(alice.dm("bob", "psst, bob"), 1)
        read = json_lines(self.cli("history", "@alice", "--json", name="bob"))
        self.assertEqual([(m["group"], m["text"]) for m in read], [("@alice@bob", "psst, bob")])
        self.cli("dm", "alice", "hi alice", name="bob")
        self.assertEqual([m["text"] for m in alice.history("@bob")], ["psst, bob", "hi alice"])
        # Nobody else reads it.
        carol = self.client("carol")
        with self.assertRaises(zms.ZmsError) as caught:
            carol.history(f"@alice@bob@{self.group_address}")
        self.assertEqual(caught.exception.code, 401)
        self.assertEqual(zms.conversation_name("bob", "alice"), "@alice@bob")
        self.assertIsNone(zms.conversation_users("@bob@alice"))

    def test_send_many_stores_a_list_in_order_in_few_requests(self) -> None:
        bob = self.client("bob")
        bob.join("general")
        # 600 texts, one of them 60,000 octets: batches of at most 256, and the long one starts a
        # batch of its own, since with the short ones before it the frame would pass its limit.
        texts = [f"line {i}" for i in range(600)]
        texts[550] = "x" * 60_000
        seqs = bob.send_many("general", texts)
        self.assertEqual(seqs, list(range(1, 601)))
        self.assertEqual([m["text"] for m in bob.history("general")], texts)
        self.assertEqual(bob.send_many("general", []), [])
        with self.assertRaises(zms.ZmsError) as caught:
            bob.send_many("general", ["fine", "y" * (zms.MAX_TEXT + 1)])
        self.assertEqual(caught.exception.code, 413)
        self.assertEqual(len(bob.history("general")), 600, "a refused list stores nothing")

    def test_history_with_and_without_since_and_limit(self) -> None:
        py = self.client("bob")
        py.join("general")
        self.cli("join", "general", name="alice")
        self.cli("send", "general", name="alice", stdin="one\ntwo\nthree\n")
        everything = json_lines(self.cli("history", "general", "--json", name="alice"))
        self.assertEqual([m["text"] for m in everything], ["one", "two", "three"])
        self.assertEqual(py.history("general"), everything)

        since = everything[1]["ts_ms"]
        expect = [m for m in everything if m["ts_ms"] >= since]
        rust_since = json_lines(self.cli("history", "general", "--json", "--since", str(since),
                                         name="alice"))
        self.assertEqual(rust_since, expect)
        self.assertEqual(py.history("general", since=since), expect)
        self.assertEqual(py.history("general", since=everything[1]["ts"]), expect)
        self.assertEqual(py.history("general", since=since, limit=1), expect[:1])
        self.assertEqual(py.history("general", limit=2), everything[1:])
        self.assertEqual(py.history("general", limit=0), [])
        self.assertEqual(py.history("general", since="2999-01-01T00:00:00Z"), [])
        # Times as people write them: seconds (the second of the message, so it and those
        # after), a duration, the day before (local), a datetime.
        self.assertEqual(py.history("general", since=since // 1000),
                         [m for m in everything if m["ts_ms"] >= since // 1000 * 1000])
        self.assertEqual(py.history("general", since=str(since // 1000)),
                         py.history("general", since=since // 1000))
        self.assertEqual(py.history("general", since="1h"), everything)
        yesterday = datetime.date.today() - datetime.timedelta(days=1)
        self.assertEqual(py.history("general", since=yesterday.isoformat()), everything)
        self.assertEqual(py.history("general", since=datetime.timedelta(hours=1)), everything)
        self.assertEqual(py.history("general", since=datetime.datetime.now()
                                    + datetime.timedelta(hours=1)), [])
        with self.assertRaises(ValueError):
            py.history("general", since="last tuesday")

        # More than one page (HISTORY_PAGE_MAX = 1000): the client pages.
        lines = "".join(f"bulk {i}\n" for i in range(1005))
        self.cli("send", "general", name="alice", stdin=lines)
        everything = json_lines(self.cli("history", "general", "--json", name="alice"))
        self.assertEqual(len(everything), 1008)
        self.assertEqual(py.history("general"), everything)
        self.assertEqual([m["seq"] for m in py.history("general", limit=1002)],
                         list(range(7, 1009)))

    def test_gap_repair_across_a_sigkilled_group_server(self) -> None:
        """The iterator yields every message once, in order, though the group server is
        killed with SIGKILL and restarted (new epoch, no subscriptions) while it runs."""
        py = self.client("bob")
        start = py.join("general")["last_seq"]
        self.cli("join", "general", name="alice")
        received: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()

        def consume() -> None:
            try:
                for message in py.messages("general", after=start, timeout=3 * LIMIT):
                    received.put(message)
                    if message["text"] == "end":
                        return
            except BaseException as err:  # reported to the test thread
                received.put(err)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()

        def take(n: int) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + 3 * LIMIT
            while len(out) < n:
                item = received.get(timeout=max(0.01, deadline - time.monotonic()))
                if isinstance(item, BaseException):
                    raise item
                out.append(item)
            return out

        self.cli("send", "general", name="alice", stdin="a1\na2\n")
        before = take(2)
        self.group.signal(signal.SIGKILL)
        self.group.wait()
        self.group = self.rust_group_server(self.group_address)
        self.assertEqual(self.group.listening(), self.group_address)
        # Sent to the new server, which holds no subscription of the iterator's connection:
        # these come only by the PONG's new epoch, SUBSCRIBE again, and HISTORY.
        self.cli("send", "general", name="alice", stdin="b1\nb2\nb3\nb4\nb5\n")
        repaired = take(5)
        # Subscribed again: live pushes flow, with no repeats of what history gave.
        self.cli("send", "general", name="alice", stdin="c1\nc2\n")
        self.cli("send", "general", "end", name="alice")
        live = take(3)
        consumer.join(LIMIT)
        self.assertFalse(consumer.is_alive())
        self.assertTrue(received.empty(), "nothing after the end")
        got = before + repaired + live
        self.assertEqual([m["text"] for m in got],
                         ["a1", "a2", "b1", "b2", "b3", "b4", "b5", "c1", "c2", "end"])
        self.assertEqual([m["seq"] for m in got], list(range(1, 11)))
        self.assertEqual(got, json_lines(self.cli("history", "general", "--json", name="alice")))

    def test_malformed_requests_get_error_400(self) -> None:
        for address in (self.server, self.group_address):
            with self.subTest(address=address):
                reply = zms.decode(raw_exchange(address, [b"garbage, not ZMS"]), "incoming")
                self.assertEqual((reply.command, reply.request_id, reply.fields[0]),
                                 (zms.ERROR, 0, 400))
                # A JOIN cut inside its group name: the request id is read, so it comes back.
                reply = zms.decode(raw_exchange(address, [b"ZMS1\x10\x00\x00\x00\x2a\x07gen"]),
                                   "incoming")
                self.assertEqual((reply.command, reply.request_id, reply.fields[0]),
                                 (zms.ERROR, 42, 400))
                reply = zms.decode(raw_exchange(address, [zms.encode(zms.PING, 7), b"x"],
                                                multipart=True), "incoming")
                self.assertEqual((reply.command, reply.request_id, reply.fields[0]),
                                 (zms.ERROR, 0, 400))

    def test_an_unknown_version_gets_error_505(self) -> None:
        for address in (self.server, self.group_address):
            with self.subTest(address=address):
                frame = raw_exchange(address, [b"ZMS9\x16\x00\x00\x00\x05"])
                self.assertEqual(frame[:4], b"ZMS1", "answered in version 1")
                reply = zms.decode(frame, "incoming")
                self.assertEqual((reply.command, reply.request_id, reply.fields[0]),
                                 (zms.ERROR, 0, 505))
                self.assertIn("version 1", reply.fields[1])

    def test_a_dead_server_is_a_timeout_not_a_hang(self) -> None:
        client = self.client("bob", server="127.0.0.1:1", timeout=0.2, tries=2)
        started = time.monotonic()
        with self.assertRaises(zms.ZmsTimeout) as caught:
            client.list_groups()
        self.assertEqual(caught.exception.code, zms.UNREACHABLE)
        # Not a speed check: 0.2 s times two tries, bounded far above so a busy machine passes;
        # a hang would wait forever.
        self.assertLess(time.monotonic() - started, 60)
        # The second of two message servers answers.
        both = self.client("bob", server=f"127.0.0.1:1,{self.server}", timeout=0.5)
        self.assertEqual([g["name"] for g in both.list_groups()], ["general"])


    def test_search_edit_delete_and_read_positions(self) -> None:
        alice, bob = self.client("alice"), self.client("bob")
        alice.join("general")
        bob.join("general")
        self.assertEqual([alice.send("general", "Lunch at noon?"),
                          bob.send("general", "lunch sounds good"),
                          alice.send("general", "dinner instead"),
                          alice.send("general", "Café au lait, anyone?")], [1, 2, 3, 4])

        # Every word, any case, any accents; newest first; matches are octet ranges.
        hits = bob.search("general", "LUNCH")
        self.assertEqual([(h["seq"], h["sender"], h["text"], h["matches"]) for h in hits],
                         [(2, "bob", "lunch sounds good", [(0, 5)]),
                          (1, "alice", "Lunch at noon?", [(0, 5)])])
        self.assertEqual(hits[0]["address"], self.group_address)
        self.assertEqual([(h["seq"], h["matches"]) for h in bob.search("general", "cafe")],
                         [(4, [(0, 5)])], "'Café' is five octets")
        self.assertEqual([h["seq"] for h in bob.search("general", "noon lunch")], [1])
        self.assertEqual([h["seq"] for h in bob.search("general", "lunch", limit=1)], [2])
        self.assertEqual(bob.search("general", "lunch", limit=0), [])
        self.assertEqual(bob.search("general", "lunch", since="2999-01-01T00:00:00Z"), [])
        # What `zms search --json` prints (oldest first), field for field.
        rust = json_lines(self.cli("search", "general", "lunch", "--json", name="bob"))
        for hit in rust:
            hit["matches"] = [tuple(m) for m in hit["matches"]]
        self.assertEqual(rust, bob.search("general", "lunch")[::-1])
        for query in ("?!", "x" * (zms.MAX_QUERY + 1), "lunch\x1b"):
            with self.subTest(query=query), self.assertRaises(zms.ZmsError) as caught:
                bob.search("general", query)
            self.assertEqual(caught.exception.code, 400)
        with self.assertRaises(zms.ZmsError) as caught:
            self.client("carol").search("general", "lunch")
        self.assertEqual(caught.exception.code, 403)

        # Edits and deletions are new messages, folded by readers; only the sender's own.
        self.assertEqual(alice.edit("general", 3, "lunch and dinner", client_id="e-1"), 5)
        self.assertEqual(alice.edit("general", 3, "lunch and dinner", client_id="e-1"), 5,
                         "a retry under the same client id is stored once")
        with self.assertRaises(zms.ZmsError) as caught:
            bob.edit("general", 1, "brunch at noon?")
        self.assertEqual(caught.exception.code, 403)
        self.assertIn("only its sender (alice)", caught.exception.reason)
        for seq in (5, 99, 0):
            with self.subTest(seq=seq), self.assertRaises(zms.ZmsError) as caught:
                alice.edit("general", seq, "no")
            self.assertEqual(caught.exception.code, 400)
        self.assertEqual(bob.delete("general", 2), 6)
        raw = bob.history("general")
        self.assertEqual([m["text"] for m in raw[4:]],
                         ["\x01edit 3 lunch and dinner", "\x01delete 2"])
        hits = bob.search("general", "lunch")
        self.assertEqual([(h["seq"], h["text"]) for h in hits],
                         [(3, "lunch and dinner"), (1, "Lunch at noon?")])
        self.assertEqual(bob.search("general", "instead"), [], "found by its latest text only")
        self.assertEqual(bob.search("general", "edit"), [], "changes are never hits")

        folded = zms.fold(raw)
        self.assertEqual([(m["seq"], m["text"], m.get("deleted", False), "edited_ts" in m)
                          for m in folded],
                         [(1, "Lunch at noon?", False, False), (2, "", True, False),
                          (3, "lunch and dinner", False, True),
                          (4, "Café au lait, anyone?", False, False)])
        self.assertEqual(folded[2]["edited_ts_ms"], raw[4]["ts_ms"])
        # `zms history --json` folds alike, field for field.
        self.assertEqual(folded, json_lines(self.cli("history", "general", "--json",
                                                     name="bob")))

        # Read positions: only forward, never past the last seq.
        self.assertEqual(bob.unread("general"), (6, 0))
        bob.mark_read("general", 3)
        bob.mark_read("general", 1)
        state = bob.read_state("general")
        self.assertEqual((state.last_seq, state.read_seq, state.unread), (6, 3, 3))
        bob.mark_read("general", 999)
        alice.send("general", "one more")
        self.assertEqual(bob.unread("general"), (7, 6))
        mine = [{"group": "general", "address": self.group_address, "last_seq": 7,
                 "read_seq": 6, "unread": 1}]
        self.assertEqual(bob.my_groups(), mine)
        self.assertEqual(json_lines(self.cli("unread", "--json", name="bob")), mine)
        self.assertEqual(self.client("carol").my_groups(), [])
        # Over all of the user's groups.
        self.assertEqual([(h["group"], h["seq"]) for h in bob.search_all("lunch")],
                         [("general", 3), ("general", 1)])

    def test_the_readme_example_runs_to_the_end(self) -> None:
        """The example of clients/python/README.md (the top README shows the same), run as a
        user runs it: a script of its own, in a directory of its own, with the installed
        package, against this deployment instead of `zms up`'s."""
        example = readme_example(HERE / "README.md")
        self.assertIn(example, (ROOT / "README.md").read_text(), "the same in the top README")
        self.assertIn('"127.0.0.1:5555"', example)
        script = example.replace('"127.0.0.1:5555"', repr(self.server))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["ZMS_HOME"] = str(self.home)
        if self.secure:
            # As README says: pin the key once with `zms list --secure`; from then on the
            # example's Client speaks CURVE without being told, as the zms command does.
            self.cli("list")
        cwd = self.tmp / "user"
        cwd.mkdir()
        if installed_package(env, cwd) is None:
            self.assertFalse(REQUIRED, f"the zms package is not installed in {sys.executable}")
            env["PYTHONPATH"] = str(HERE)
        done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertNotIn("Traceback", done.stderr)
        self.assertRegex(done.stdout, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z alice: "
                                      r"hello from Python\n")


@unittest.skipUnless(SECURE, "needs a secure deployment: the secure run (ZMS_TEST_SECURE=1)")
class Security(Deployment):
    """The Python client's CURVE, as the Rust client does it: the same key files and pins,
    trust on first use, a changed key refused, a name bound to its key."""

    def setUp(self) -> None:
        super().setUp()
        self.group = self.rust_group_server()
        self.group_address = self.group.listening()

    @staticmethod
    def pins(home: Path) -> dict[str, str]:
        lines = (home / "known_servers").read_text().splitlines()
        return dict(line.split() for line in lines if line and not line.startswith("#"))

    def test_first_use_pins_the_key_where_the_rust_client_finds_it(self) -> None:
        plain = self.client("alice", secure=False, timeout=0.3, tries=1)
        with self.assertRaises(zms.ZmsTimeout, msg="plaintext gets nothing from CURVE"):
            plain.list_groups()
        alice = self.client("alice")
        self.assertEqual([g["name"] for g in alice.list_groups()], ["general"])
        self.assertEqual(self.pins(self.home), {self.server: zms.fetch_key(self.server, LIMIT)},
                         "the message server pinned; the group server's key is listed by it")
        alice.join("general")
        alice.send("general", "encrypted")
        # The Rust client finds the pin and uses CURVE without --secure, and so does a Python
        # client without secure=True.
        history = zms_cli("history", "general", "--server", self.server, "--name", "alice",
                          home=self.home).stdout
        self.assertIn("alice: encrypted", history)
        self.assertEqual([m["text"] for m in self.client("alice", secure=False).history(
            "general")], ["encrypted"])
        # One identity for both: `zms whoami` prints the key the Python client made.
        whoami = zms_cli("whoami", "--name", "alice", home=self.home).stdout.strip()
        self.assertEqual(whoami, alice.public_key)
        key_file = self.home / "keys" / "alice.key"
        self.assertEqual(zms.KeyPair.load(str(key_file)).public, alice.public_key)
        self.assertEqual(key_file.stat().st_mode & 0o777, 0o600)
        self.assertNotIn(zms.KeyPair.load(str(key_file)).secret,
                         repr(zms.KeyPair.load(str(key_file))))

    def test_a_changed_key_is_refused_with_a_warning(self) -> None:
        home = self.tmp / "pinned-elsewhere"
        home.mkdir()
        impostor = zms.KeyPair.generate().public
        (home / "known_servers").write_text(f"# mine\n{self.server} {impostor}\n")
        client = self.client("alice", config_dir=str(home), timeout=0.5, tries=1)
        with self.assertRaises(zms.ServerKeyChanged) as caught:
            client.list_groups()
        warning = str(caught.exception)
        for part in ("WARNING", "CHANGED", impostor, str(home / "known_servers")):
            self.assertIn(part, warning)
        self.assertEqual(caught.exception.code, zms.UNAUTHORIZED)
        self.assertEqual(self.pins(home), {self.server: impostor}, "the pin stays")
        rust = zms_cli("list", "--server", self.server, home=home, ok=False)
        self.assertIn("CHANGED", rust.stderr, "the Rust client reads the same file alike")

    def test_a_name_belongs_to_the_first_key_that_uses_it(self) -> None:
        alice = self.client("alice")
        alice.join("general")
        alice.send("general", "mine")
        impostor = self.client("alice", config_dir=str(self.tmp / "another-home"))
        with self.assertRaises(zms.ZmsError) as caught:
            impostor.send("general", "forged")
        self.assertEqual(caught.exception.code, zms.UNAUTHORIZED)
        self.assertIn("another key", caught.exception.reason)
        self.assertEqual([m["text"] for m in alice.history("general")], ["mine"])

    def test_a_given_server_key_needs_no_pin_and_unknown_keys_are_refused(self) -> None:
        key = zms.fetch_key(self.server, LIMIT)
        home = self.tmp / "given"
        carol = self.client("carol", secure=False, server_key=key, config_dir=str(home))
        carol.join("general")
        self.assertEqual(carol.send("general", "hi"), 1)
        self.assertFalse((home / "known_servers").exists(), "given and listed keys: no pins")
        # Without secure=True, a server whose key no one vouches for is refused.
        with self.assertRaises(zms.ZmsSecurityError) as caught:
            carol.join("general@127.0.0.1:1")
        self.assertIn("no key known for 127.0.0.1:1", str(caught.exception))
        with self.assertRaises(ValueError):
            zms.Client(self.server, "carol", server_key="not a key")


@unittest.skipIf(SECURE, "the Python group server has no security: the plaintext run tests it")
class PythonGroupServer(Deployment):
    """The Python group server, registered with the Rust message server, used by Rust clients."""

    def test_rust_clients_list_join_send_history_and_tail(self) -> None:
        group = self.python_group_server("--group", "general", "random")
        address = group.listening()
        self.assertEqual(json_lines(self.cli("list", "--json")),
                         [{"name": "general", "address": address},
                          {"name": "random", "address": address}])
        joined = json_lines(self.cli("join", "general", "--json", name="alice"))
        self.assertEqual(joined, [{"address": address, "group": "general", "last_seq": 0}])
        self.cli("join", f"random@{address}", name="alice")
        self.cli("join", "general", name="bob")
        sent = json_lines(self.cli("send", "general", "hello, python", "--json", name="alice"))
        self.assertEqual(sent[0]["seq"], 1)
        history = json_lines(self.cli("history", "general", "--json", name="bob"))
        self.assertEqual([(m["seq"], m["sender"], m["text"], m["address"]) for m in history],
                         [(1, "alice", "hello, python", address)])
        self.assertEqual(json_lines(self.cli("history", "general", "--json", "--since",
                                             "2999-01-01T00:00:00Z", name="bob")), [])
        members = json_lines(self.cli("members", "general", "--json", name="alice"))
        self.assertEqual([m["name"] for m in members], ["alice", "bob"])
        not_member = self.cli("send", "random", "x", name="bob", ok=False)
        self.assertNotEqual(not_member.returncode, 0)
        self.assertIn("not a member", not_member.stderr)

        # zms tail: send until it shows one (it has subscribed), then everything after.
        tail = self.spawn([ZMS_BIN, "tail", "general", "--server", self.server, "--name",
                           "bob", "--json"])
        first = None
        for i in range(50):
            self.cli("send", "general", f"m{i}", name="alice")
            try:
                first = json.loads(tail.lines.get(timeout=0.3))
                break
            except queue.Empty:
                continue
        self.assertIsNotNone(first, "tail printed a message")
        assert first is not None
        self.cli("send", "general", name="alice", stdin="after 1\nafter 2\n")
        seen = [first]
        while seen[-1]["text"] != "after 2":
            seen.append(json.loads(tail.line()))
        seqs = [m["seq"] for m in seen]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "in order, once")
        self.assertEqual(seen[-2:], json_lines(self.cli("history", "general", "--json",
                                                        "--limit", "2", name="bob")))

        # The Python client on the Python server, and the Rust client's view of its messages.
        carol = self.client("carol")
        carol.join("general")
        carol.send("general", "from carol")
        self.assertEqual(carol.history("general"),
                         json_lines(self.cli("history", "general", "--json", name="bob")))
        self.assertIn("left general@", self.cli("leave", "general", name="alice").stdout)

        # SIGTERM: the group server unregisters before it exits.
        group.signal(signal.SIGTERM)
        self.assertEqual(group.wait(), 0)
        self.assertEqual(json_lines(self.cli("list", "--json")), [])

    def test_rust_clients_talk_directly_on_the_python_group_server(self) -> None:
        address = self.python_group_server("--group", "general").listening()
        self.assertIn("sent @alice@bob@", self.cli("dm", "bob", "hello bob", name="alice").stdout)
        read = json_lines(self.cli("history", "@alice", "--json", name="bob"))
        self.assertEqual([(m["address"], m["text"]) for m in read], [(address, "hello bob")])
        refused = self.cli("join", f"@alice@bob@{address}", name="carol", ok=False)
        self.assertIn("is the conversation of alice and bob", refused.stderr)

    def test_the_python_group_server_follows_the_worked_examples(self) -> None:
        """PROTOCOL.md's example session, frame for frame, as tests/wire.rs runs it against the
        Rust servers: dir-* to the Rust message server, group-* to the Python group server
        (in this process, announcing 127.0.0.1:5556, registered before the session starts)."""
        server = group_server.GroupServer(zmq.Context.instance(), "127.0.0.1:0", [self.server],
                                          ["general"], advertise="127.0.0.1:5556")
        registered, stop = threading.Event(), threading.Event()
        thread = threading.Thread(target=server.serve, daemon=True,
                                  kwargs={"stop": stop, "on_listening": lambda _: registered.set()})
        thread.start()
        self.addCleanup(thread.join, LIMIT)
        self.addCleanup(stop.set)
        self.assertTrue(registered.wait(LIMIT), "registered with the message server")

        sockets: dict[str, zmq.Socket[bytes]] = {}
        for kind, address in (("dir", self.server), ("group", server.bound)):
            sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{address}")
            self.addCleanup(sock.close, 0)
            sockets[kind] = sock
        stamps: dict[int, set[int]] = {}  # each seq's timestamps, wherever it was shown
        examples = parse_examples(PROTOCOL.read_text())
        self.assertGreaterEqual(len(examples), 25)
        for name, frames in examples:
            if name == "group-history-trimmed":
                continue  # needs a store retention has trimmed; its bytes are checked above
            sock = sockets[name.split("-")[0]]
            parts = [octets for direction, octets, _ in frames if direction.startswith("C")]
            sock.send_multipart(parts)
            expected = [(octets, varies) for kind, octets, varies in frames if kind == "S"]
            for _ in range(len(expected)):
                self.assertTrue(sock.poll(int(LIMIT * 1000)), f"{name}: a reply in time")
                got = sock.recv()
                match = next((e for e in expected if matches(e, got)), None)
                self.assertIsNotNone(match, f"{name}: unexpected {got!r}; wanted one of "
                                            f"{[e[0] for e in expected]}")
                expected.remove(match)  # type: ignore[arg-type]
                frame = zms.decode(got, "incoming")
                shown: list[tuple[int, int]] = []
                if frame.command == zms.ACK:
                    shown = [(frame.fields[0], frame.fields[1])]
                elif frame.command == zms.ACKS:
                    shown = [(seq, ts) for seq, ts, _ in frame.fields[0]]
                elif frame.command == zms.MSG:
                    shown = [frame.fields[1][:2]]
                elif frame.command in (zms.MSGS, zms.MESSAGES):
                    shown = [m[:2] for m in frame.fields[-1]]
                elif frame.command == zms.FOUND:
                    shown = [hit[:2] for hit in frame.fields[1]]
                elif frame.command == zms.PONG and name.startswith("group-"):
                    self.assertNotEqual(frame.fields[0], 0, "a group server's epoch is not 0")
                for seq, ts in shown:
                    stamps.setdefault(seq, set()).add(ts)
        # The session's three messages: wherever each was shown (ACK, ACKS, MSG, MSGS, HISTORY,
        # FOUND) it had one timestamp, and it is now.
        self.assertEqual(sorted(stamps), [1, 2, 3], stamps)
        for seq, seen in stamps.items():
            self.assertEqual(len(seen), 1, f"seq {seq}: {seen}")
            self.assertLess(abs(seen.pop() - time.time() * 1000), 60_000)
        # Nothing more was sent: the next reply on each socket answers the next request.
        for sock in sockets.values():
            sock.send(zms.encode(zms.PING, 99))
            self.assertTrue(sock.poll(int(LIMIT * 1000)))
            self.assertEqual(zms.decode(sock.recv(), "incoming").request_id, 99)

    def test_rust_clients_search_edit_and_read_on_the_python_group_server(self) -> None:
        address = self.python_group_server("--group", "general", "random").listening()
        for user in ("alice", "bob"):
            self.cli("join", "general", name=user)
        self.cli("send", "general", "Lunch at noon?", name="alice")
        self.cli("send", "general", "lunch sounds good", name="bob")
        self.cli("send", "general", "dinner instead", name="alice")

        # A subscribed connection is pushed the changes as it is any message.
        watcher: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        watcher.setsockopt(zmq.LINGER, 0)
        watcher.connect(f"tcp://{address}")
        self.addCleanup(watcher.close, 0)
        watcher.send(zms.encode(zms.SUBSCRIBE, 1, "general", "bob"))
        self.assertTrue(watcher.poll(int(LIMIT * 1000)))
        self.assertEqual(zms.decode(watcher.recv(), "incoming").fields, ["general", 3])

        edited = json_lines(self.cli("edit", "general", "3", "lunch and dinner", "--json",
                                     name="alice"))
        self.assertEqual(edited, [{"group": "general", "address": address, "seq": 3,
                                   "edited": 4}])
        refused = self.cli("edit", "general", "1", "brunch", name="bob", ok=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("only its sender (alice) or an operator may change message 1",
                      refused.stderr)
        deleted = json_lines(self.cli("delete", "general", "2", "--json", name="bob"))
        self.assertEqual(deleted[0]["deleted"], 5)
        self.assertTrue(watcher.poll(int(LIMIT * 1000)))
        pushed = zms.decode(watcher.recv(), "incoming")
        self.assertEqual((pushed.command, pushed.fields[1][0], pushed.fields[1][2:]),
                         (zms.MSG, 4, ("alice", "\x01edit 3 lunch and dinner")))
        self.assertTrue(watcher.poll(int(LIMIT * 1000)))
        self.assertEqual(zms.decode(watcher.recv(), "incoming").fields[1][3], "\x01delete 2")

        # zms search: the latest texts, deleted ones left out, oldest first as history reads.
        found = json_lines(self.cli("search", "general", "LUNCH", "--json", name="bob"))
        self.assertEqual([(h["seq"], h["text"], h["matches"]) for h in found],
                         [(1, "Lunch at noon?", [[0, 5]]), (3, "lunch and dinner", [[0, 5]])])
        self.assertEqual(json_lines(self.cli("search", "lunch", "--json", name="bob")), found)
        self.assertEqual(json_lines(self.cli("search", "general", "instead", "--json",
                                             name="bob")), [])
        # zms history folds the changes; the Python client's fold agrees.
        history = json_lines(self.cli("history", "general", "--json", name="bob"))
        self.assertEqual([(m["seq"], m["text"], m.get("deleted", False), "edited_ts" in m)
                          for m in history],
                         [(1, "Lunch at noon?", False, False), (2, "", True, False),
                          (3, "lunch and dinner", False, True)])
        bob = self.client("bob")
        self.assertEqual(zms.fold(bob.history("general")), history)

        # zms unread: general only (bob is no member of random), then after a READ.
        self.assertEqual(json_lines(self.cli("unread", "--json", name="bob")),
                         [{"group": "general", "address": address, "last_seq": 5,
                           "read_seq": 0, "unread": 5}])
        bob.mark_read("general", 4)
        bob.mark_read("general", 2)
        self.assertEqual(json_lines(self.cli("unread", "--json", name="bob"))[0]["read_seq"], 4)
        bob.mark_read("general", 99)
        self.cli("send", "general", "later", name="alice")
        self.assertEqual(bob.unread("general"), (6, 5))

        # The Python client on the Python server: every check the protocol names.
        alice = self.client("alice")
        self.assertEqual(alice.send("general", "Café crème à midi"), 7)
        self.assertEqual([(h["seq"], h["matches"]) for h in alice.search("general", "CAFE creme")],
                         [(7, [(0, 5), (6, 12)])])
        self.assertEqual(alice.edit("general", 7, "Café noir", client_id="e1"), 8)
        self.assertEqual(alice.edit("general", 7, "Café noir", client_id="e1"), 8)
        self.assertEqual([h["text"] for h in alice.search("general", "café")], ["Café noir"])
        self.assertEqual(alice.search("general", "creme"), [])
        self.assertEqual(alice.delete("general", 7), 9)
        self.assertEqual(alice.search("general", "cafe"), [])
        self.assertEqual(alice.edit("general", 7, "too late"), 10, "stored, but folded away")
        self.assertEqual(zms.fold(alice.history("general"))[-1],
                         {**alice.history("general")[6], "text": "", "deleted": True,
                          "edited_ts": alice.history("general")[7]["ts"],
                          "edited_ts_ms": alice.history("general")[7]["ts_ms"]})
        cases: list[tuple[Callable[[], object], int]] = [
            (lambda: alice.edit("general", 8, "x"), 400),  # a change itself
            (lambda: alice.edit("general", 11, "x"), 400),  # not kept
            (lambda: alice.delete("general", 0), 400),
            (lambda: alice.edit("general", 1, ""), 400),  # SEND's rules
            (lambda: alice.edit("general", 1, "a\x1bb"), 400),
            (lambda: alice.edit("general", 1, "x" * (zms.MAX_TEXT + 1)), 413),
            (lambda: bob.delete("general", 1), 403),
            (lambda: alice.search("general", "--"), 400),
            (lambda: alice.search("general", "é" * 129), 400),
            (lambda: alice.search("general", "a\tb"), 400),
            (lambda: alice.search("random", "a"), 403),
            (lambda: alice.unread("random"), 403),
            (lambda: alice.mark_read("random", 1), 403),
        ]
        for i, (call, code) in enumerate(cases):
            with self.subTest(case=i), self.assertRaises(zms.ZmsError) as caught:
                call()
            self.assertEqual(caught.exception.code, code, caught.exception.reason)
        self.assertEqual(len(alice.search("general", "é" * 128)), 0, "MAX_QUERY octets pass")
        self.assertEqual(alice.history("general")[-1]["seq"], 10, "nothing refused was stored")
        # At most SEARCH_MAX hits, newest first.
        alice.send_many("general", [f"bulk {i}" for i in range(zms.SEARCH_MAX + 5)])
        hits = alice.search("general", "bulk", limit=1000)
        self.assertEqual(len(hits), zms.SEARCH_MAX)
        self.assertEqual(hits[0]["text"], f"bulk {zms.SEARCH_MAX + 4}")
        since = hits[9]["ts_ms"]
        self.assertTrue(all(h["ts_ms"] >= since for h in alice.search("general", "bulk",
                                                                     since=since)))

    def test_text_limit_and_client_ids_on_the_python_group_server(self) -> None:
        address = self.python_group_server("--group", "general").listening()
        alice = self.client("alice")
        alice.join(f"general@{address}")
        with self.assertRaises(zms.ZmsError) as caught:
            alice.send("general", "x" * (zms.MAX_TEXT + 1))
        self.assertEqual(caught.exception.code, 413)
        self.assertEqual(alice.send("general", "é" * (zms.MAX_TEXT // 2)), 1)
        # An empty client id turns de-duplication off; a repeated one is stored once.
        self.assertEqual([alice.send("general", "again", client_id="") for _ in range(2)], [2, 3])
        self.assertEqual([alice.send("general", "once", client_id="c") for _ in range(2)], [4, 4])
        self.assertEqual([m["seq"] for m in alice.history("general")], [1, 2, 3, 4])
        self.assertEqual([m["text"] for m in alice.history("general", limit=2)], ["again", "once"])

    def test_the_python_group_server_refuses_empty_texts_controls_and_disguised_names(self) -> None:
        address = self.python_group_server("--group", "general").listening()
        self.client("alice").join(f"general@{address}")
        for text in ["", "  \t", "hi\r\x1b[K07:42:00 bob: paste it", "\x9b2J"]:
            frame = zms.encode(zms.SEND, 5, "general", "alice", "", text)
            reply = zms.decode(raw_exchange(address, [frame]), "incoming")
            self.assertEqual((reply.command, reply.fields[0]), (zms.ERROR, 400), repr(text))
        for name in ["\uff41\uff4c\uff49\uff43\uff45", "bob\u202e", "b\u200bob"]:
            frame = zms.encode(zms.JOIN, 6, "general", name)
            reply = zms.decode(raw_exchange(address, [frame]), "incoming")
            self.assertEqual((reply.command, reply.fields[0]), (zms.ERROR, 400), repr(name))

    def test_an_unknown_version_gets_error_505(self) -> None:
        group = self.python_group_server("--group", "general")
        address = group.listening()
        frame = raw_exchange(address, [b"ZMS2\x04\x00\x00\x00\x05"])
        reply = zms.decode(frame, "incoming")
        self.assertEqual(frame[:4], b"ZMS1")
        self.assertEqual((reply.command, reply.request_id, reply.fields[0]), (zms.ERROR, 0, 505))
        self.assertIn("version 1", reply.fields[1])
        reply = zms.decode(raw_exchange(address, [b"\x00garbage"]), "incoming")
        self.assertEqual((reply.command, reply.request_id, reply.fields[0]), (zms.ERROR, 0, 400))


@unittest.skipIf(SECURE, "needs no deployment: the plaintext run tests it")
class Codec(unittest.TestCase):
    """The zms package's codec against every frame of PROTOCOL.md's worked examples, no servers."""

    def test_every_example_frame_round_trips_or_fails_as_documented(self) -> None:
        for name, frames in parse_examples(PROTOCOL.read_text()):
            with self.subTest(example=name):
                for direction, octets, _ in frames:
                    if direction == "C+" or any(d == "C+" for d, _, _ in frames):
                        continue  # one frame of a multi-frame message: tested live
                    if direction == "S":
                        frame = zms.decode(octets, "incoming")
                        self.assertEqual(zms.encode(frame.command, frame.request_id,
                                                    *frame.fields), octets)
                        continue
                    try:
                        frame = zms.decode(octets, "request")
                    except zms.DecodeError as err:
                        reply = [o for d, o, _ in frames if d == "S"]
                        self.assertEqual(
                            zms.encode(zms.ERROR, err.request_id, err.code, err.reason), reply[0])
                        continue
                    self.assertEqual(zms.encode(frame.command, frame.request_id, *frame.fields),
                                     octets)

    def test_commands_table_matches_the_module(self) -> None:
        text = PROTOCOL.read_text()
        table = text.split("<!-- zms-table: commands -->", 1)[1].split("\n\n", 1)[0]
        rows = re.findall(r"^\| `0x([0-9A-F]{2})` \| `(\w+)` \| (\w+) \|", table, re.M)
        self.assertEqual(len(rows), len(zms.NAMES))
        for byte, name, kind in rows:
            command = int(byte, 16)
            self.assertEqual(zms.NAMES[command], name)
            schemas = {"request": zms.REQUESTS, "reply": zms.REPLIES, "event": zms.EVENTS}
            self.assertIn(command, schemas[kind])

    def test_changes_read_back_and_fold_into_their_originals(self) -> None:
        """As src/protocol/edit.rs's tests: what is a change, and what fold makes of them."""
        self.assertEqual(zms.parse_change(zms.edit_text(12, "new words")),
                         zms.Change(12, "new words"))
        self.assertEqual(zms.parse_change(zms.delete_text(3)), zms.Change(3, None))
        for plain in ["edit 12 x", "\x01edit x y", "\x01edit 012 y", "\x01delete",
                      "\x01delete -1", "\x01delete 3 more", "\x01other 3", "\x01edit 12",
                      "\x01edit 99999999999999999999999 y", "\x01delete \u0663"]:
            self.assertIsNone(zms.parse_change(plain), repr(plain))

        def msg(seq: int, text: str, group: str = "general") -> dict[str, Any]:
            return {"group": group, "seq": seq, "ts": zms.format_ts(seq * 10), "ts_ms": seq * 10,
                    "sender": "alice", "text": text}

        messages = [msg(1, "hello"), msg(2, "wrold"), msg(3, zms.edit_text(2, "world")),
                    msg(4, "oops"), msg(5, zms.delete_text(4)), msg(6, zms.edit_text(4, "late")),
                    msg(7, zms.edit_text(99, "not here")), msg(8, zms.edit_text(2, "world!")),
                    msg(9, zms.delete_text(1), group="random")]
        shown = zms.fold(messages)
        self.assertEqual([(m["seq"], m["text"], m.get("edited_ts_ms"), m.get("deleted", False))
                          for m in shown],
                         [(1, "hello", None, False), (2, "world!", 80, False),
                          (4, "", None, True)])
        self.assertEqual(shown[1]["edited_ts"], "1970-01-01T00:00:00.080Z")
        self.assertEqual(messages[1]["text"], "wrold", "the messages given are not changed")
        self.assertEqual(zms.ReadState(7, 3).unread, 4)

    def test_names_and_times(self) -> None:
        self.assertIsNone(zms.user_name_error("é" * 32))
        self.assertIsNotNone(zms.user_name_error("é" * 33))
        for bad in ("a b", "a\u00a0b", "a@b", "a\x7fb", "a\x85b", ""):
            self.assertIsNotNone(zms.user_name_error(bad), bad)
        self.assertIsNone(zms.group_name_error("Rust-1.x_y"))
        self.assertIsNotNone(zms.group_name_error("é"))
        self.assertEqual(zms.format_ts(1795561515543), "2026-11-24T23:05:15.543Z")
        self.assertEqual(zms.parse_time("2026-11-24T23:05:15.543Z"), 1795561515543)
        self.assertEqual(zms.parse_time("2026-11-25T00:05:15.543+01:00"), 1795561515543)

    def test_times_as_people_write_them(self) -> None:
        """The forms of `zms history --since`, with local time fixed at UTC-5 (no DST)."""
        saved = os.environ.get("TZ")
        os.environ["TZ"] = "EST+5"
        time.tzset()

        def restore() -> None:
            if saved is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = saved
            time.tzset()

        self.addCleanup(restore)
        utc_midnight = 1796256000000  # 2026-12-03T00:00:00Z
        local_midnight = utc_midnight + 5 * 3600_000
        now = 1796300000000
        cases: list[tuple[Any, int]] = [
            # Unix time: below 100,000,000,000 seconds, at or above milliseconds.
            (1796256000, utc_midnight),
            ("1796256000", utc_midnight),
            (1796256000.25, utc_midnight + 250),
            (99_999_999_999, 99_999_999_999_000),
            (100_000_000_000, 100_000_000_000),
            ("1796256000000", utc_midnight),
            (0, 0),
            # Dates and date-times without a zone are local.
            ("2026-12-03", local_midnight),
            (datetime.date(2026, 12, 3), local_midnight),
            ("2026-12-03T14:30", local_midnight + 14 * 3600_000 + 30 * 60_000),
            ("2026-12-03 14:30:05.25", local_midnight + 52205_250),
            (datetime.datetime(2026, 12, 3, 1, 0), local_midnight + 3600_000),
            # RFC 3339 and aware datetimes are what they say.
            ("2026-12-03T00:00:00Z", utc_midnight),
            ("2026-12-03T01:00:00+01:00", utc_midnight),
            ("2026-12-02T19:00:00-0500", utc_midnight),
            (datetime.datetime(2026, 12, 3, tzinfo=datetime.timezone.utc), utc_midnight),
            # Durations are before now.
            ("90s", now - 90_000),
            ("10m", now - 600_000),
            ("2h", now - 7200_000),
            ("1d", now - 86400_000),
            ("1h 30m", now - 5400_000),
            (datetime.timedelta(minutes=10), now - 600_000),
        ]
        for when, expected in cases:
            with self.subTest(when=when):
                self.assertEqual(zms.parse_time(when, now_ms=now), expected)
        for bad in ("", "yesterday", "10 parsecs", "2026-13-01", "2026-02-30", "-5", "12:00",
                    -1, float("nan")):
            with self.subTest(bad=bad), self.assertRaises(ValueError) as caught:
                zms.parse_time(bad, now_ms=now)
            self.assertIn("bad time", str(caught.exception))
        self.assertIn("unix seconds or milliseconds", str(self._error("soon")))
        for wrong_type in (None, True, [1]):
            with self.subTest(wrong_type=wrong_type), self.assertRaises(TypeError):
                zms.parse_time(wrong_type)  # type: ignore[arg-type]

    @staticmethod
    def _error(text: str) -> ValueError:
        try:
            zms.parse_time(text)
        except ValueError as err:
            return err
        raise AssertionError(f"{text!r} parsed")


class ScriptedServer:
    """A ROUTER driven step by step by the test thread, to check a client's rules exactly."""

    def __init__(self, test: unittest.TestCase) -> None:
        self.test = test
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        port: str = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        self.address = f"127.0.0.1:{port}"
        self.peer = b""
        self.epoch = 11
        self.last_seq = 0
        test.addCleanup(self.sock.close, 0)

    def receive(self) -> tuple[bytes, zms.Frame]:
        self.test.assertTrue(self.sock.poll(int(LIMIT * 1000)), "a request in time")
        peer, data = self.sock.recv_multipart()
        return peer, zms.decode(data, "request")

    def expect(self, command: int, answer_pings: bool = True) -> zms.Frame:
        """The next request that is not a PING (PINGs get an uneventful PONG) must be
        ``command``."""
        for _ in range(100):
            self.peer, frame = self.receive()
            if frame.command == zms.PING and answer_pings and command != zms.PING:
                self.pong(frame)
                continue
            self.test.assertEqual(frame.name, zms.NAMES[command])
            return frame
        raise AssertionError("only PINGs")

    def reply(self, frame: zms.Frame, command: int, *fields: Any) -> None:
        self.sock.send_multipart([self.peer, zms.encode(command, frame.request_id, *fields)])

    def pong(self, frame: zms.Frame, groups: list[tuple[str, int]] | None = None) -> None:
        listed = [("general", self.last_seq)] if groups is None else groups
        self.reply(frame, zms.PONG, self.epoch, listed)

    def push(self, seq: int, text: str = "") -> None:
        message = (seq, 1_700_000_000_000 + seq, "alice", text or f"m{seq}")
        self.sock.send_multipart([self.peer, zms.encode(zms.MSG, None, "general", message)])

    def push_batch(self, seqs: range) -> None:
        messages = [(s, 1_700_000_000_000 + s, "alice", f"m{s}") for s in seqs]
        self.sock.send_multipart([self.peer, zms.encode(zms.MSGS, None, "general", messages)])

    def page(self, frame: zms.Frame, seqs: range) -> None:
        messages = [(s, 1_700_000_000_000 + s, "alice", f"m{s}") for s in seqs]
        self.reply(frame, zms.MESSAGES, "general", self.last_seq, messages)


@unittest.skipIf(SECURE, "a scripted server: the plaintext run tests it")
class ClientRules(unittest.TestCase):
    """zms.Client against a scripted server: Lazy Pirate retries and delivery rules 1-5."""

    def test_a_send_is_retried_as_the_same_frame_on_a_new_connection(self) -> None:
        server = ScriptedServer(self)
        client = zms.Client("127.0.0.1:1", "bob", timeout=0.5, tries=3)
        self.addCleanup(client.close)
        result: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=lambda: result.put(client.send(f"general@{server.address}", "hi")),
                         daemon=True).start()
        first_peer, first = server.receive()
        second_peer, second = server.receive()  # the first went unanswered
        self.assertEqual(first.name, "SEND")
        self.assertEqual((first.request_id, first.fields), (second.request_id, second.fields))
        self.assertNotEqual(first_peer, second_peer, "a new socket for the retry")
        self.assertNotEqual(first.fields[2], "", "a client id, for de-duplication")
        server.peer = second_peer
        server.reply(second, zms.ACK, 7, 1_700_000_000_000, True)
        self.assertEqual(result.get(timeout=LIMIT), 7)

    def test_a_send_over_the_rate_limit_waits_and_goes_again_with_the_same_id(self) -> None:
        server = ScriptedServer(self)
        client = zms.Client("127.0.0.1:1", "bob", timeout=LIMIT)
        self.addCleanup(client.close)
        result: queue.Queue[Any] = queue.Queue()

        def send() -> None:
            try:
                result.put(client.send(f"general@{server.address}", "hi"))
            except BaseException as err:
                result.put(err)

        threading.Thread(target=send, daemon=True).start()
        first = server.expect(zms.SEND)
        server.reply(first, zms.ERROR, 429, "send fewer at a time")
        again = server.expect(zms.SEND)
        self.assertEqual(again.fields, first.fields, "the same client id and text")
        server.reply(again, zms.ACK, 5, 1_700_000_000_000, False)
        self.assertEqual(result.get(timeout=LIMIT), 5)
        # Past its patience the client gives up and says why.
        with unittest.mock.patch.object(zms, "RATE_LIMIT_PATIENCE", 0.0):
            threading.Thread(target=send, daemon=True).start()
            server.reply(server.expect(zms.SEND), zms.ERROR, 429, "send fewer at a time")
            err = result.get(timeout=LIMIT)
        self.assertIsInstance(err, zms.ZmsError)
        self.assertEqual(err.code, 429)

    def test_a_batch_refused_for_its_rate_goes_again_as_single_sends(self) -> None:
        server = ScriptedServer(self)
        client = zms.Client("127.0.0.1:1", "bob", timeout=LIMIT)
        self.addCleanup(client.close)
        result: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=lambda: result.put(
            client.send_many(f"general@{server.address}", ["a", "b"])), daemon=True).start()
        batch = server.expect(zms.SENDS)
        self.assertEqual([text for _id, text in batch.fields[2]], ["a", "b"])
        server.reply(batch, zms.ERROR, 429, "send fewer at a time")
        for seq, (client_id, text) in enumerate(batch.fields[2], start=8):
            single = server.expect(zms.SEND)
            self.assertEqual(single.fields[2:], [client_id, text], "the same client id")
            server.reply(single, zms.ACK, seq, 1_700_000_000_000, False)
        self.assertEqual(result.get(timeout=LIMIT), [8, 9])

    def test_messages_drops_repeats_fills_holes_and_recovers_subscriptions(self) -> None:
        server = ScriptedServer(self)
        client = zms.Client("127.0.0.1:1", "bob", timeout=1.0)
        self.addCleanup(client.close)
        got: queue.Queue[Any] = queue.Queue()

        def consume() -> None:
            try:
                for message in client.messages(f"general@{server.address}", timeout=LIMIT):
                    got.put(message["seq"])
            except BaseException as err:
                got.put(err)

        threading.Thread(target=consume, daemon=True).start()

        def delivered(*seqs: int) -> None:
            for seq in seqs:
                item = got.get(timeout=LIMIT)
                if isinstance(item, BaseException):
                    raise item
                self.assertEqual(item, seq)

        # Rule 1: subscribe first; everything after JOINED's last seq comes.
        server.reply(server.expect(zms.SUBSCRIBE), zms.JOINED, "general", 0)
        server.last_seq = 1
        server.push(1)
        delivered(1)
        # Rule 3: a hole (MSG 3 after 1) is filled from HISTORY after the last delivered.
        server.last_seq = 3
        server.push(3)
        history = server.expect(zms.HISTORY)
        self.assertEqual(history.fields[2:4], [1, 0])
        server.page(history, range(2, 4))
        delivered(2, 3)
        # Rule 2: a repeat is dropped.
        server.last_seq = 4
        server.push(3)
        server.push(4)
        delivered(4)
        # Rule 4: a PONG showing a later last seq (a lost last push) is a hole too.
        server.last_seq = 5
        server.pong(server.expect(zms.PING, answer_pings=False))
        history = server.expect(zms.HISTORY)
        self.assertEqual(history.fields[2], 4)
        server.page(history, range(5, 6))
        delivered(5)
        # Rule 4: a PONG without the group: subscribe again, fill up to JOINED's last seq.
        server.last_seq = 6
        server.pong(server.expect(zms.PING, answer_pings=False), groups=[])
        server.reply(server.expect(zms.SUBSCRIBE), zms.JOINED, "general", 6)
        history = server.expect(zms.HISTORY)
        self.assertEqual(history.fields[2], 5)
        server.page(history, range(6, 7))
        delivered(6)
        # Rule 5: a new epoch means a restart, though the PONG lists the group; a store that
        # lost messages (JOINED below the last delivered) is followed from its last seq.
        server.epoch = 12
        server.pong(server.expect(zms.PING, answer_pings=False))
        server.last_seq = 2
        server.reply(server.expect(zms.SUBSCRIBE), zms.JOINED, "general", 2)
        server.last_seq = 3
        server.push(3, "after the loss")
        delivered(3)
        # A MSGS batch is its messages, each a MSG: the repeat (3) dropped, the rest in order.
        server.last_seq = 5
        server.push_batch(range(3, 6))
        delivered(4, 5)


class Package(unittest.TestCase):
    """`pip install ./clients/python` installs this source, typed."""

    @unittest.skipIf(SECURE, "no deployment: the plaintext run tests it")
    def test_the_installed_package_is_this_source(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with tempfile.TemporaryDirectory() as cwd:
            found = installed_package(env, Path(cwd))
        if found is None:
            self.assertFalse(REQUIRED, f"the zms package is not installed in {sys.executable}")
            self.skipTest(f"the zms package is not installed in {sys.executable}")
        assert found is not None
        where, version, typed = found
        for module in ("__init__.py", "group_server.py"):
            self.assertEqual((where / module).read_bytes(), (HERE / "zms" / module).read_bytes(),
                             f"{where / module} is not this source's: pip install it again")
        project = (HERE / "pyproject.toml").read_text()
        self.assertIn(f'\nversion = "{version}"\n', project)
        self.assertTrue(typed, "py.typed is installed (PEP 561)")


def installed_package(env: dict[str, str], cwd: Path) -> tuple[Path, str, bool] | None:
    """Where the interpreter finds the installed zms package, run with ``env`` in ``cwd``: its
    directory, its version and whether it has py.typed; None if it finds none."""
    probe = ("import importlib.metadata as m, importlib.resources as r, pathlib, zms; "
             "print(pathlib.Path(zms.__file__).parent); print(m.version('zms')); "
             "print(r.files('zms').joinpath('py.typed').is_file())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    if done.returncode != 0:
        return None
    where, version, typed = done.stdout.split("\n")[:3]
    return Path(where), version, typed == "True"


def readme_example(path: Path) -> str:
    """The first ``python`` code block of a README."""
    match = re.search(r"^```python\n(.*?)^```", path.read_text(), re.M | re.S)
    assert match, f"no python example in {path}"
    return match.group(1)


def matches(expected: tuple[bytes, list[bool]], got: bytes) -> bool:
    octets, varies = expected
    return len(octets) == len(got) and all(v or a == b for a, b, v in zip(octets, got, varies))


def parse_examples(text: str) -> list[tuple[str, list[tuple[str, bytes, list[bool]]]]]:
    """The ``zms-example`` blocks of PROTOCOL.md: (name, [(direction, bytes, varies)])."""
    examples = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```zms-example (\S+)", lines[i])
        i += 1
        if not match:
            continue
        frames: list[tuple[str, bytes, list[bool]]] = []
        while not lines[i].startswith("```"):
            line = lines[i]
            head = re.match(r"^(C\+|C|S): (b\".*\")$", line)
            if head:
                literal = ast.literal_eval(head.group(2))
                octets, varies = parse_hex(lines[i + 1])
                assert literal == octets, f"line {i + 1}: the two forms differ"
                frames.append((head.group(1), literal, varies))
                i += 1
            i += 1
        examples.append((match.group(1), frames))
    return examples


def parse_hex(line: str) -> tuple[bytes, list[bool]]:
    digits, varies, inside = [], [], False
    for ch in line.strip():
        if ch == "[":
            inside = True
        elif ch == "]":
            inside = False
        elif ch in "0123456789abcdefABCDEF":
            digits.append(ch)
            if len(digits) % 2 == 0:
                varies.append(inside)
    return bytes.fromhex("".join(digits)), varies


if __name__ == "__main__":
    unittest.main()
