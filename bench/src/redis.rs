//! `redis`: the ingest workload against a Redis server: `XADD`s into one stream from several
//! pipelining connections, through a small client of RESP (the Redis protocol) written here on
//! `std::net::TcpStream`.
//!
//! Why our own client rather than `redis-benchmark` or a crate: the Redis figures then come from
//! the same process, clock, payload, threads and timing code as zms's own `ingest`, so the
//! comparison measures the servers, not two harnesses. The protocol subset is small: commands go
//! out as arrays of bulk strings; replies come back as simple strings, errors, integers or bulk
//! strings (RESP2, the default until a client says `HELLO 3`).
//!
//! What the workload means here:
//! - ingest: `--senders` threads, each on its own connection, each keeping up to `--window`
//!   `XADD <stream> * t <payload>` in flight; a message counts once its reply (the new entry's
//!   id) arrives, as zms counts a send once its ACK says it is stored. How durable "stored" is
//!   depends on how the server was started (`scripts/bench_compare.py` uses an append-only
//!   file written every second, which is comparable to zms's write-ahead log without fsync).
//!   The stream is deleted before the run and its length is reported after it.

use std::ops::Range;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::stats::per_s;
use super::tcp::Conn;
use super::workloads::{seconds, send_shares};
use super::{progress, BenchArgs};
use zms::{Error, Result};

/// The stream the workload writes. One fixed key, deleted before each run, so repeated runs
/// against one server do not pile up entries (two benches at once on one server would collide).
const STREAM: &[u8] = b"zmsbench:ingest";
/// The longest status, error or length line accepted. Redis's own are well under 1 KiB; a
/// longer line means the peer is not speaking RESP.
const MAX_LINE: usize = 64 * 1024;
/// The largest bulk string accepted. The bench's replies are entry ids of a few dozen bytes,
/// so this only bounds the read buffer against a confused peer.
const MAX_BULK: usize = 1024 * 1024;

/// One reply. Ranges index the buffer the reply was parsed from ([`Redis::slice`] until the
/// next read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status line.
    Simple(Range<usize>),
    /// `-ERR …`: the server refused the command; the range holds its message.
    Error(Range<usize>),
    /// `:42`.
    Integer(i64),
    /// `$5 hello`, or `$-1` (nil) as `None`.
    Bulk(Option<Range<usize>>),
}

/// Appends a command to `out` as RESP, an array of bulk strings.
///
/// # Format
/// ```text
/// *3\r\n$4\r\nXLEN\r\n…      count of arguments, then each as $<length>\r\n<bytes>\r\n
/// ```
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `<kind><n>\r\n` without going through `fmt`.
fn push_header(out: &mut Vec<u8>, kind: u8, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push(kind);
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Parses one reply from the front of `buf`: the reply and the bytes it took, or `None` while
/// `buf` holds only part of one.
///
/// # Errors
/// [`Error::Protocol`] for bytes that are not a RESP reply this client reads (arrays included:
/// none of its commands returns one).
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>> {
    let Some(nl) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        if buf.len() >= MAX_LINE {
            return Err(bad("a line longer than 64 KiB", buf));
        }
        return Ok(None);
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        return Err(bad(
            "a line without a type or not ending in CRLF",
            &buf[..=nl],
        ));
    }
    let line = &buf[1..nl - 1];
    let after = nl + 1;
    let reply = match buf[0] {
        b'+' => Reply::Simple(1..nl - 1),
        b'-' => Reply::Error(1..nl - 1),
        b':' => Reply::Integer(number(line).ok_or_else(|| bad("a bad integer", &buf[..nl]))?),
        b'$' => {
            let len = number(line).ok_or_else(|| bad("a bad bulk length", &buf[..nl]))?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= MAX_BULK)
                .ok_or_else(|| bad("a bulk length out of range", &buf[..nl]))?;
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(bad("a bulk string not ending in CRLF", &buf[..end + 2]));
            }
            return Ok(Some((Reply::Bulk(Some(after..end)), end + 2)));
        }
        b'*' => {
            return Err(bad(
                "an array, which no command of the bench returns",
                &buf[..nl],
            ))
        }
        _ => return Err(bad("an unknown reply type", &buf[..nl])),
    };
    Ok(Some((reply, after)))
}

fn number(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn bad(what: &str, bytes: &[u8]) -> Error {
    let shown = &bytes[..bytes.len().min(80)];
    Error::Protocol(format!(
        "Redis sent {what}: {:?}",
        String::from_utf8_lossy(shown)
    ))
}

/// A connection to a Redis server: commands are queued, written on [`Redis::flush`] (or once
/// 32 KiB are queued), and their replies read in order.
pub struct Redis {
    /// The socket and its buffers; RESP is this type's.
    conn: Conn,
}

impl Redis {
    /// Connects and waits for the answer to a PING.
    ///
    /// # Errors
    /// A refused connection, an error reply (a password is required, protected mode), or no
    /// answer within `wait`.
    pub fn connect(address: &str, wait: Duration) -> Result<Redis> {
        let mut redis = Redis {
            conn: Conn::connect("Redis", address, wait, 64 * 1024)?,
        };
        match redis.call(&[b"PING"], Instant::now() + wait)? {
            Reply::Simple(r) if redis.slice(r.clone()) == b"PONG" => Ok(redis),
            other => Err(redis.unexpected("PING", "PONG", &other)),
        }
    }

    /// Queues a command.
    ///
    /// # Errors
    /// A write failure, when the queue was long enough to be written.
    pub fn queue(&mut self, args: &[&[u8]]) -> Result<()> {
        encode(self.conn.out(), args);
        self.conn.flush_if_full()
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// A write failure or timeout.
    pub fn flush(&mut self) -> Result<()> {
        self.conn.flush()
    }

    /// Sends one command and waits for its reply (nothing else may be in flight).
    ///
    /// # Errors
    /// An error reply, or none by `deadline`.
    pub fn call(&mut self, args: &[&[u8]], deadline: Instant) -> Result<Reply> {
        self.queue(args)?;
        self.flush()?;
        let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
        match self.next_reply(deadline)? {
            Some(Reply::Error(r)) => Err(self.refused(&name, r)),
            Some(reply) => Ok(reply),
            None => Err(Error::Timeout(format!(
                "no answer to {name} from {}",
                self.conn.peer()
            ))),
        }
    }

    /// The bytes of a range from the last [`Reply`].
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        self.conn.slice(range)
    }

    /// The next reply, or `None` when `deadline` passes first.
    ///
    /// # Errors
    /// A closed connection or bytes that are not RESP.
    pub fn next_reply(&mut self, deadline: Instant) -> Result<Option<Reply>> {
        self.conn.take_next(deadline, Redis::take)
    }

    /// The next reply among the bytes already read, without reading more.
    ///
    /// # Errors
    /// Bytes that are not RESP.
    pub fn take_reply(&mut self) -> Result<Option<Reply>> {
        Redis::take(&mut self.conn)
    }

    /// Takes one reply from what `conn` has read, its ranges made to index [`Conn::slice`].
    fn take(conn: &mut Conn) -> Result<Option<Reply>> {
        let Some((reply, used)) = parse(conn.unread())? else {
            return Ok(None);
        };
        let base = conn.base();
        conn.consume(used);
        let shift = |r: Range<usize>| base + r.start..base + r.end;
        Ok(Some(match reply {
            Reply::Simple(r) => Reply::Simple(shift(r)),
            Reply::Error(r) => Reply::Error(shift(r)),
            Reply::Bulk(r) => Reply::Bulk(r.map(shift)),
            Reply::Integer(n) => Reply::Integer(n),
        }))
    }

    /// The error for an error reply to `command`.
    fn refused(&self, command: &str, message: Range<usize>) -> Error {
        Error::Protocol(format!(
            "{} refused {command}: {}",
            self.conn.peer(),
            String::from_utf8_lossy(self.slice(message))
        ))
    }

    /// The error for a reply of the wrong kind.
    fn unexpected(&self, command: &str, wanted: &str, got: &Reply) -> Error {
        match got {
            Reply::Error(r) => self.refused(command, r.clone()),
            other => Error::Protocol(format!(
                "expected {wanted} from {} for {command}, got {other:?}",
                self.conn.peer()
            )),
        }
    }

    /// Sends a command whose reply is an integer (DEL, XLEN) and returns it.
    ///
    /// # Errors
    /// As [`Redis::call`], or a reply of another kind.
    fn integer(&mut self, args: &[&[u8]], deadline: Instant) -> Result<i64> {
        match self.call(args, deadline)? {
            Reply::Integer(n) => Ok(n),
            other => Err(self.unexpected(&String::from_utf8_lossy(args[0]), "an integer", &other)),
        }
    }
}

/// One sender: `XADD`s with up to `window` of them unanswered.
struct Sender {
    redis: Redis,
    window: u64,
    stall: Duration,
    sent: u64,
    /// Entry ids received: messages the server has stored.
    acked: u64,
}

impl Sender {
    /// Queues an `XADD` of `data`, first waiting for replies while the window is full.
    fn xadd(&mut self, data: &[u8]) -> Result<()> {
        while self.sent - self.acked >= self.window {
            self.flush_and_wait()?;
        }
        self.redis.queue(&[b"XADD", STREAM, b"*", b"t", data])?;
        self.sent += 1;
        Ok(())
    }

    /// Waits until every `XADD` is answered.
    fn finish(&mut self) -> Result<()> {
        while self.acked < self.sent {
            self.flush_and_wait()?;
        }
        Ok(())
    }

    /// Writes what is queued, waits for one reply, then takes those already read.
    fn flush_and_wait(&mut self) -> Result<()> {
        self.redis.flush()?;
        let Some(first) = self.redis.next_reply(Instant::now() + self.stall)? else {
            return Err(Error::Timeout(format!(
                "no reply from {} for {:.0} s with {} XADDs in flight ({} answered)",
                self.redis.conn.peer(),
                self.stall.as_secs_f64(),
                self.sent - self.acked,
                self.acked
            )));
        };
        let mut reply = Some(first);
        // Bounded: each turn consumes one reply from a finite buffer.
        while let Some(r) = reply {
            match r {
                Reply::Bulk(Some(_)) if self.acked < self.sent => self.acked += 1,
                other => return Err(self.redis.unexpected("XADD", "an entry id", &other)),
            }
            reply = self.redis.take_reply()?;
        }
        Ok(())
    }
}

/// Runs ingest against the Redis server at `--redis`.
///
/// # Errors
/// No server, an error reply, a stalled run, or a stream that does not hold what was sent.
pub fn run(args: &BenchArgs) -> Result<Value> {
    let stall = args.stall();
    let messages = args.messages.unwrap_or(200_000);
    let senders = args.senders.unwrap_or(4).max(1);
    let mut admin = Redis::connect(&args.redis, stall)?;
    admin.integer(&[b"DEL", STREAM], Instant::now() + stall)?;
    let ns = ingest(args, messages, senders)?;
    let stored = admin.integer(&[b"XLEN", STREAM], Instant::now() + stall)?;
    let stored = u64::try_from(stored).unwrap_or(0);
    if stored > messages {
        return Err(Error::Protocol(format!(
            "the stream holds {stored} entries but {messages} were sent: \
             did another client write to {}?",
            String::from_utf8_lossy(STREAM)
        )));
    }
    Ok(json!({
        "url": args.redis,
        "size": args.size,
        "ingest": {
            "messages": messages,
            "senders": senders,
            "window": args.ingest_window(),
            "msgs_per_s": per_s(messages, ns),
            "stored": stored,
            "lost": messages - stored,
            "duration_s": seconds(ns),
        },
    }))
}

/// `senders` threads sending `messages` in all; returns ns from the first send to the last reply.
fn ingest(args: &BenchArgs, messages: u64, senders: usize) -> Result<u64> {
    let stall = args.stall();
    // Connections are made here, before any thread starts, so a failure cannot leave the
    // others sending; each thread then starts at once.
    let window = args.ingest_window().max(1) as u64;
    let connected = (0..senders)
        .map(|_| {
            Ok(Sender {
                redis: Redis::connect(&args.redis, stall)?,
                window,
                stall,
                sent: 0,
                acked: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    progress(
        "redis",
        format_args!("{senders} senders connected; XADD to {}", args.redis),
    );
    send_shares(
        args,
        "redis",
        connected,
        messages,
        |sender, text| sender.xadd(text.as_bytes()),
        Sender::finish,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses every reply in `bytes`, as the text each carries.
    fn all(bytes: &[u8]) -> Vec<String> {
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((reply, used)) = parse(&bytes[at..]).unwrap() {
            let text = |r: Range<usize>| String::from_utf8_lossy(&bytes[at..][r]).to_string();
            got.push(match reply {
                Reply::Simple(r) => format!("+{}", text(r)),
                Reply::Error(r) => format!("-{}", text(r)),
                Reply::Integer(n) => format!(":{n}"),
                Reply::Bulk(Some(r)) => format!("${}", text(r)),
                Reply::Bulk(None) => "nil".into(),
            });
            at += used;
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        got
    }

    #[test]
    fn encodes_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XADD", b"s", b"*", b"t", b""]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nt\r\n$0\r\n\r\n"
        );
        out.clear();
        encode(&mut out, &[&[b'x'; 1234]]);
        assert!(out.starts_with(b"*1\r\n$1234\r\nxxx"));
    }

    #[test]
    fn parses_every_reply_kind() {
        let bytes =
            b"+PONG\r\n-ERR wrong type\r\n:-42\r\n$15\r\n1700000000000-0\r\n$-1\r\n$0\r\n\r\n";
        assert_eq!(
            all(bytes),
            [
                "+PONG",
                "-ERR wrong type",
                ":-42",
                "$1700000000000-0",
                "nil",
                "$"
            ]
        );
    }

    #[test]
    fn a_reply_split_anywhere_waits_for_the_rest() {
        let bytes = b"$15\r\n1700000000000-0\r\n:7\r\n";
        for cut in 0..bytes.len() {
            let (head, _) = bytes.split_at(cut);
            match parse(head).unwrap() {
                None => assert!(cut < 22, "complete at {cut} but not parsed"),
                Some((Reply::Bulk(Some(r)), 22)) => {
                    assert!(cut >= 22);
                    assert_eq!(&head[r], b"1700000000000-0");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // A bulk string whose CRLF has not arrived, even with its body complete.
        assert_eq!(parse(b"$2\r\nab").unwrap(), None);
        assert_eq!(parse(b"$2\r\nab\r").unwrap(), None);
    }

    #[test]
    fn rejects_what_is_not_resp() {
        for bytes in [
            &b"hello\r\n"[..],
            b":12x\r\n",
            b"+OK\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"$99999999999\r\n",
            b"\r\n",
            b"*1\r\n$1\r\na\r\n",
        ] {
            let err = parse(bytes).unwrap_err().to_string();
            assert!(err.contains("Redis sent"), "{err}");
        }
        assert!(parse(&[b'+'; MAX_LINE]).is_err());
        assert_eq!(parse(&[b'+'; MAX_LINE - 1]).unwrap(), None);
    }

    #[test]
    fn an_error_reply_fails_the_sender_with_its_message() {
        use std::io::{Read, Write};
        let (address, server) = crate::tcp::one_peer(|mut s| {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Answer the PING, then the first XADD with an id and the second with an error
            // that arrives in two writes.
            for (wait_for, replies) in [
                (&b"PING"[..], &[&b"+PONG\r\n"[..]][..]),
                (
                    b"XADD",
                    &[b"$3\r\n1-0\r\n-OOM command not all", b"owed\r\n"],
                ),
            ] {
                while !got.windows(4).any(|w| w == wait_for) {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "client closed");
                    got.extend_from_slice(&buf[..n]);
                }
                got.clear();
                for reply in replies {
                    s.write_all(reply).unwrap();
                    s.flush().unwrap();
                }
            }
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
        let redis = Redis::connect(&address, Duration::from_secs(5)).unwrap();
        let mut sender = Sender {
            redis,
            window: 2,
            stall: Duration::from_secs(5),
            sent: 0,
            acked: 0,
        };
        sender.xadd(b"a").unwrap();
        sender.xadd(b"b").unwrap();
        let err = sender.finish().unwrap_err().to_string();
        assert!(
            err.contains("refused XADD: OOM command not allowed"),
            "{err}"
        );
        assert_eq!(sender.acked, 1);
        drop(sender);
        server.join().unwrap();
    }
}
