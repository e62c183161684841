//! Authentication: client certificates (CN = user, O = groups). Tokens come with access control.

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// A user from a verified client certificate's subject.
    pub fn from_cert(name: String, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name, groups }
    }

    /// The caller without credentials.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

/// Paths anonymous callers may reach.
pub fn anonymous_allowed(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(
        p,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/cacerts"
    ) || p.starts_with("/healthz/")
        || p.starts_with("/livez/")
        || p.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_version_and_cacerts_are_anonymous() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/version",
            "/cacerts",
            "/readyz/ping",
        ] {
            assert!(anonymous_allowed(p), "{p}");
        }
        for p in [
            "/api",
            "/apis",
            "/api/v1/pods",
            "/openapi/v3",
            "/metrics",
            "/",
        ] {
            assert!(!anonymous_allowed(p), "{p}");
        }
    }

    #[test]
    fn certificate_users_are_authenticated() {
        let u = User::from_cert("system:admin".into(), vec!["system:masters".into()]);
        assert_eq!(u.groups, vec!["system:masters", "system:authenticated"]);
        assert!(!u.is_anonymous());
    }
}
