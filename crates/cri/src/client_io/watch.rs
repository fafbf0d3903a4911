//! The server's bytes on their way to the client, watched for RST_STREAM and GOAWAY frames
//! with an error, which are logged with their reason.

use super::{GOAWAY, RST_STREAM};

/// Follows the frames the server writes to the client, to log resets and refusals.
#[derive(Default)]
pub(super) struct Watch {
    head: [u8; 9],
    pub(super) have: usize,
    pub(super) kind: u8,
    stream: u32,
    /// Payload bytes of the current frame not yet seen.
    pub(super) left: usize,
    /// The start of an RST_STREAM or GOAWAY payload.
    pub(super) keep: Vec<u8>,
}

/// GOAWAY debug data kept for the log, at most.
const DEBUG_MAX: usize = 256;

impl Watch {
    pub(super) fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.have < 9 {
                let n = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 9 {
                    let h = self.head;
                    self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    self.kind = h[3];
                    self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    self.keep.clear();
                    if self.left == 0 {
                        self.frame_done();
                    }
                }
                continue;
            }
            let n = self.left.min(bytes.len());
            let want = match self.kind {
                RST_STREAM => 4,
                GOAWAY => 8 + DEBUG_MAX,
                _ => 0,
            };
            let keep = n.min(want.saturating_sub(self.keep.len()));
            self.keep.extend_from_slice(&bytes[..keep]);
            self.left -= n;
            bytes = &bytes[n..];
            if self.left == 0 {
                self.frame_done();
            }
        }
    }

    pub(super) fn frame_done(&mut self) {
        self.have = 0;
        let word = |at: usize| {
            self.keep
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match self.kind {
            RST_STREAM => {
                if let Some(code) = word(0) {
                    tracing::debug!(
                        stream = self.stream,
                        "HTTP/2 stream reset for the client: {}{}",
                        reason(code),
                        hint(code)
                    );
                }
            }
            GOAWAY => {
                if let Some(code) = word(4).filter(|c| *c != 0) {
                    let last = word(0).unwrap_or_default() & 0x7fff_ffff;
                    tracing::debug!(
                        last_stream = last,
                        "HTTP/2 connection refused to the client (GOAWAY): {}{} {}",
                        reason(code),
                        hint(code),
                        String::from_utf8_lossy(self.keep.get(8..).unwrap_or_default())
                    );
                }
            }
            _ => {}
        }
    }
}

/// RFC 9113 §7 error code names.
pub(super) fn reason(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("error code {code}"), |n| n.to_string())
}

pub(super) fn hint(code: u32) -> &'static str {
    match code {
        1 => " (a malformed request; CREDKEEPER_LOG=h2=debug shows what the HTTP/2 library found)",
        9 => " (the client's header compression could not be followed)",
        _ => "",
    }
}
