//! The client's bytes on their way to the server: frame by frame, every header block
//! decoded with the client's HPACK table and, once an authority is not one, written again
//! as plain literals with `localhost`.

use super::{
    CONTINUATION, END_HEADERS, END_STREAM, HEADERS, LOCAL_AUTHORITY, MAX_BLOCK, MAX_FRAME, PADDED,
    PREFACE, PRIORITY, TABLE_SIZE,
};
use crate::hpack::{self, Decoder};
use bytes::BytesMut;

#[derive(PartialEq, Eq)]
pub(super) enum Stage {
    Preface,
    Frames,
    /// Everything as it comes: the client sent what this does not follow, and the server
    /// will say what it thinks of it.
    Passthrough,
}

/// A header block being gathered: HEADERS and its CONTINUATIONs.
pub(super) struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as they came, passed on when the block needs no change.
    original: Vec<u8>,
}

pub(super) struct Reader {
    pub(super) stage: Stage,
    /// From the client, not yet looked at.
    pub(super) raw: BytesMut,
    /// Looked at, for the server.
    pub(super) out: BytesMut,
    /// Payload bytes still to pass of a frame that is not looked into.
    skip: usize,
    block: Option<Block>,
    decoder: Decoder,
    /// Set by the first authority taken as `localhost`: from then on every block is
    /// written again.
    rewriting: bool,
    pub(super) eof: bool,
}

impl Reader {
    pub(super) fn new() -> Reader {
        Reader {
            stage: Stage::Preface,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            skip: 0,
            block: None,
            decoder: Decoder::new(TABLE_SIZE, MAX_BLOCK),
            rewriting: false,
            eof: false,
        }
    }

    /// Take bytes from the client; what can be passed on is then in `out`.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        while self.step() {}
    }

    /// The client closed: whatever is left goes on as it is.
    pub(super) fn finish(&mut self) {
        self.eof = true;
        self.give_up();
    }

    pub(super) fn give_up(&mut self) {
        if let Some(block) = self.block.take() {
            self.out.extend_from_slice(&block.original);
        }
        let rest = self.raw.split();
        self.out.extend_from_slice(&rest);
        self.stage = Stage::Passthrough;
    }

    /// One step over `raw`; false when it needs more bytes.
    pub(super) fn step(&mut self) -> bool {
        match self.stage {
            Stage::Passthrough => {
                let rest = self.raw.split();
                self.out.extend_from_slice(&rest);
                false
            }
            Stage::Preface => {
                let n = self.raw.len().min(PREFACE.len());
                if self.raw[..n] != PREFACE[..n] {
                    self.give_up();
                    return false;
                }
                if n < PREFACE.len() {
                    return false;
                }
                let preface = self.raw.split_to(n);
                self.out.extend_from_slice(&preface);
                self.stage = Stage::Frames;
                true
            }
            Stage::Frames => self.frame_step(),
        }
    }

    pub(super) fn frame_step(&mut self) -> bool {
        if self.skip > 0 {
            let n = self.skip.min(self.raw.len());
            let part = self.raw.split_to(n);
            self.out.extend_from_slice(&part);
            self.skip -= n;
            return self.skip == 0;
        }
        if self.raw.len() < 9 {
            return false;
        }
        let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
        let (kind, flags) = (self.raw[3], self.raw[4]);
        let stream =
            u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]]) & 0x7fff_ffff;
        let in_block = self.block.as_ref().map(|b| b.stream);
        match (kind, in_block) {
            (HEADERS, None) => {}
            (CONTINUATION, Some(s)) if s == stream => {}
            // A frame inside a header block other than its CONTINUATION, or a
            // CONTINUATION outside one: a protocol error the server reports.
            (_, Some(_)) | (CONTINUATION, None) => {
                self.give_up();
                return false;
            }
            _ => {
                let head = self.raw.split_to(9);
                self.out.extend_from_slice(&head);
                self.skip = len;
                return true;
            }
        }
        // Larger than the server allows: it answers FRAME_SIZE_ERROR.
        if len > MAX_FRAME {
            self.give_up();
            return false;
        }
        if self.raw.len() < 9 + len {
            return false;
        }
        let frame = self.raw.split_to(9 + len);
        let payload = &frame[9..];
        if kind == HEADERS {
            let Some((priority, fragment)) = headers_payload(flags, payload) else {
                self.out.extend_from_slice(&frame);
                self.stage = Stage::Passthrough;
                return true;
            };
            self.block = Some(Block {
                stream,
                flags,
                priority,
                fragment: fragment.to_vec(),
                original: frame.to_vec(),
            });
        } else if let Some(block) = self.block.as_mut() {
            block.fragment.extend_from_slice(payload);
            block.original.extend_from_slice(&frame);
        }
        if self
            .block
            .as_ref()
            .is_some_and(|b| b.fragment.len() > MAX_BLOCK)
        {
            self.give_up();
            return false;
        }
        if flags & END_HEADERS != 0 {
            self.end_block();
        }
        true
    }

    /// A whole header block: passed on, or written again with a usable authority.
    pub(super) fn end_block(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let mut fields = match self.decoder.decode(&block.fragment) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(
                    stream = block.stream,
                    "a client's header block is not read ({e}); passed on as it came"
                );
                self.out.extend_from_slice(&block.original);
                self.stage = Stage::Passthrough;
                return;
            }
        };
        for f in fields.iter_mut().filter(|f| f.name == b":authority") {
            if hyper::http::uri::Authority::try_from(f.value.as_slice()).is_ok() {
                continue;
            }
            if !self.rewriting {
                tracing::debug!(
                    stream = block.stream,
                    "the client's :authority {:?} is not a host (grpc's C core names a unix socket by its path): taken as localhost on this connection",
                    String::from_utf8_lossy(&f.value)
                );
                self.rewriting = true;
            }
            f.value = LOCAL_AUTHORITY.to_vec();
        }
        if !self.rewriting {
            self.out.extend_from_slice(&block.original);
            return;
        }
        let mut encoded = Vec::new();
        hpack::encode(&fields, &mut encoded);
        self.write_block(&block, &encoded);
    }

    /// HEADERS (then CONTINUATIONs) carrying `encoded`, no padding, each within the
    /// server's frame size.
    pub(super) fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let first = encoded.len().min(MAX_FRAME - priority.len());
        let (head, mut rest) = encoded.split_at(first);
        let mut flags = block.flags & END_STREAM;
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        let mut kind = HEADERS;
        let mut payload = [priority, head].concat();
        loop {
            let last = rest.is_empty();
            let f = if last { flags | END_HEADERS } else { flags };
            self.out
                .extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            self.out.extend_from_slice(&[kind, f]);
            self.out.extend_from_slice(&block.stream.to_be_bytes());
            self.out.extend_from_slice(&payload);
            if last {
                return;
            }
            let n = rest.len().min(MAX_FRAME);
            payload = rest[..n].to_vec();
            rest = &rest[n..];
            kind = CONTINUATION;
            flags = 0;
        }
    }
}

/// A HEADERS payload's priority fields and header block fragment, padding removed;
/// `None` when the lengths do not add up.
pub(super) fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let pad = if flags & PADDED != 0 {
        let (n, rest) = p.split_first()?;
        p = rest;
        usize::from(*n)
    } else {
        0
    };
    let priority = if flags & PRIORITY != 0 {
        let fields: [u8; 5] = p.get(..5)?.try_into().ok()?;
        p = &p[5..];
        Some(fields)
    } else {
        None
    };
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}
