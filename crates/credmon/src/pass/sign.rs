//! Signing a local token (upstream's local credmon mode): the provider's issuer, opened
//! once, and the `.use` in the shape the provider's settings ask for.

use super::commit::Commits;
use super::files::check_secret_file;
use super::{Credmon, Outcome, lock};
use crate::error::PassError;
use crate::settings::LocalProvider;
use crate::status::{CredStatus, Kind};
use credkeeper_core::Timestamp;
use credkeeper_issuer::{Grant, LocalIssuer};
use credkeeper_sink::batch::Replacement;
use credkeeper_sink::spare::Spares;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

impl Credmon {
    pub(super) fn issuer(&self, provider: &LocalProvider) -> Result<Arc<LocalIssuer>, PassError> {
        let mut issuers = lock(&self.issuers);
        if let Some(i) = issuers.get(&provider.name) {
            return Ok(i.clone());
        }
        let issuer = Arc::new(LocalIssuer::open(&provider.issuer)?);
        issuers.insert(provider.name.clone(), issuer.clone());
        Ok(issuer)
    }

    /// Sign a local token for `user` with the claims upstream's local mode uses, and
    /// place its `.use` with the pass's other files. `permit` is held while signing.
    pub(super) async fn sign(
        &self,
        user: String,
        token: String,
        index: usize,
        permit: Option<OwnedSemaphorePermit>,
        commits: &Commits,
    ) -> Outcome {
        // Signed and staged on this thread, as a refresh stages: both cost less than a
        // hand-off to a blocking thread and back.
        let signed = match self.stage_signed(&user, &token, index, commits.spares()) {
            Ok((files, expires)) => commits.place(files, permit).await.map(|()| expires),
            Err(e) => Err(e),
        };
        let expires = match signed {
            Ok(e) => e,
            Err(e) => return self.fail(&user, &token, Kind::Local, e),
        };
        tracing::info!("signed a local token for {user}/{token}");
        let now = Timestamp::now().unix();
        self.record(&user, &token, Kind::Local, |s| {
            *s = CredStatus {
                user: user.clone(),
                token: token.clone(),
                kind: Kind::Local,
                expires_at: Some(expires.unix()),
                last_refresh: Some(now),
                ..Default::default()
            };
        });
        Outcome::Signed
    }

    /// The signing itself, blocking: the token, and its `.use` staged.
    fn stage_signed(
        &self,
        user: &str,
        token: &str,
        index: usize,
        spares: Option<&Spares>,
    ) -> Result<(Replacement, Timestamp), PassError> {
        // The `.top` is the user's credential as the CredD stored it: signed for only while
        // it is private, as an OAuth `.top` is refreshed only then.
        let dir = self.dir().join(user);
        check_secret_file(&dir.join(format!("{token}.top")), &dir)?;
        let provider = &self.settings.local[index];
        let issuer = self.issuer(provider)?;
        let scope = provider.authz_template.replace("{username}", user);
        let audience = (!provider.audience.is_empty()).then(|| json!(provider.audience));
        let grant = Grant {
            subject: user,
            scope: &scope,
            audience,
            lifetime: provider.issuer.lifetime,
        };
        let (jwt, expires) = issuer.sign(&grant)?;
        let contents = if provider.use_json {
            json!({"access_token": jwt.expose(), "expires_in": provider.issuer.lifetime})
                .to_string()
        } else {
            format!("{}\n", jwt.expose())
        };
        let use_path = dir.join(format!("{token}.use"));
        let files = credkeeper_sink::condor::stage_cred_files(&[(&use_path, &contents)], spares)?;
        Ok((files, expires))
    }
}
