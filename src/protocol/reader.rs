//! Reading frames in place: the field cursor every decoder uses, and [`EventMessages`], the
//! messages of a MSG or MSGS event as views into the frame.
//!
//! A member receiving a busy group reads thousands of messages a second; most readers want to
//! look at each (count it, render it, match its seq) and keep few. [`EventMessages`] lets them
//! do that without allocating per message: each [`MessageRef`] borrows its sender and text
//! from the frame. It reads exactly what [`super::codec::decode_incoming`] reads: the same
//! frames are valid, and a valid frame gives the same messages.

use super::codec::{cmd, DecodeError};
use super::{ErrorCode, Message, SIGNATURE, VERSION};

/// One message of an event, its sender and text borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub seq: u64,
    pub ts: i64,
    pub sender: &'a str,
    pub text: &'a str,
}

impl MessageRef<'_> {
    /// The message as an owned [`Message`].
    pub fn to_message(&self) -> Message {
        Message {
            seq: self.seq,
            ts: self.ts,
            sender: self.sender.to_string(),
            text: self.text.to_string(),
        }
    }
}

/// The messages of one MSG or MSGS event frame, read one by one in place.
///
/// ```
/// use zms::protocol::{codec, Message, EventMessages};
///
/// let message = Message { seq: 7, ts: 0, sender: "alice".into(), text: "hi".into() };
/// let frame = codec::encode_message_event("general", &message);
/// let mut event = EventMessages::read(&frame).expect("a MSG event").unwrap();
/// assert_eq!(event.group(), "general");
/// let first = event.next().unwrap().unwrap();
/// assert_eq!((first.seq, first.text), (7, "hi"));
/// assert!(event.next().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct EventMessages<'a> {
    group: &'a str,
    fields: Reader<'a>,
    /// Messages not yet read.
    left: usize,
    /// Set once a fault was yielded: nothing follows it.
    failed: bool,
}

impl<'a> EventMessages<'a> {
    /// Opens a MSG or MSGS event. `None` when `frame` is anything else (a reply, another
    /// event, not a ZMS/1 frame); an error when it is one of them but its header is broken.
    pub fn read(frame: &'a [u8]) -> Option<Result<EventMessages<'a>, DecodeError>> {
        if frame.len() < 5 || &frame[..3] != SIGNATURE || frame[3] != VERSION {
            return None;
        }
        let batch = match frame[4] {
            cmd::MSG => false,
            cmd::MSGS => true,
            _ => return None,
        };
        let mut fields = Reader::new(&frame[5..]);
        let header = (|| {
            let group = fields.string_ref()?;
            let left = if batch {
                fields.count(MESSAGE_MIN_LEN)?
            } else {
                1
            };
            Ok((group, left))
        })();
        Some(
            header
                .map(|(group, left)| EventMessages {
                    group,
                    fields,
                    left,
                    failed: false,
                })
                .map_err(|e: Fault| e.into_decode(0)),
        )
    }

    /// The group the messages are of.
    pub fn group(&self) -> &'a str {
        self.group
    }

    /// Messages not yet read, as the frame counts them.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for EventMessages<'a> {
    type Item = Result<MessageRef<'a>, DecodeError>;

    /// The next message; after the last, an error if bytes are left over (as the decoder
    /// rejects trailing bytes). Nothing follows an error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = if self.left == 0 {
            match self.fields.end() {
                Ok(()) => return None,
                Err(fault) => Err(fault),
            }
        } else {
            self.left -= 1;
            self.fields.message_ref()
        };
        self.failed = item.is_err();
        Some(item.map_err(|e| e.into_decode(0)))
    }
}

/// Octets the smallest message takes: seq, ts, and the lengths of an empty sender and text.
pub(crate) const MESSAGE_MIN_LEN: usize = 8 + 8 + 1 + 4;

/// A field-level decoding fault, before it knows the request id.
pub(crate) struct Fault(pub(crate) String);

impl Fault {
    pub(crate) fn into_decode(self, req_id: u32) -> DecodeError {
        DecodeError {
            req_id,
            code: ErrorCode::BadRequest,
            reason: self.0,
        }
    }
}

/// A cursor over one frame's fields.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over bare fields (no header): what [`Reader::open`] returns after it.
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Whether every field has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Checks the signature and version, returns the command byte and a reader after it.
    pub(crate) fn open(frame: &'a [u8]) -> Result<(u8, Reader<'a>), DecodeError> {
        let fault = |code, reason: String| DecodeError {
            req_id: 0,
            code,
            reason,
        };
        if frame.len() < 5 || &frame[..3] != SIGNATURE {
            return Err(fault(
                ErrorCode::BadRequest,
                format!(
                    "not a ZMS message ({} bytes without the \"ZMS\" signature)",
                    frame.len()
                ),
            ));
        }
        if frame[3] != VERSION {
            return Err(fault(
                ErrorCode::Version,
                format!(
                    "unsupported protocol version '{}'; this server speaks version {}",
                    frame[3].escape_ascii(),
                    super::VERSIONS_SPOKEN
                ),
            ));
        }
        Ok((frame[4], Reader { buf: &frame[5..] }))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        if self.buf.len() < n {
            return Err(Fault(format!(
                "truncated: needed {n} more bytes, had {}",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Fault> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Fault> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("bug: 2 bytes"),
        ))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Fault> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("bug: 4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Fault> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("bug: 8 bytes"),
        ))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, Fault> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("bug: 8 bytes"),
        ))
    }
    pub(crate) fn utf8(bytes: &[u8]) -> Result<String, Fault> {
        Self::str(bytes).map(str::to_string)
    }
    /// `bytes` as UTF-8, in place.
    fn str(bytes: &[u8]) -> Result<&str, Fault> {
        std::str::from_utf8(bytes).map_err(|_| Fault("string is not valid UTF-8".into()))
    }
    /// A `string` field, borrowed from the frame.
    pub(crate) fn string_ref(&mut self) -> Result<&'a str, Fault> {
        let n = self.u8()? as usize;
        Self::str(self.take(n)?)
    }
    /// A `text` field, borrowed from the frame.
    pub(crate) fn text_ref(&mut self) -> Result<&'a str, Fault> {
        let n = self.u32()? as usize;
        Self::str(self.take(n)?)
    }
    pub(crate) fn string(&mut self) -> Result<String, Fault> {
        let n = self.u8()? as usize;
        Self::utf8(self.take(n)?)
    }
    pub(crate) fn text(&mut self) -> Result<String, Fault> {
        let n = self.u32()? as usize;
        Self::utf8(self.take(n)?)
    }
    /// A list count, checked against the bytes left so a forged count cannot make the
    /// decoder reserve memory the frame could never fill.
    pub(crate) fn count(&mut self, min_element_len: usize) -> Result<usize, Fault> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_element_len) > self.buf.len() {
            return Err(Fault(format!(
                "list of {n} elements does not fit in the frame"
            )));
        }
        Ok(n)
    }
    pub(crate) fn message(&mut self) -> Result<Message, Fault> {
        self.message_ref().map(|m| m.to_message())
    }
    /// A `message` field, its sender and text borrowed from the frame.
    pub(crate) fn message_ref(&mut self) -> Result<MessageRef<'a>, Fault> {
        Ok(MessageRef {
            seq: self.u64()?,
            ts: self.i64()?,
            sender: self.string_ref()?,
            text: self.text_ref()?,
        })
    }
    pub(crate) fn end(&self) -> Result<(), Fault> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Fault(format!(
                "{} unexpected bytes after the last field",
                self.buf.len()
            )))
        }
    }
}
