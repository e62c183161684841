//! Service-account tokens: ES256 JSON Web Tokens signed with the cluster's service-account key
//! (upstream's claim layout, so in-cluster clients and `kubectl create token` users see the
//! same tokens as from kube-apiserver), and their verification.

use crate::error::{ApiError, ApiResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};

/// Issuer of legacy (Secret-based) service-account tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// Signs and verifies service-account tokens with one key pair.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
    /// `iss` of issued tokens (`https://kubernetes.default.svc.<domain>`).
    pub issuer: String,
    /// Audiences the API server accepts; the default audiences of issued tokens.
    pub api_audiences: Vec<String>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn pem_der(pem: &str, what: &str) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("{what} is not PEM: {e}"))?;
    Ok(block.contents)
}

impl TokenSigner {
    /// A signer from the PKCS#8 private key and SPKI public key PEMs of the SA key pair.
    pub fn new(
        private_pem: &str,
        public_pem: &str,
        issuer: String,
        api_audiences: Vec<String>,
    ) -> Result<TokenSigner, String> {
        let rng = SystemRandom::new();
        let pkcs8 = pem_der(private_pem, "the service-account key")?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| format!("the service-account key is not an ECDSA P-256 key: {e}"))?;
        let spki = pem_der(public_pem, "the service-account public key")?;
        let public = key.public_key().as_ref().to_vec();
        // The key id upstream uses: base64url(sha256(DER of the public key)).
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(TokenSigner {
            key,
            public,
            kid,
            rng,
            issuer,
            api_audiences,
        })
    }

    /// A signed JWT carrying `claims`.
    pub fn sign(&self, claims: &Value) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| ApiError::internal("signing a service-account token failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// The claims of `token` if it is an ES256 JWT signed by this key (nothing else checked).
    pub fn verify_signature(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let signing_input = &token[..h.len() + 1 + c.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signing_input.as_bytes(), &sig)
            .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
    }
}

/// The object a bound token is tied to (`TokenRequest.spec.boundObjectRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundObject {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What a token says about its holder, after signature, time and audience checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaClaims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub pod: Option<BoundObject>,
    pub secret: Option<BoundObject>,
    pub node: Option<BoundObject>,
    pub jti: Option<String>,
    /// Audiences of the token that the API server accepts.
    pub audiences: Vec<String>,
    pub legacy: bool,
}

/// Claims for a new bound token (upstream's `kubernetes.io` private claim layout).
#[allow(clippy::too_many_arguments)]
pub fn bound_claims(
    issuer: &str,
    audiences: &[String],
    namespace: &str,
    sa_name: &str,
    sa_uid: &str,
    bound: Option<&BoundObject>,
    node: Option<&BoundObject>,
    now: i64,
    expiration_seconds: i64,
) -> Value {
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": sa_name, "uid": sa_uid},
    });
    if let Some(b) = bound {
        let field = match b.kind.as_str() {
            "Pod" => "pod",
            "Secret" => "secret",
            _ => "node",
        };
        k8s[field] = json!({"name": b.name, "uid": b.uid});
    }
    if let Some(n) = node {
        k8s["node"] = json!({"name": n.name, "uid": n.uid});
    }
    json!({
        "aud": audiences,
        "exp": now + expiration_seconds,
        "iat": now,
        "nbf": now,
        "iss": issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{namespace}:{sa_name}"),
    })
}

/// What kubelets ask for their projected tokens (upstream's WarnOnlyBoundTokenExpirationSeconds).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// The validity such tokens get instead: a year (upstream's ExpirationExtensionSeconds).
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

/// `--service-account-extend-token-expiration`: the token is valid a year from `iat`, and
/// `kubernetes.io.warnafter` holds the expiry that was asked for.
pub fn extend_expiration(claims: &mut Value) {
    let iat = claims["iat"].as_i64().unwrap_or_default();
    claims["kubernetes.io"]["warnafter"] = claims["exp"].clone();
    claims["exp"] = json!(iat + EXTENDED_EXPIRATION_SECONDS);
}

/// Checks issuer, expiry, not-before and audience of verified `claims` at `now` (Unix seconds)
/// and extracts the holder. `accepted` are the audiences the caller accepts.
pub fn check_claims(
    claims: &Value,
    issuer: &str,
    accepted: &[String],
    now: i64,
) -> Result<SaClaims, &'static str> {
    const LEEWAY: i64 = 60;
    let iss = claims["iss"].as_str().unwrap_or_default();
    if iss == LEGACY_ISSUER {
        let s = |k: &str| {
            claims[format!("kubernetes.io/serviceaccount/{k}")]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let out = SaClaims {
            namespace: s("namespace"),
            name: s("service-account.name"),
            uid: s("service-account.uid"),
            secret: Some(BoundObject {
                kind: "Secret".into(),
                name: s("secret.name"),
                uid: String::new(),
            }),
            legacy: true,
            ..Default::default()
        };
        if out.namespace.is_empty() || out.name.is_empty() {
            return Err("token lacks service-account claims");
        }
        return Ok(out);
    }
    if iss != issuer {
        return Err("token issuer is not this cluster");
    }
    let exp = claims["exp"].as_i64().ok_or("token has no expiry")?;
    if now > exp + LEEWAY {
        return Err("token has expired");
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| now + LEEWAY < nbf) {
        return Err("token is not valid yet");
    }
    let aud: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let audiences: Vec<String> = aud.into_iter().filter(|a| accepted.contains(a)).collect();
    if audiences.is_empty() {
        return Err("token audiences are not accepted");
    }
    let k = &claims["kubernetes.io"];
    let obj = |field: &str, kind: &str| {
        k[field]["name"].as_str().map(|name| BoundObject {
            kind: kind.into(),
            name: name.into(),
            uid: k[field]["uid"].as_str().unwrap_or_default().into(),
        })
    };
    let out = SaClaims {
        namespace: k["namespace"].as_str().unwrap_or_default().into(),
        name: k["serviceaccount"]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
        uid: k["serviceaccount"]["uid"]
            .as_str()
            .unwrap_or_default()
            .into(),
        pod: obj("pod", "Pod"),
        secret: obj("secret", "Secret"),
        node: obj("node", "Node"),
        jti: claims["jti"].as_str().map(String::from),
        audiences,
        legacy: false,
    };
    if out.namespace.is_empty() || out.name.is_empty() {
        return Err("token lacks service-account claims");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let key = rcgen_key();
        TokenSigner::new(
            &key.0,
            &key.1,
            "https://kubernetes.default.svc.cluster.local".into(),
            vec!["https://kubernetes.default.svc.cluster.local".into()],
        )
        .unwrap()
    }

    fn rcgen_key() -> (String, String) {
        let dir = std::env::temp_dir().join(format!("kubox-tokens-{}", uuid::Uuid::new_v4()));
        let pki = kubox_pki::ensure_server_pki(&kubox_pki::ServerPkiConfig {
            data_dir: dir.clone(),
            cluster_domain: "cluster.local".into(),
            service_ip: "10.43.0.1".parse().unwrap(),
            hostname: "test".into(),
            node_ips: vec![],
            tls_sans: vec![],
            token: None,
        })
        .unwrap();
        let keys = (
            pki.sa_signing_key_pem().to_string(),
            pki.sa_public_key_pem().to_string(),
        );
        let _ = std::fs::remove_dir_all(dir);
        keys
    }

    #[test]
    fn signed_tokens_verify_and_tampered_ones_do_not() {
        let s = signer();
        let claims = bound_claims(
            &s.issuer,
            &s.api_audiences,
            "default",
            "builder",
            "uid-1",
            None,
            None,
            1_000,
            3600,
        );
        let token = s.sign(&claims).unwrap();
        let back = s.verify_signature(&token).unwrap();
        assert_eq!(back, claims);
        let c = check_claims(&back, &s.issuer, &s.api_audiences, 1_100).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.name.as_str()),
            ("default", "builder")
        );
        assert_eq!(c.uid, "uid-1");
        // Expired, wrong audience, tampered payload.
        assert!(check_claims(&back, &s.issuer, &s.api_audiences, 10_000).is_err());
        assert!(check_claims(&back, &s.issuer, &["other".into()], 1_100).is_err());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            json!({"iss": s.issuer, "sub": "system:serviceaccount:kube-system:admin"}).to_string(),
        );
        parts[1] = &forged;
        assert!(s.verify_signature(&parts.join(".")).is_none());
        assert!(s.verify_signature("not.a.jwt").is_none());
    }

    #[test]
    fn pod_bound_claims_carry_the_pod() {
        let pod = BoundObject {
            kind: "Pod".into(),
            name: "web-1".into(),
            uid: "p-uid".into(),
        };
        let claims = bound_claims(
            "iss",
            &["aud".into()],
            "ns",
            "sa",
            "sa-uid",
            Some(&pod),
            None,
            0,
            600,
        );
        let c = check_claims(&claims, "iss", &["aud".into()], 10).unwrap();
        assert_eq!(c.pod, Some(pod));
        assert_eq!(c.audiences, vec!["aud".to_string()]);
    }
}
