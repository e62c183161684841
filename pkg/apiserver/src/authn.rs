//! Authentication: client certificates (CN = user, O = groups), and as bearer tokens the static
//! token file (`--token-auth-file`), service-account tokens (bound and legacy JWTs) and
//! bootstrap tokens.

use crate::state::ApiState;
use crate::tokens::{BoundObject, SaClaims};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub uid: String,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user from a verified client certificate's subject.
    pub fn from_cert(name: String, groups: Vec<String>) -> User {
        User {
            name,
            groups,
            ..Default::default()
        }
        .authenticated()
    }

    /// Adds `system:authenticated` unless present.
    pub fn authenticated(mut self) -> User {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }

    /// The caller without credentials.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// `system:serviceaccount:<ns>:<name>` with upstream's groups.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> User {
        User {
            name: service_account_username(namespace, name),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            uid: uid.into(),
            extra: BTreeMap::new(),
        }
        .authenticated()
    }

    /// `(namespace, name)` when the user is a service account.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        self.name
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')
    }

    /// The node name when the user is a node (`system:node:<name>` in `system:nodes`).
    pub fn as_node(&self) -> Option<&str> {
        if !self.groups.iter().any(|g| g == "system:nodes") {
            return None;
        }
        self.name.strip_prefix("system:node:")
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
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

/// The bearer token of a request, if it carries one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Recently verified tokens (upstream caches token authentication for 10 s as well), so a
/// client sending the same token on every request costs one signature check per 10 s.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, Option<User>)>>,
}

const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 4096;

impl TokenCache {
    fn get(&self, token: &str) -> Option<Option<User>> {
        let map = self.entries.lock().ok()?;
        let (at, user) = map.get(token)?;
        (at.elapsed() < CACHE_TTL).then(|| user.clone())
    }
    fn put(&self, token: &str, user: Option<User>) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(token.to_string(), (Instant::now(), user));
        }
    }
}

/// The user a bearer token names, or None when the token is not valid.
pub async fn authenticate_token(state: &ApiState, token: &str) -> Option<User> {
    if let Some(u) = state.config.static_tokens.get(token) {
        return Some(u.clone());
    }
    if let Some(cached) = state.token_cache.get(token) {
        return cached;
    }
    let user = if is_bootstrap_token(token) {
        bootstrap_token_user(state, token).await
    } else {
        match service_account_claims(state, token, None).await {
            Ok(c) => Some(claims_user(&c)),
            Err(why) => {
                tracing::debug!(reason = why, "bearer token refused");
                None
            }
        }
    };
    state.token_cache.put(token, user.clone());
    user
}

/// Parses kube-apiserver's `--token-auth-file`: CSV records `token,user,uid[,"group1,group2"]`
/// (further columns ignored; records with an empty token skipped; a later duplicate wins).
pub fn parse_token_file(text: &str) -> Result<HashMap<String, User>, String> {
    let mut tokens = HashMap::new();
    for (n, record) in csv_records(text)?.into_iter().enumerate() {
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        if record.len() < 3 {
            return Err(format!(
                "record {}: the token file must have at least 3 columns (token, user name, user uid), found {}",
                n + 1,
                record.len()
            ));
        }
        if record[0].is_empty() {
            tracing::warn!(record = n + 1, "empty token in the token file");
            continue;
        }
        let groups = record
            .get(3)
            .map(|g| g.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let user = User {
            name: record[1].clone(),
            uid: record[2].clone(),
            groups,
            extra: BTreeMap::new(),
        }
        .authenticated();
        if tokens.insert(record[0].clone(), user).is_some() {
            tracing::warn!(record = n + 1, "duplicate token in the token file");
        }
    }
    Ok(tokens)
}

/// RFC 4180 records as Go's encoding/csv reads them: quoted fields may hold commas, newlines
/// and doubled quotes; a `\r\n` ends a record like `\n`.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                        None => {
                            return Err(format!(
                                "line {line}: extraneous or missing \" in quoted-field"
                            ));
                        }
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                    return Err(format!(
                        "line {line}: extraneous or missing \" in quoted-field"
                    ));
                }
                at_field_start = false;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_field_start = true;
                line += 1;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// The user of verified service-account claims, with upstream's `extra` keys.
pub fn claims_user(c: &SaClaims) -> User {
    let mut u = User::service_account(&c.namespace, &c.name, &c.uid);
    let mut extra = |k: &str, v: &str| {
        u.extra
            .insert(format!("authentication.kubernetes.io/{k}"), vec![v.into()]);
    };
    if let Some(p) = &c.pod {
        extra("pod-name", &p.name);
        extra("pod-uid", &p.uid);
    }
    if let Some(n) = &c.node {
        extra("node-name", &n.name);
        extra("node-uid", &n.uid);
    }
    if let Some(j) = &c.jti {
        extra("credential-id", &format!("JTI={j}"));
    }
    u
}

/// Verifies a service-account JWT: signature, issuer, times, audiences (`audiences`, or the API
/// server's own when None), and that the service account and the object the token is bound to
/// still exist with the same uids (deleting either invalidates the token).
pub async fn service_account_claims(
    state: &ApiState,
    token: &str,
    audiences: Option<&[String]>,
) -> Result<SaClaims, &'static str> {
    let signer = state
        .config
        .token_signer
        .as_ref()
        .ok_or("no service-account key configured")?;
    let claims = signer.verify_signature(token).ok_or("bad signature")?;
    let accepted = audiences.unwrap_or(&signer.api_audiences);
    let now = jiff::Timestamp::now().as_second();
    let c = crate::tokens::check_claims(&claims, &signer.issuer, accepted, now)?;
    let sa = crate::storage::get_stored(state, "core/serviceaccounts", Some(&c.namespace), &c.name)
        .await
        .map_err(|_| "looking up the service account failed")?
        .ok_or("the service account no longer exists")?;
    let deleted = |o: &serde_json::Value| {
        o.pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
    };
    if deleted(&sa) {
        return Err("the service account is being deleted");
    }
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !c.legacy && sa_uid != c.uid {
        return Err("the service account was recreated");
    }
    let check_bound = |b: &BoundObject, obj: Option<serde_json::Value>| match obj {
        Some(o)
            if b.uid.is_empty()
                || o.pointer("/metadata/uid").and_then(|v| v.as_str()) == Some(b.uid.as_str()) =>
        {
            Ok(o)
        }
        _ => Err("the object the token is bound to no longer exists"),
    };
    if let Some(p) = &c.pod {
        let pod = crate::storage::get_stored(state, "core/pods", Some(&c.namespace), &p.name).await;
        check_bound(p, pod.ok().flatten())?;
    }
    if let Some(s) = &c.secret {
        let secret =
            crate::storage::get_stored(state, "core/secrets", Some(&c.namespace), &s.name).await;
        let secret = check_bound(s, secret.ok().flatten())?;
        if c.legacy {
            // A legacy token is valid only while its Secret holds it for this account.
            let held = secret
                .pointer("/data/token")
                .and_then(|v| v.as_str())
                .and_then(|b| {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
                })
                .is_some_and(|t| t == token.as_bytes());
            let for_sa = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(|v| v.as_str())
                == Some(c.name.as_str());
            if !held || !for_sa || deleted(&secret) {
                return Err("the token's secret no longer holds it");
            }
        }
    }
    if let Some(n) = &c.node {
        let node = crate::storage::get_stored(state, "core/nodes", None, &n.name).await;
        check_bound(n, node.ok().flatten())?;
    }
    let mut c = c;
    if c.legacy {
        c.uid = sa_uid.to_string();
    }
    Ok(c)
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`: the shape of a bootstrap token.
fn is_bootstrap_token(token: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    token
        .split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// A bootstrap token from its `kube-system/bootstrap-token-<id>` Secret.
async fn bootstrap_token_user(state: &ApiState, token: &str) -> Option<User> {
    let (id, secret) = token.split_once('.')?;
    let obj = crate::storage::get_stored(
        state,
        "core/secrets",
        Some("kube-system"),
        &format!("bootstrap-token-{id}"),
    )
    .await
    .ok()??;
    let field = |k: &str| -> Option<String> {
        let b = obj.get("data")?.get(k)?.as_str()?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()?;
        String::from_utf8(bytes).ok()
    };
    if obj["type"] != "bootstrap.kubernetes.io/token"
        || field("token-id").as_deref() != Some(id)
        || field("token-secret").as_deref() != Some(secret)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
        || obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
    {
        return None;
    }
    if let Some(exp) = field("expiration")
        && kubox_core::meta::parse_time(&exp).is_none_or(|t| t < jiff::Timestamp::now())
    {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = field("auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(String::from),
        );
    }
    Some(
        User {
            name: format!("system:bootstrap:{id}"),
            groups,
            ..Default::default()
        }
        .authenticated(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_records_as_upstream_reads_them() {
        let users = parse_token_file(
            "t1,alice,u1,\"devs,ops\"\r\nt2,bob,u2\n\n,empty,u3\nt3,\"c,d\",u4,,extra\n",
        )
        .unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users["t1"].name, "alice");
        assert_eq!(users["t1"].uid, "u1");
        assert_eq!(
            users["t1"].groups,
            vec!["devs", "ops", "system:authenticated"]
        );
        assert_eq!(users["t2"].groups, vec!["system:authenticated"]);
        assert_eq!(users["t3"].name, "c,d");
        assert!(
            parse_token_file("t1,alice\n")
                .unwrap_err()
                .contains("at least 3 columns")
        );
        assert!(parse_token_file("t1,\"alice,u1\n").is_err());
    }

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

    #[test]
    fn service_account_and_node_users() {
        let u = User::service_account("dev", "builder", "u1");
        assert_eq!(u.name, "system:serviceaccount:dev:builder");
        assert_eq!(u.as_service_account(), Some(("dev", "builder")));
        assert!(u.in_group("system:serviceaccounts:dev"));
        let n = User::from_cert("system:node:n1".into(), vec!["system:nodes".into()]);
        assert_eq!(n.as_node(), Some("n1"));
        assert_eq!(u.as_node(), None);
    }

    #[test]
    fn bearer_tokens_and_bootstrap_token_shape() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        assert!(!is_bootstrap_token("abcdef.0123456789ABCDEF"));
        assert!(!is_bootstrap_token("a.b.c"));
    }
}
