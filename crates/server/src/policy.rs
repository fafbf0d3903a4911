//! What a robot may get: the provider it may use, the scopes and the audience a token for
//! it carries. Pure: it reads the configuration and nothing else (no store, no network,
//! no clock), so every rule is a unit test below.

use crate::config::{Config, ProviderSection, RobotSection, fill};
use crate::refusal::{Code, Refusal};
use credkeeper_core::Scopes;

/// The name of the broker's own issuer among the providers.
pub const LOCAL: &str = "local";

/// The provider a registry token is vended under (the broker signs it with its registry key).
pub const REGISTRY: &str = "registry";

/// What a robot's request was granted.
#[derive(Debug)]
pub struct Decision<'c> {
    pub robot: &'c RobotSection,
    /// `None` for the broker's own issuer.
    pub provider: Option<&'c ProviderSection>,
    /// Space-separated, as the token carries them.
    pub scope: String,
    pub audience: String,
}

/// The robot named `robot`, if it may use `provider` at all.
pub fn robot_for<'c>(
    config: &'c Config,
    robot: &str,
    provider: &str,
) -> Result<&'c RobotSection, Refusal> {
    // An unknown robot is answered as a wrong secret: names are not confirmed to strangers.
    let r = config
        .robot(robot)
        .ok_or_else(|| Refusal::unauthenticated("robot name or secret is wrong"))?;
    if !r.providers.iter().any(|p| p == provider) {
        return Err(Refusal::forbidden(format!(
            "robot `{robot}` may not use provider `{provider}`"
        )));
    }
    Ok(r)
}

/// Decide what `robot` gets from `provider` for the scopes and audience it asked (each
/// `None` for the default: the issuer's `authz_template` or the provider's `scopes`, the
/// issuer's or the provider's `audience`).
pub fn decide<'c>(
    config: &'c Config,
    robot: &str,
    provider: &str,
    scopes: Option<&str>,
    audience: Option<&str>,
) -> Result<Decision<'c>, Refusal> {
    let r = robot_for(config, robot, provider)?;
    let section = match provider {
        LOCAL => None,
        name => Some(config.provider(name).ok_or_else(|| {
            Refusal::new(Code::UnknownProvider, format!("no provider named `{name}`"))
        })?),
    };
    let bad = |e: credkeeper_core::ScopeError| Refusal::new(Code::BadRequest, e.to_string());
    // Signed as written, so each is taken only as written (no `..`, nothing encoded).
    let asked = match scopes {
        Some(text) => Scopes::requested(text).map_err(bad)?,
        None => None,
    };
    let scopes = match asked {
        Some(asked) => asked,
        None => {
            let default = match section {
                None => fill(&config.issuer.authz_template, r.username()),
                Some(p) => p.scopes.clone().unwrap_or_default(),
            };
            Scopes::requested(&default)
                .map_err(bad)?
                .unwrap_or_default()
        }
    };
    let missing = r.allowed_scopes().missing(scopes.set());
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        return Err(Refusal::forbidden(format!(
            "robot `{}` may not have scope {}",
            r.name,
            names.join(" ")
        )));
    }
    let audience = match (audience, section) {
        (Some(a), _) if !r.may_use_audience(a) => {
            return Err(Refusal::forbidden(format!(
                "robot `{}` may not ask for audience {a}",
                r.name
            )));
        }
        (Some(a), _) => a.to_string(),
        (None, None) => config.issuer.audience.clone(),
        (None, Some(p)) => p.audience.clone().unwrap_or_default(),
    };
    Ok(Decision {
        robot: r,
        provider: section,
        scope: scopes.into_text(),
        audience,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "c.toml",
            r#"
[issuer]
authz_template = "read:/home/{username}"
audience = "https://storage.example"

[[provider]]
name = "iam"
issuer = "https://iam.example"
client_id = "c"
scopes = "openid compute.read"
audience = "https://compute.example"

[[robot]]
name = "ci"
username = "cibot"
providers = ["local", "iam"]
scopes = ["read:/home/{username}", "storage.modify:/data", "openid", "compute.read"]
audiences = ["https://storage.example", "https://other.example"]

[[robot]]
name = "narrow"
providers = ["local"]
scopes = ["read:/public"]
"#,
            std::iter::empty(),
        )
        .unwrap()
    }

    fn refused(r: Result<Decision<'_>, Refusal>) -> (Code, String) {
        let e = r.unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn asking_for_nothing_gets_the_issuer_s_template_for_the_robot_s_username() {
        let c = config();
        let d = decide(&c, "ci", LOCAL, None, None).unwrap();
        assert_eq!(d.scope, "read:/home/cibot");
        assert_eq!(d.audience, "https://storage.example");
        assert!(d.provider.is_none());
    }

    #[test]
    fn a_provider_s_defaults_are_its_own() {
        let c = config();
        let d = decide(&c, "ci", "iam", None, None).unwrap();
        assert_eq!(d.scope, "openid compute.read");
        assert_eq!(d.audience, "https://compute.example");
        assert_eq!(d.provider.unwrap().name, "iam");
    }

    #[test]
    fn asked_scopes_are_granted_when_the_robot_s_scopes_cover_them() {
        let c = config();
        let d = decide(
            &c,
            "ci",
            LOCAL,
            Some("storage.create:/data/run1,read:/home/cibot"),
            None,
        )
        .unwrap();
        assert_eq!(d.scope, "storage.create:/data/run1 read:/home/cibot");
    }

    #[test]
    fn a_scope_beyond_the_robot_s_is_refused_and_named() {
        let c = config();
        let (code, message) = refused(decide(&c, "ci", LOCAL, Some("read:/data2 openid"), None));
        assert_eq!(code, Code::Forbidden);
        assert_eq!(message, "robot `ci` may not have scope read:/data2");
    }

    #[test]
    fn a_path_that_climbs_or_hides_a_dot_is_a_bad_request_even_when_covered() {
        let c = config();
        for asked in ["read:/home/cibot/../other", "read:/home/cibot/%2e%2e/other"] {
            let (code, _) = refused(decide(&c, "ci", LOCAL, Some(asked), None));
            assert_eq!(code, Code::BadRequest, "{asked}");
        }
    }

    #[test]
    fn an_audience_is_granted_only_from_the_robot_s_list() {
        let c = config();
        let d = decide(&c, "ci", LOCAL, None, Some("https://other.example")).unwrap();
        assert_eq!(d.audience, "https://other.example");
        let (code, message) = refused(decide(&c, "ci", LOCAL, None, Some("https://evil.example")));
        assert_eq!(code, Code::Forbidden);
        assert_eq!(
            message,
            "robot `ci` may not ask for audience https://evil.example"
        );
    }

    #[test]
    fn a_provider_not_in_the_robot_s_list_is_forbidden_even_when_configured() {
        let c = config();
        let (code, message) = refused(decide(&c, "narrow", "iam", None, None));
        assert_eq!(code, Code::Forbidden);
        assert_eq!(message, "robot `narrow` may not use provider `iam`");
    }

    #[test]
    fn an_unknown_robot_is_told_only_that_the_name_or_secret_is_wrong() {
        let c = config();
        let (code, message) = refused(decide(&c, "nobody", LOCAL, None, None));
        assert_eq!(code, Code::Unauthenticated);
        assert_eq!(message, "robot name or secret is wrong");
    }
}
