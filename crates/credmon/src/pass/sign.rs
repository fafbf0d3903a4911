//! Signing a local token (upstream's local credmon mode): the provider's issuer, opened
//! once, and the `.use` in the shape the provider's settings ask for.

use super::files::check_secret_files;
use super::{Credmon, Outcome, lock};
use crate::error::PassError;
use crate::settings::LocalProvider;
use crate::status::{CredStatus, Kind};
use credkeeper_core::Timestamp;
use credkeeper_issuer::{Grant, LocalIssuer};
use serde_json::json;
use std::sync::Arc;

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

    /// Sign a local token for `user` with the claims upstream's local mode uses.
    pub(super) fn sign(&self, user: &str, token: &str, index: usize) -> Outcome {
        // The `.top` is the user's credential as the CredD stored it: signed for only while
        // it is private, as an OAuth `.top` is refreshed only then.
        let dir = self.dir().join(user);
        if let Err(e) = check_secret_files(&dir, &[&dir.join(format!("{token}.top"))]) {
            return self.fail(user, token, Kind::Local, e);
        }
        let provider = &self.settings.local[index];
        let issuer = match self.issuer(provider) {
            Ok(i) => i,
            Err(e) => return self.fail(user, token, Kind::Local, e),
        };
        let scope = provider.authz_template.replace("{username}", user);
        let audience = (!provider.audience.is_empty()).then(|| json!(provider.audience));
        let grant = Grant {
            subject: user,
            scope: &scope,
            audience,
            lifetime: provider.issuer.lifetime,
        };
        let (jwt, expires) = match issuer.sign(&grant) {
            Ok(x) => x,
            Err(e) => return self.fail(user, token, Kind::Local, e.to_string()),
        };
        let contents = if provider.use_json {
            json!({"access_token": jwt.expose(), "expires_in": provider.issuer.lifetime})
                .to_string()
        } else {
            format!("{}\n", jwt.expose())
        };
        if let Err(e) = self.write(&dir.join(format!("{token}.use")), &contents) {
            return self.fail(user, token, Kind::Local, e);
        }
        tracing::info!("signed a local token for {user}/{token}");
        let now = Timestamp::now().unix();
        self.record(user, token, Kind::Local, |s| {
            *s = CredStatus {
                user: user.into(),
                token: token.into(),
                kind: Kind::Local,
                expires_at: Some(expires.unix()),
                last_refresh: Some(now),
                ..Default::default()
            };
        });
        Outcome::Signed
    }
}
