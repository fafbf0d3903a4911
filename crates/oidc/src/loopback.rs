//! The loopback redirect of a native app's browser login (RFC 8252 §7.3).
//!
//! A listener on 127.0.0.1 with a port the kernel picks; the issuer sends the browser
//! back to `http://127.0.0.1:<port>/callback?code=…&state=…`. The `state` must match
//! the one sent, or the code is refused (a login started elsewhere must not land here).

use crate::OidcError;
use credkeeper_core::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Redirect {
    listener: TcpListener,
    uri: String,
}

const DONE_PAGE: &str = "<!doctype html><title>credkeeper</title><h1>Login complete</h1><p>You can close this window and return to the terminal.</p>";
const FAILED_PAGE: &str = "<!doctype html><title>credkeeper</title><h1>Login failed</h1><p>Return to the terminal for details.</p>";

impl Redirect {
    pub async fn bind() -> Result<Redirect, OidcError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| OidcError::Loopback(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| OidcError::Loopback(e.to_string()))?
            .port();
        Ok(Redirect {
            listener,
            uri: format!("http://127.0.0.1:{port}/callback"),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Wait for the browser to come back and return the authorization code. Requests for
    /// other paths (a browser asking for `/favicon.ico`) are answered 404 and ignored.
    pub async fn wait_for_code(&self, state: &str) -> Result<Secret, OidcError> {
        loop {
            let (mut stream, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| OidcError::Loopback(e.to_string()))?;
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() {
                let n = stream.read(&mut buf[len..]).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let target = request
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split(' ').next())
                .unwrap_or("");
            let Some(query) = target.strip_prefix("/callback") else {
                let _ = respond(&mut stream, "404 Not Found", "").await;
                continue;
            };
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                    .into_owned()
                    .collect();
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let outcome = if get("state").as_deref() != Some(state) {
                Err(OidcError::StateMismatch)
            } else if let Some(code) = get("error") {
                Err(OidcError::OAuth {
                    code,
                    description: get("error_description"),
                })
            } else {
                get("code").map(Secret::new).ok_or_else(|| {
                    OidcError::Loopback("the redirect carried neither a code nor an error".into())
                })
            };
            let page = if outcome.is_ok() {
                DONE_PAGE
            } else {
                FAILED_PAGE
            };
            let _ = respond(&mut stream, "200 OK", page).await;
            return outcome;
        }
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
