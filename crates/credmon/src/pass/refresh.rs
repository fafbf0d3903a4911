//! Renewing an OAuth credential at its provider, exactly as upstream: the `.meta`'s token
//! URL, client and refresh token; the new `.use`, then the `.top`.

use super::commit::Commits;
use super::files::{fingerprint, read_secret_json};
use super::{Credmon, Outcome};
use crate::error::{CredFileError, PassError};
use crate::status::{CredStatus, Kind};
use credkeeper_core::{Secret, Timestamp};
use serde_json::{Value, json};
use std::path::Path;
use tokio::sync::OwnedSemaphorePermit;

impl Credmon {
    /// Refresh `<user>/<token>` exactly as upstream does: a form POST to the `.meta`'s
    /// token URL with client id, client secret and refresh token, no scope. With
    /// `unless_off` (the `.use`'s ctime; the scan did not read the `.meta`), nothing is
    /// done if the `.meta` says `use_refresh_token: false`.
    /// `permit` is held while the provider is asked, and given back before the files'
    /// commit is waited for.
    pub(super) async fn refresh(
        &self,
        user: &str,
        token: &str,
        unless_off: Option<super::scan::Ctime>,
        permit: Option<OwnedSemaphorePermit>,
        commits: &Commits,
    ) -> Outcome {
        let dir = self.dir().join(user);
        let top_path = dir.join(format!("{token}.top"));
        let meta_path = dir.join(format!("{token}.meta"));
        let use_path = dir.join(format!("{token}.use"));
        let prepared = (|| -> Result<_, PassError> {
            let (meta, meta_mtime) = read_secret_json(&meta_path, &dir)?;
            if let Some(use_ctime) = unless_off
                && meta.get("use_refresh_token").and_then(Value::as_bool) == Some(false)
            {
                self.remember_off(&use_path, use_ctime, meta_mtime);
                return Ok(None);
            }
            let (top, _) = read_secret_json(&top_path, &dir)?;
            let rt = top
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| CredFileError::NoRefreshToken {
                    path: top_path.clone(),
                })?
                .to_string();
            let field = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
            let missing = |field| CredFileError::MissingField {
                path: meta_path.clone(),
                field,
            };
            let token_url = field("token_url").ok_or_else(|| missing("token_url"))?;
            let client_id = field("client_id").ok_or_else(|| missing("client_id"))?;
            let provider = token
                .split('_')
                .next()
                .unwrap_or(token)
                .to_ascii_uppercase();
            // The secret need not sit in `.meta` when the provider is configured here.
            let secret = match field("client_secret") {
                Some(s) => s,
                None => match self
                    .settings
                    .config
                    .get(&format!("{provider}_CLIENT_SECRET_FILE"))
                {
                    Some(f) => {
                        credkeeper_sink::perm::read_private(Path::new(&f), "client-secret file")?
                    }
                    None => String::new(),
                },
            };
            self.policy.check("token URL", &token_url)?;
            Ok(Some((
                top,
                Secret::new(rt),
                token_url,
                client_id,
                Secret::new(secret),
            )))
        })();
        let (mut top, rt, token_url, client_id, secret) = match prepared {
            Ok(Some(x)) => x,
            Ok(None) => return Outcome::Off,
            Err(e) => return self.fail(user, token, Kind::OAuth, e),
        };
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.expose()),
            ("refresh_token", rt.expose()),
        ];
        let response =
            self.http
                .post_form(&token_url, &form, None)
                .await
                .and_then(|(status, body)| {
                    credkeeper_oidc::parse_token_response_whole(&token_url, status, body)
                });
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_invalid_grant() => {
                tracing::warn!("{user}/{token}: needs a new login: {e}");
                let top_stamp = fingerprint(&top_path);
                self.record(user, token, Kind::OAuth, |s| {
                    s.needs_login = Some(e.to_string());
                    s.top_stamp = top_stamp;
                    s.last_error = Some(e.to_string());
                });
                return Outcome::NeedsLogin;
            }
            Err(e) => return self.fail(user, token, Kind::OAuth, e.to_string()),
        };
        let now = Timestamp::now().unix();
        let (response, new_rt, expires_at) = credkeeper_sink::condor::shape_use(response, now);
        // Without a new refresh token the old one stays, as upstream's oauthlib does.
        if let Some(rt) = new_rt {
            top.insert("refresh_token".into(), json!(rt));
        }
        // `.use` before `.top`, as upstream: a job never sees a token older than its `.top`.
        // Staged on this thread: a write into the page cache costs less than a hand-off
        // to a blocking thread and back. Placed with the pass's other files in one commit.
        let staged = credkeeper_sink::condor::stage_cred_files(
            &[
                (&use_path, &Value::Object(response).to_string()),
                (&top_path, &Value::Object(top).to_string()),
            ],
            commits.spares(),
        );
        let written = match staged {
            Ok(files) => commits.place(files, permit).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            return self.fail(user, token, Kind::OAuth, e);
        }
        tracing::info!("refreshed {user}/{token}");
        self.record(user, token, Kind::OAuth, |s| {
            *s = CredStatus {
                user: user.into(),
                token: token.into(),
                kind: Kind::OAuth,
                expires_at,
                last_refresh: Some(now),
                ..Default::default()
            };
        });
        Outcome::Refreshed
    }
}
