//! A CRI client's connection as the proxy's HTTP/2 server sees it.
//!
//! grpc's C core (grpcio for Python, Ruby, PHP, …) names a unix-socket channel in
//! `:authority` by its percent-encoded path (`run%2Fcontainerd%2Fcontainerd.sock`).
//! containerd (grpc-go) takes that; the `h2` server under hyper resets every stream whose
//! `:authority` is not a URI authority, logging why only under its own target. So the
//! bytes from the client are read here first, frame by frame: every header block is
//! decoded (following the client's HPACK table) and passed on unchanged while its
//! authority is one; from the first that is not, the authority becomes `localhost` (what
//! kubelet's grpc-go sends on a unix socket) and every block of the connection is written
//! again as plain literals (the server's table then holds nothing the client's would).
//! Frames other than HEADERS and CONTINUATION pass as they are.
//!
//! The bytes to the client are watched too: each RST_STREAM, and each GOAWAY with an
//! error, the server sends is logged at debug with its reason.

mod reader;
mod watch;

use bytes::Buf;
use reader::{Reader, Stage};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use watch::Watch;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE and SETTINGS_HEADER_TABLE_SIZE: hyper's server
/// keeps the protocol's defaults.
const MAX_FRAME: usize = 16_384;
const TABLE_SIZE: usize = 4_096;
/// Larger header blocks, or decoded header lists, are not looked at: they are passed on
/// as they came, for the server to refuse by its own limit (16 KiB of header list).
const MAX_BLOCK: usize = 64 << 10;
/// What the authority of a unix-socket client is taken as.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// A client connection: reads go through [`Reader`], writes are watched by [`Watch`].
pub struct ClientIo<S> {
    inner: S,
    reader: Reader,
    watch: Watch,
    scratch: Vec<u8>,
}

impl<S> ClientIo<S> {
    pub fn new(inner: S) -> ClientIo<S> {
        ClientIo {
            inner,
            reader: Reader::new(),
            watch: Watch::default(),
            scratch: vec![0; MAX_FRAME],
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let out = &mut this.reader.out;
            if !out.is_empty() {
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.reader.eof {
                return Poll::Ready(Ok(()));
            }
            if this.reader.stage == Stage::Passthrough && this.reader.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = read.filled().len();
            if filled == 0 {
                this.reader.finish();
            } else {
                this.reader.push(&this.scratch[..filled]);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.watch.saw(&buf[..n]);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for b in bufs {
                let m = n.min(b.len());
                this.watch.saw(&b[..m]);
                n -= m;
                if n == 0 {
                    break;
                }
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::reader::headers_payload;
    use super::watch::reason;
    use super::*;
    use crate::hpack::Decoder;
    use crate::hpack::Field;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            sensitive: false,
        }
    }

    /// A gRPC call's request headers with `authority`.
    fn version_request(authority: &str) -> Vec<Field> {
        vec![
            field(":method", "POST"),
            field(":scheme", "http"),
            field(":path", "/runtime.v1.RuntimeService/Version"),
            field(":authority", authority),
            field("te", "trailers"),
        ]
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    /// The frames after the preface, as (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    /// The header blocks of `bytes` decoded as the server would.
    fn blocks(bytes: &[u8]) -> Vec<Vec<Field>> {
        let mut d = Decoder::new(TABLE_SIZE, MAX_BLOCK);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for (kind, flags, _, payload) in frames(bytes) {
            if kind == HEADERS {
                pending = headers_payload(flags, &payload).unwrap().1.to_vec();
            } else if kind == CONTINUATION {
                pending.extend(payload);
            } else {
                continue;
            }
            if flags & END_HEADERS != 0 {
                out.push(d.decode(&pending).unwrap());
            }
        }
        out
    }

    /// `fields` as a client with a dynamic table would send them (literal with
    /// incremental indexing, new names), so later blocks can refer to them.
    fn indexed_block(fields: &[Field]) -> Vec<u8> {
        let mut b = Vec::new();
        for f in fields {
            b.push(0x40);
            b.push(f.name.len() as u8);
            b.extend(&f.name);
            b.push(f.value.len() as u8);
            b.extend(&f.value);
        }
        b
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = Reader::new();
        for c in input.chunks(chunk) {
            r.push(c);
        }
        r.finish();
        r.out.to_vec()
    }

    #[test]
    fn a_connection_with_host_authorities_passes_byte_for_byte() {
        let request = version_request("localhost");
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, 1, &indexed_block(&request)));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // The second request refers to the first's table entries.
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0xc2, 0xc1, 0xc0, 0xbf, 0xbe],
        ));
        for chunk in [1, 7, 4096] {
            assert_eq!(run(&input, chunk), input, "chunk {chunk}");
        }
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_in_every_block_after_it() {
        let request = version_request("run%2Fcontainerd%2Fcontainerd.sock");
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        // Padded, with priority, split over a CONTINUATION.
        let block = indexed_block(&request);
        let mut payload = vec![3];
        payload.extend([0, 0, 0, 0, 16]);
        payload.extend(&block[..20]);
        payload.extend([0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[20..]));
        input.extend(frame(0x8, 0, 0, &[0, 0, 0, 5]));
        // The next request names the same fields through the client's table.
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0xc2, 0xc1, 0xc0, 0xbf, 0xbe],
        ));
        for chunk in [1, 5, 4096] {
            let out = run(&input, chunk);
            let want = version_request("localhost");
            assert_eq!(
                blocks(&out),
                vec![want.clone(), want.clone()],
                "chunk {chunk}"
            );
            let f = frames(&out);
            assert_eq!(f[1].0, HEADERS);
            assert_eq!(f[1].1, END_STREAM | END_HEADERS | PRIORITY);
            assert_eq!(&f[1].3[..5], &[0, 0, 0, 0, 16]);
            assert_eq!(
                f[2],
                (0x8, 0, 0, vec![0, 0, 0, 5]),
                "other frames pass as they are"
            );
        }
    }

    #[test]
    fn a_block_larger_than_a_frame_is_written_in_continuations() {
        let mut request = vec![field(":authority", "tmp%2Fx.sock")];
        request.push(field("x-big", &"v".repeat(20_000)));
        let mut block = vec![0x41, 12];
        block.extend(b"tmp%2Fx.sock");
        block.extend([0x00, 5]);
        block.extend(b"x-big");
        block.push(0x7f);
        let mut len = Vec::new();
        let mut n = 20_000 - 127;
        while n >= 0x80 {
            len.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        len.push(n as u8);
        block.extend(len);
        block.extend("v".repeat(20_000).as_bytes());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..10_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[10_000..]));
        let out = run(&input, 4096);
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert_eq!(
            (f[0].0, f[1].0, f[1].1),
            (HEADERS, CONTINUATION, END_HEADERS)
        );
        request[0] = field(":authority", "localhost");
        assert_eq!(blocks(&out), vec![request]);
    }

    #[test]
    fn what_cannot_be_followed_passes_as_it_came() {
        // Not HTTP/2 at all.
        assert_eq!(run(b"GET / HTTP/1.1\r\n\r\n", 3), b"GET / HTTP/1.1\r\n\r\n");
        // A header block that is not HPACK, then more: all of it as it came.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xbe, 0xff]));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x82]));
        assert_eq!(run(&input, 4096), input);
        // A frame between HEADERS and its CONTINUATION.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"data"));
        assert_eq!(run(&input, 2), input);
        // A connection cut inside a frame.
        let mut input = PREFACE.to_vec();
        input.extend(&frame(HEADERS, END_HEADERS, 1, &[0x82, 0x86])[..10]);
        assert_eq!(run(&input, 4096), input);
    }

    #[test]
    fn the_servers_resets_and_refusals_are_followed_across_writes() {
        let mut w = Watch::default();
        let mut out = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        out.extend(frame(RST_STREAM, 0, 1, &1u32.to_be_bytes()));
        out.extend(frame(
            GOAWAY,
            0,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 1, b'b', b'y', b'e'],
        ));
        for b in &out {
            w.saw(std::slice::from_ref(b));
        }
        assert_eq!((w.have, w.left, w.kind), (0, 0, GOAWAY));
        assert_eq!(w.keep, [0, 0, 0, 1, 0, 0, 0, 1, b'b', b'y', b'e']);
        assert_eq!(reason(1), "PROTOCOL_ERROR");
        assert_eq!(reason(99), "error code 99");
    }
}
