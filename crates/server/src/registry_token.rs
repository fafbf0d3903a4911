//! The broker as a container registry's token server (CNCF distribution's token auth):
//! robots authenticate with any of their methods, and get a short-lived JWT whose
//! `access` claim grants what their policy allows of what they asked — so a CronJob
//! pulls with its robot identity and no static registry password exists anywhere.
//!
//! `GET /registry/token?service=…&scope=repository:<name>:<actions>` (HTTP Basic,
//! Negotiate or Bearer, as the robot API), and `POST` with the OAuth2 form containerd
//! sends first (`grant_type=password`, the robot's name and secret). Tokens: `iss` the
//! configured issuer, `aud` the service (a string: distribution rejects a list), `sub` the
//! robot, `access` the granted subset, header `x5c` the signing certificate chain.

use crate::access::Access;
use crate::auth::Robot;
use crate::broker::Broker;
use crate::caller::{Caller, Method};
use crate::outcome::{Outcome, Source, Vended};
use crate::refusal::{Code, Refusal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use credkeeper_core::{Secret, Timestamp};
use serde_json::{Value, json};
use std::sync::Arc;

/// Names longer than this are not repository names (distribution's limit).
const NAME_MAX: usize = 255;

/// Whether `name` is a repository name in the distribution reference grammar: path
/// components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` separated by `/`, the first of
/// them optionally a registry host (`localhost:5000`, `r.example.org`). Nothing else may
/// meet a policy glob: `test/../other/x` must not be `test/*`'s to grant.
pub fn is_repository_name(name: &str) -> bool {
    if name.is_empty() || name.len() > NAME_MAX {
        return false;
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let rest: Vec<&str> = components.collect();
    (is_path_component(first) || (!rest.is_empty() && is_registry_host(first)))
        && rest.iter().all(|c| is_path_component(c))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = c.as_bytes();
    loop {
        let run = rest.iter().take_while(|b| alnum(b)).count();
        if run == 0 {
            return false;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        let sep = rest.iter().take_while(|b| !alnum(b)).count();
        if !matches!(&rest[..sep], b"." | b"_" | b"__") && !rest[..sep].iter().all(|b| *b == b'-') {
            return false;
        }
        rest = &rest[sep..];
    }
}

/// `host[:port]`, the host of DNS labels (letters, digits, inner `-`) joined by `.`; as
/// docker reads a reference, only a component with a `.` or a `:`, or `localhost`, is one.
fn is_registry_host(d: &str) -> bool {
    if !d.contains(['.', ':']) && d != "localhost" {
        return false;
    }
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(label)
}

/// `team/*` matches `team/app` and `team/sub/app`; `*` alone matches every name.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// What of `asked` the robot's `policy` allows: per asked scope, the actions some policy
/// entry for that type and name grants (`*` grants every action). Scopes with nothing
/// granted are left out, as the token protocol does.
pub fn grant(policy: &[Access], asked: &[Access]) -> Vec<Access> {
    asked
        .iter()
        .filter_map(|a| {
            let allowed: Vec<&String> = policy
                .iter()
                .filter(|p| p.kind == a.kind && name_matches(&p.name, &a.name))
                .flat_map(|p| p.actions.iter())
                .collect();
            let actions: Vec<String> = a
                .actions
                .iter()
                .filter(|act| allowed.iter().any(|p| *p == "*" || p == act))
                .cloned()
                .collect();
            (!actions.is_empty()).then(|| Access {
                kind: a.kind.clone(),
                name: a.name.clone(),
                actions,
            })
        })
        .collect()
}

/// The `scope` parameters (repeated, or space-separated in one) of a query or form.
fn scopes_of(raw: &[u8]) -> Vec<Access> {
    url::form_urlencoded::parse(raw)
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Access::parse).collect::<Vec<_>>())
        .collect()
}

/// `GET /registry/token`
pub async fn get_token(
    State(broker): State<Arc<Broker>>,
    Robot(caller): Robot,
    RawQuery(raw): RawQuery,
) -> Result<Response, Refusal> {
    let param = |name: &str| {
        url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let service = param("service");
    let vended = issue(
        &broker,
        &caller,
        service.as_deref(),
        &scopes_of(raw.as_deref().unwrap_or("").as_bytes()),
    )
    .await?;
    // `offline_token=true`: also an identity token, which a credential helper hands to
    // skopeo or containerd as `<token>`; they trade it here (`grant_type=refresh_token`).
    let mut identity = None;
    if param("offline_token").as_deref() == Some("true") {
        let service = broker
            .config
            .registry
            .as_ref()
            .map(|r| r.service.clone())
            .unwrap_or_default();
        let (token, _) = broker
            .issuer
            .sign(&credkeeper_issuer::Grant {
                subject: &caller.robot,
                scope: "",
                audience: Some(Value::String(identity_audience(&service))),
                lifetime: IDENTITY_SECS,
            })
            .map_err(|e| Refusal::internal(e.to_string()))?;
        identity = Some(token);
    }
    Ok(vended.answer(|mut answer| {
        if let Some(token) = identity {
            answer["refresh_token"] = Value::String(token.expose().to_string());
        }
        Json(answer).into_response()
    }))
}

/// How long an identity token from `offline_token=true` lives (a helper asks for a new one
/// on every `get`).
const IDENTITY_SECS: i64 = 3600;

/// The audience of identity tokens: only this token server takes them, and nothing takes
/// them as access tokens.
fn identity_audience(service: &str) -> String {
    format!("registry-identity:{service}")
}

/// The robot an identity token was made for, after checking it is one of ours.
fn identity_robot(broker: &Broker, token: &str) -> Result<String, Refusal> {
    let service = broker
        .config
        .registry
        .as_ref()
        .map(|r| r.service.clone())
        .unwrap_or_default();
    let jwt = credkeeper_core::Jwt::decode(token)
        .map_err(|_| Refusal::unauthenticated("the identity token is not a JWT"))?;
    let expect = credkeeper_core::verify::Expectations {
        issuer: Some(broker.issuer.url().to_string()),
        audience: Some(identity_audience(&service)),
        leeway: 30,
        ..Default::default()
    };
    credkeeper_core::verify::verify(&jwt, &broker.issuer.jwks(), &expect, Timestamp::now())
        .map_err(|e| Refusal::unauthenticated(format!("identity token: {e}")))?;
    let robot = jwt.subject().unwrap_or_default().to_string();
    broker
        .config
        .robot(&robot)
        .map(|_| robot.clone())
        .ok_or_else(|| {
            Refusal::unauthenticated(format!("identity token for unknown robot `{robot}`"))
        })
}

/// The OAuth2 form of `POST /registry/token`, read by hand: `scope` may come more than
/// once (skopeo repeats it on its retry after `insufficient_scope`), which a derived
/// form decoder refuses as a duplicate field. Other fields count once: the first wins, as
/// `GET` reads its query.
pub struct TokenForm {
    grant_type: String,
    service: Option<String>,
    scopes: Vec<Access>,
    username: Option<String>,
    password: Option<Secret>,
    refresh_token: Option<Secret>,
}

impl TokenForm {
    pub fn parse(body: &[u8]) -> Result<TokenForm, Refusal> {
        let field = |name: &str| {
            url::form_urlencoded::parse(body)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let grant_type = field("grant_type").ok_or_else(|| {
            Refusal::new(
                Code::BadRequest,
                "the token form has no grant_type (password or refresh_token)",
            )
        })?;
        Ok(TokenForm {
            grant_type,
            service: field("service"),
            scopes: scopes_of(body),
            username: field("username"),
            password: field("password").map(Secret::new),
            refresh_token: field("refresh_token").map(Secret::new),
        })
    }
}

/// `POST /registry/token` (OAuth2 form): the password grant with the robot's name and
/// secret (containerd's first try), or the refresh-token grant with an identity token
/// from `offline_token=true` (skopeo and containerd with `<token>` from a helper).
/// Anything else answers 401, on which containerd falls back to `GET` with Basic.
pub async fn post_token(
    State(broker): State<Arc<Broker>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let form = TokenForm::parse(&body)?;
    let scopes = &form.scopes;
    // An identity token also arrives as the password of user `<token>`: the kubelet's
    // credential providers speak only user/password, and containerd sends the password
    // grant with them.
    let identity = match form.grant_type.as_str() {
        "refresh_token" => form.refresh_token.as_ref(),
        "password" if form.username.as_deref() == Some("<token>") => form.password.as_ref(),
        _ => None,
    };
    if let Some(token) = identity {
        let robot = identity_robot(&broker, token.expose())
            .map_err(|refusal| refusal.by("(identity token)", None))?;
        let caller = Caller {
            robot,
            method: Method::IdentityToken,
        };
        let vended = issue(&broker, &caller, form.service.as_deref(), scopes).await?;
        return Ok(vended.answer(|answer| Json(answer).into_response()));
    }
    let (Some(robot), Some(secret)) = (form.username.as_deref(), form.password.as_ref()) else {
        return Err(Refusal::unauthenticated(format!(
            "grant_type {} is not served here; use GET with the robot's credentials",
            form.grant_type
        )));
    };
    if form.grant_type != "password" {
        return Err(Refusal::unauthenticated(format!(
            "grant_type {} is not served here",
            form.grant_type
        )));
    }
    if let Err(refusal) = broker.authenticate(robot, secret).await {
        return Err(refusal.by(robot, None));
    }
    let caller = Caller {
        robot: robot.to_string(),
        method: Method::Secret,
    };
    let vended = issue(&broker, &caller, form.service.as_deref(), scopes).await?;
    Ok(vended.answer(|answer| Json(answer).into_response()))
}

async fn issue(
    broker: &Broker,
    caller: &Caller,
    service: Option<&str>,
    asked: &[Access],
) -> Result<Vended<Value>, Refusal> {
    let (Some(signer), Some(config)) = (
        broker.registry_signer.as_ref(),
        broker.config.registry.as_ref(),
    ) else {
        return Err(Refusal::new(
            Code::UnknownProvider,
            "this broker is not a registry token server (no [registry] section)",
        ));
    };
    if let Some(s) = service
        && s != config.service
    {
        return Err(Refusal::new(
            Code::BadRequest,
            format!("this token server serves `{}`, not `{s}`", config.service),
        ));
    }
    // A name outside the grammar is refused before any policy glob sees it.
    if let Some(bad) = asked
        .iter()
        .find(|a| a.is_repository() && !is_repository_name(&a.name))
    {
        let refusal = Refusal::new(
            Code::BadRequest,
            format!(
                "scope `{}:{}:{}`: `{}` is not a repository name (path components of lower-case letters and digits, joined by `.`, `_`, `__` or `-`, separated by `/`)",
                bad.kind,
                bad.name,
                bad.actions.join(","),
                bad.name
            ),
        );
        return Err(refusal.by(&caller.robot, Some(caller.method)));
    }
    let policy: Vec<Access> = broker
        .config
        .robot(&caller.robot)
        .map(|r| r.registry.iter().filter_map(|p| Access::parse(p)).collect())
        .unwrap_or_default();
    let granted = grant(&policy, asked);
    let now = Timestamp::now();
    let lifetime = config.lifetime;
    let claims = json!({
        "iss": config.issuer.clone().unwrap_or_else(|| broker.issuer.url().to_string()),
        "sub": caller.robot,
        "aud": config.service,
        "exp": now.unix() + lifetime,
        "nbf": now.unix(),
        "iat": now.unix(),
        "jti": credkeeper_issuer::new_jti(),
        "access": granted.iter().map(Access::claim).collect::<Vec<_>>(),
    });
    let token = signer
        .sign(&claims)
        .map_err(|e| Refusal::internal(e.to_string()))?;
    let described: Vec<String> = granted
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect();
    let granted = (crate::policy::REGISTRY, described.join(" "));
    let outcome = Outcome::vended(
        &caller.robot,
        caller.method,
        (granted.0, granted.1.into(), config.service.as_str().into()),
        Source::Signed,
        Timestamp::from_unix(now.unix() + lifetime),
    );
    let answer = json!({
        "token": token.expose(),
        "access_token": token.expose(),
        "expires_in": lifetime,
        "issued_at": now.to_string(),
    });
    Ok(Vended::new(answer, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Access {
        Access::parse(s).unwrap()
    }

    #[test]
    fn a_robot_gets_only_the_asked_actions_its_policy_allows() {
        let policy = [
            a("repository:team/*:pull"),
            a("repository:team/app:push"),
            a("repository:open:*"),
        ];
        assert_eq!(
            grant(&policy, &[a("repository:team/app:pull,push,delete")]),
            vec![a("repository:team/app:pull,push")]
        );
        assert_eq!(
            grant(&policy, &[a("repository:team/other:push,pull")]),
            vec![a("repository:team/other:pull")]
        );
        assert_eq!(
            grant(&policy, &[a("repository:open:pull,delete")]),
            vec![a("repository:open:pull,delete")]
        );
        assert!(grant(&policy, &[a("repository:elsewhere:pull")]).is_empty());
        assert!(grant(&policy, &[a("registry:catalog:*")]).is_empty());
        assert!(grant(&[], &[a("repository:team/app:pull")]).is_empty());
    }

    #[test]
    fn repository_names_follow_the_reference_grammar() {
        for ok in [
            "app",
            "team/app",
            "team/sub/app-1",
            "a.b_c__d-e---f/g0",
            "localhost:5000/x",
            "localhost/x",
            "registry.example.org/team/app",
            "Reg-1.example:443/x",
        ] {
            assert!(is_repository_name(ok), "{ok}");
        }
        for bad in [
            "",
            "team/../other/x",
            "team/./x",
            "..",
            "team//x",
            "team/",
            "/team",
            "Team/app",
            "team/App",
            "team/a%2fb",
            "team/a..b",
            "team/a___b",
            "team/-a",
            "team/a-",
            "team/a_",
            "localhost:5000",
            "localhost:/x",
            "-host.example/x",
            "host..example/x",
            "team/a b",
        ] {
            assert!(!is_repository_name(bad), "{bad}");
        }
        assert!(!is_repository_name(&"a".repeat(NAME_MAX + 1)));
    }

    #[test]
    fn scopes_are_read_from_every_scope_parameter() {
        let got = scopes_of(
            b"service=reg&scope=repository%3Ateam%2Fapp%3Apull&scope=repository:b:pull,push%20repository:c:pull",
        );
        assert_eq!(
            got,
            vec![
                a("repository:team/app:pull"),
                a("repository:b:pull,push"),
                a("repository:c:pull")
            ]
        );
        assert_eq!(
            Access::parse("repository:localhost:5000/x:pull")
                .unwrap()
                .name,
            "localhost:5000/x"
        );
        assert!(Access::parse("repository::pull").is_none());
        assert!(Access::parse("nonsense").is_none());
    }
}
