//! The proxy: HTTP/2 (gRPC) on a unix socket in, the same on containerd's socket out. Every
//! call is forwarded as it came — path, headers, body, trailers — and answered with what
//! containerd answered. Only `PullImage` and `RemoveImage` requests are read (they are
//! small unary messages), to keep or forget the credential once containerd reports
//! success (`grpc-status: 0`).

use crate::CriError;
use crate::captured::{Captured, credential};
use crate::client_io::ClientIo;
use crate::wire;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

const PULL: &str = "/runtime.v1.ImageService/PullImage";
const REMOVE: &str = "/runtime.v1.ImageService/RemoveImage";
/// Larger request bodies are forwarded without being read (a PullImageRequest is small).
const MAX_READ: usize = 1 << 20;

/// One HTTP/2 connection to containerd, made again when it breaks.
pub struct Upstream {
    path: PathBuf,
    sender: Mutex<Option<SendRequest<ProxyBody>>>,
}

impl Upstream {
    pub fn new(path: &Path) -> Upstream {
        Upstream {
            path: path.to_path_buf(),
            sender: Mutex::new(None),
        }
    }

    async fn sender(&self) -> Result<SendRequest<ProxyBody>, CriError> {
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let fail = |reason: String| CriError::Upstream {
            path: self.path.clone(),
            reason,
        };
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        let path = self.path.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(upstream = %path.display(), "connection ended: {e}");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

/// Bind the proxy's socket (mode 0600: kubelet runs as root, as containerd's own socket).
pub fn bind(path: &Path) -> Result<UnixListener, CriError> {
    crate::bind_private(path, "listen socket")
}

pub async fn serve(listener: UnixListener, upstream: Arc<Upstream>, captured: Arc<Captured>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (upstream, captured) = (upstream.clone(), captured.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (upstream, captured) = (upstream.clone(), captured.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(forward(request, &upstream, &captured).await)
                }
            });
            // Through ClientIo: grpc's C core names the socket in `:authority`, which
            // the HTTP/2 server would reset; and its resets are logged.
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(ClientIo::new(stream)), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("client connection ended: {e}");
            }
        });
    }
}

/// What to do with the credential once the call is known to have succeeded.
enum OnSuccess {
    Keep(String, credkeeper_registry::Credential),
    Forget(String),
}

async fn forward(
    request: Request<Incoming>,
    upstream: &Upstream,
    captured: &Arc<Captured>,
) -> Response<ProxyBody> {
    let path = request.uri().path().to_string();
    let (parts, body) = request.into_parts();
    let (body, on_success): (ProxyBody, Option<OnSuccess>) = if path == PULL || path == REMOVE {
        match Limited::read(body).await {
            Ok(bytes) => {
                let action = wire::grpc_message(&bytes).and_then(|m| {
                    if path == PULL {
                        let pull = wire::pull_image(m)?;
                        let cred = credential(pull.auth.as_ref()?)?;
                        Some(OnSuccess::Keep(pull.image, cred))
                    } else {
                        wire::remove_image(m).map(OnSuccess::Forget)
                    }
                });
                (
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                    action,
                )
            }
            Err(body) => (body, None),
        }
    } else {
        (body.boxed(), None)
    };
    let sender = match upstream.sender().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e.to_string()),
    };
    let mut sender = sender;
    let response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return unavailable(&format!("upstream: {e}")),
    };
    let (parts, body) = response.into_parts();
    let body = match on_success {
        None => body.boxed(),
        Some(action) => Observed {
            inner: body.boxed(),
            on_success: Some((action, captured.clone())),
        }
        .boxed(),
    };
    Response::from_parts(parts, body)
}

/// A gRPC "trailers-only" error answer: containerd could not be reached.
fn unavailable(message: &str) -> Response<ProxyBody> {
    tracing::debug!("answered UNAVAILABLE: {message}");
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", hyper::header::HeaderValue::from_static("14"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        headers.insert("grpc-message", v);
    }
    response
}

/// Reading a request body to look at it, up to [`MAX_READ`].
struct Limited;

impl Limited {
    /// The whole body, or, when it is larger, a body that still sends all of it.
    async fn read(body: Incoming) -> Result<Bytes, ProxyBody> {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() > MAX_READ {
                        let head = Full::new(buf.freeze()).map_err(|never| match never {});
                        return Err(Chain {
                            head: Some(head.boxed()),
                            tail: body.boxed(),
                        }
                        .boxed());
                    }
                }
                Err(e) => {
                    tracing::debug!("request body: {e}");
                    break;
                }
            }
        }
        Ok(buf.freeze())
    }
}

/// The bytes read so far, then the rest of the body.
struct Chain {
    head: Option<ProxyBody>,
    tail: ProxyBody,
}

impl Body for Chain {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(head) = self.head.as_mut() {
            match Pin::new(head).poll_frame(cx) {
                Poll::Ready(None) => self.head = None,
                other => return other,
            }
        }
        Pin::new(&mut self.tail).poll_frame(cx)
    }
}

/// containerd's answer, passed on unchanged; when its trailers say `grpc-status: 0`, the
/// credential is kept (or forgotten).
struct Observed {
    inner: ProxyBody,
    on_success: Option<(OnSuccess, Arc<Captured>)>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && trailers.get("grpc-status").is_some_and(|s| s == "0")
            && let Some((action, captured)) = self.on_success.take()
        {
            match action {
                OnSuccess::Keep(image, credential) => {
                    tracing::info!(
                        image,
                        user = credential.username,
                        "pull credential kept (in memory)"
                    );
                    captured.keep(&image, credential);
                }
                OnSuccess::Forget(image) => {
                    if captured.forget(&image) {
                        tracing::info!(image, "image removed: its pull credential forgotten");
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
