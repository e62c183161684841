//! Image pulling with the kubelet's semantics: pull policies (`Always` pulls at every container
//! start, `IfNotPresent` only when the image is absent, `Never` fails with
//! `ErrImageNeverPull`), credentials from the pod's `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`, matched against the image
//! as the kubelet's credential keyring does), per-image back-off after a failed pull
//! (`ErrImagePull`, then `ImagePullBackOff` for 10 s doubling to 5 min), and the kubelet's
//! `Pulling`/`Pulled`/`Failed`/`BackOff` events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::Api;
use kubox_containerd::cri::api;
use serde_json::Value;

use crate::pods::Ctx;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Pull back-off of one image of a pod: until when, and the error that started it.
pub(crate) struct Backoff {
    backoff: Duration,
    not_before: Instant,
    error: String,
    /// Whether this back-off window's `BackOff` event was recorded (once per window).
    reported: bool,
}

/// Back-off per image of one pod (the kubelet keys it by pod and image).
pub(crate) type Backoffs = HashMap<String, Backoff>;

/// One set of credentials from a docker config (`auths` entry).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Credential {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

/// The kubelet's credential keyring: docker config keys (schemeless `host[:port][/path]`,
/// `*` globs per host label) with their credentials.
#[derive(Debug, Default)]
pub(crate) struct Keyring {
    entries: Vec<(String, Credential)>,
}

impl Keyring {
    /// Adds the entries of a docker config's `auths` (or a `.dockercfg`) object.
    fn add(&mut self, auths: &serde_json::Map<String, Value>) {
        for (location, entry) in auths {
            let s = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut cred = Credential {
                username: s("username"),
                password: s("password"),
                auth: s("auth"),
                identity_token: s("identitytoken"),
                registry_token: s("registrytoken"),
            };
            // As docker's config loader: `auth` is base64 of `user:password`.
            if cred.username.is_empty()
                && !cred.auth.is_empty()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&cred.auth)
                && let Ok(text) = String::from_utf8(raw)
                && let Some((user, pass)) = text.split_once(':')
            {
                cred.username = user.to_string();
                cred.password = pass.trim_matches('\0').to_string();
            }
            let schemeless = location
                .strip_prefix("https://")
                .or_else(|| location.strip_prefix("http://"))
                .unwrap_or(location);
            let (host, path) = match schemeless.find('/') {
                Some(i) => (&schemeless[..i], &schemeless[i..]),
                None => (schemeless, ""),
            };
            let path = path
                .strip_suffix("/v2/")
                .or_else(|| path.strip_suffix("/v1/"))
                .unwrap_or(path);
            let key = format!("{host}{}", path.trim_end_matches('/'));
            self.entries.push((key, cred));
        }
    }

    /// Adds the docker config of an image pull secret; false when it holds none.
    fn add_secret(&mut self, secret: &Secret) -> bool {
        let data = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
        };
        let auths = match secret.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => {
                data(".dockerconfigjson").and_then(|v| v.get("auths").cloned())
            }
            Some("kubernetes.io/dockercfg") => data(".dockercfg"),
            _ => None,
        };
        match auths {
            Some(Value::Object(m)) => {
                self.add(&m);
                true
            }
            _ => false,
        }
    }

    /// The credentials for `repository` (a normalized `registry/path` without tag), most
    /// specific key first, as upstream's keyring (`index.docker.io` keys serve Docker Hub).
    pub(crate) fn lookup(&self, repository: &str) -> Vec<Credential> {
        let mut matched: Vec<&(String, Credential)> = self
            .entries
            .iter()
            .filter(|(key, _)| url_matches(key, repository))
            .collect();
        if matched.is_empty() && is_default_registry(repository) {
            matched = self
                .entries
                .iter()
                .filter(|(key, _)| key == "index.docker.io")
                .collect();
        }
        // Reverse lexical order of keys, as upstream sorts its index.
        matched.sort_by(|a, b| b.0.cmp(&a.0));
        matched.into_iter().map(|(_, c)| c.clone()).collect()
    }
}

fn is_default_registry(repository: &str) -> bool {
    match repository.split_once('/') {
        None => !repository.is_empty(),
        Some((first, _)) => {
            first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':'])
        }
    }
}

/// Upstream's `URLsMatch`: same number of host labels, each matching its glob, same port,
/// and the key's path a prefix of the repository's.
fn url_matches(key: &str, repository: &str) -> bool {
    let split = |s: &str| match s.find('/') {
        Some(i) => (s[..i].to_string(), s[i..].to_string()),
        None => (s.to_string(), String::new()),
    };
    let (key_host, key_path) = split(key);
    let (repo_host, repo_path) = split(repository);
    let host_port = |h: &str| -> (String, String) {
        if h.ends_with(']') {
            return (h.to_string(), String::new());
        }
        match h.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.to_string()),
            None => (h.to_string(), String::new()),
        }
    };
    let (kh, kp) = host_port(&key_host);
    let (rh, rp) = host_port(&repo_host);
    if kp != rp {
        return false;
    }
    let kl: Vec<&str> = kh.split('.').collect();
    let rl: Vec<&str> = rh.split('.').collect();
    kl.len() == rl.len()
        && kl.iter().zip(&rl).all(|(g, l)| glob(g, l))
        && repo_path.starts_with(&key_path)
}

/// `filepath.Match` for `*` and `?` within one host label.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The repository of an image reference: normalized, without tag or digest.
fn repository_of(image: &str) -> String {
    let full = kubox_containerd::import::normalize_reference(image).unwrap_or_else(|| image.into());
    let no_digest = full.split('@').next().unwrap_or_default();
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => no_digest[..i].to_string(),
        _ => no_digest.to_string(),
    }
}

/// The pull policy in effect: the container's, else upstream's default (`Always` for
/// `:latest` or untagged images, `IfNotPresent` otherwise).
fn policy_of(c: &Container) -> String {
    c.image_pull_policy.clone().unwrap_or_else(|| {
        let image = c.image.as_deref().unwrap_or_default();
        let untagged =
            !image.contains('@') && !image.rsplit('/').next().unwrap_or("").contains(':');
        if untagged || image.ends_with(":latest") {
            "Always".into()
        } else {
            "IfNotPresent".into()
        }
    })
}

/// The involved object's `fieldPath` of a container, as the kubelet writes it.
pub(crate) fn field_path(pod: &Pod, c: &Container) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| i.iter().any(|x| x.name == c.name));
    if init {
        format!("spec.initContainers{{{}}}", c.name)
    } else {
        format!("spec.containers{{{}}}", c.name)
    }
}

/// Go's `Duration.String()` of a duration truncated to milliseconds, as the kubelet's
/// `Pulled` message.
fn millis(d: Duration) -> String {
    kubox_core::meta::go_duration((d.as_millis() as i64).saturating_mul(1_000_000))
}

/// The keyring of a pod's image pull secrets and the names that could not be read.
async fn pod_keyring(ctx: &Ctx, pod: &Pod) -> (Keyring, Vec<String>) {
    let mut keyring = Keyring::default();
    let mut missing = Vec::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for r in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
    {
        let name = r.name.clone();
        if name.is_empty() {
            continue;
        }
        match api.get(&name).await {
            Ok(secret) => {
                keyring.add_secret(&secret);
            }
            Err(e) => {
                tracing::debug!(secret = %name, error = %e, "reading an image pull secret failed");
                missing.push(format!("{ns}/{name}"));
            }
        }
    }
    (keyring, missing)
}

/// Whether a pull error says the registry refused access (containerd reports the HTTP status
/// or an authorization failure in its message), as opposed to not being reachable.
fn refused(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "401 unauthorized",
        "403 forbidden",
        "failed to authorize",
        "access denied",
        "unauthorized",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// gRPC's rendering of a CRI error, as the kubelet reports it.
fn grpc_error(e: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", e.code(), e.message())
}

/// Makes the container's image present per its pull policy; Err((reason, message)) is the
/// container's waiting state.
pub(crate) async fn ensure_image(
    ctx: &Ctx,
    backoffs: &mut Backoffs,
    pod: &Pod,
    c: &Container,
) -> Result<(), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = policy_of(c);
    let field = Some(field_path(pod, c));
    let event = |type_: &'static str, reason: &'static str, message: String| {
        ctx.recorder
            .event_on(pod, field.clone(), type_, reason, message)
    };
    let mut images = ctx.cri.images.clone();
    let spec = api::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let status = |mut images: kubox_containerd::cri::ImageClient| {
        let spec = spec.clone();
        async move {
            images
                .image_status(api::ImageStatusRequest {
                    image: Some(spec),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
        }
    };
    let present = status(images.clone()).await;
    if policy == "Never" || (policy != "Always" && present.is_some()) {
        if present.is_some() {
            event(
                "Normal",
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            )
            .await;
            return Ok(());
        }
        let message = format!("Container image {image:?} is not present with pull policy of Never");
        event("Warning", "ErrImageNeverPull", message.clone()).await;
        event("Warning", "Failed", "Error: ErrImageNeverPull".into()).await;
        return Err(("ErrImageNeverPull".into(), message));
    }
    if let Some(b) = backoffs.get_mut(&image)
        && Instant::now() < b.not_before
    {
        let message = format!("Back-off pulling image {image:?}");
        if !b.reported {
            b.reported = true;
            event("Normal", "BackOff", message.clone()).await;
            event("Warning", "Failed", "Error: ImagePullBackOff".into()).await;
        }
        return Err((
            "ImagePullBackOff".into(),
            format!("{message}: ErrImagePull: {}", b.error),
        ));
    }
    let (keyring, missing) = pod_keyring(ctx, pod).await;
    if !missing.is_empty() {
        event(
            "Warning",
            "FailedToRetrieveImagePullSecret",
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            ),
        )
        .await;
    }
    let creds = keyring.lookup(&repository_of(&image));
    event("Normal", "Pulling", format!("Pulling image {image:?}")).await;
    let started = Instant::now();
    // Anonymously without matching credentials, else each in turn until one works.
    let auths: Vec<Option<api::AuthConfig>> = if creds.is_empty() {
        vec![None]
    } else {
        creds
            .into_iter()
            .map(|c| {
                Some(api::AuthConfig {
                    username: c.username,
                    password: c.password,
                    auth: c.auth,
                    server_address: String::new(),
                    identity_token: c.identity_token,
                    registry_token: c.registry_token,
                })
            })
            .collect()
    };
    let mut last_error = String::new();
    for auth in auths {
        match images
            .pull_image(api::PullImageRequest {
                image: Some(spec.clone()),
                auth,
                sandbox_config: None,
            })
            .await
        {
            Ok(_) => {
                backoffs.remove(&image);
                let took = millis(started.elapsed());
                let size = status(images.clone()).await.map_or(0, |i| i.size);
                event(
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {took} ({took} including waiting). Image size: {size} bytes."
                    ),
                )
                .await;
                return Ok(());
            }
            Err(e) => last_error = grpc_error(&e),
        }
    }
    if present.is_some() && !refused(&last_error) {
        // `Always` on an image that is here (an airgap archive's `:latest`): it still runs
        // while its registry cannot be reached. A registry that refused these credentials
        // is different: as upstream, a pod may not use a private image another pod pulled.
        tracing::debug!(%image, error = %last_error, "pulling failed; using the image present on the node");
        return Ok(());
    }
    let now = Instant::now();
    let entry = backoffs.entry(image.clone()).or_insert(Backoff {
        backoff: BACKOFF_START / 2,
        not_before: now,
        error: String::new(),
        reported: false,
    });
    entry.backoff = (entry.backoff * 2).min(BACKOFF_MAX);
    entry.not_before = now + entry.backoff;
    entry.error = last_error.clone();
    entry.reported = false;
    tracing::info!(pod = ?pod.metadata.name, %image, error = %last_error, "pulling the image failed");
    event(
        "Warning",
        "Failed",
        format!("Failed to pull image {image:?}: {last_error}"),
    )
    .await;
    event("Warning", "Failed", "Error: ErrImagePull".into()).await;
    Err(("ErrImagePull".into(), last_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring(auths: Value) -> Keyring {
        let mut k = Keyring::default();
        if let Value::Object(m) = auths {
            k.add(&m);
        }
        k
    }

    #[test]
    fn keys_match_host_port_and_path_prefix() {
        let k = keyring(json!({
            "127.0.0.1:5000": {"username": "a", "password": "1"},
            "https://127.0.0.1:5000/private/v2/": {"username": "b", "password": "2"},
            "*.example.com": {"auth": "Yzpz"},
            "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
        }));
        let users = |repo: &str| {
            k.lookup(repo)
                .into_iter()
                .map(|c| c.username)
                .collect::<Vec<_>>()
        };
        assert_eq!(users("127.0.0.1:5000/private/app"), ["b", "a"]);
        assert_eq!(users("127.0.0.1:5000/public/app"), ["a"]);
        assert!(users("127.0.0.1:5001/public/app").is_empty());
        assert_eq!(users("r.example.com/x"), ["c"]);
        assert!(users("a.r.example.com/x").is_empty());
        assert_eq!(users("docker.io/library/busybox"), ["hub"]);
        assert!(users("quay.io/x/y").is_empty());
        assert_eq!(k.lookup("r.example.com/x")[0].password, "s");
    }

    #[test]
    fn secrets_of_both_docker_config_types_are_read() {
        let secret = |type_: &str, key: &str, value: Value| Secret {
            type_: Some(type_.into()),
            data: Some(
                [(
                    key.to_string(),
                    k8s_openapi::ByteString(value.to_string().into_bytes()),
                )]
                .into(),
            ),
            ..Secret::default()
        };
        let mut k = Keyring::default();
        assert!(k.add_secret(&secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {"r1:5000": {"username": "u1", "password": "p1"}}})
        )));
        assert!(k.add_secret(&secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            json!({"r2:5000": {"username": "u2", "password": "p2"}})
        )));
        assert!(!k.add_secret(&secret(
            "Opaque",
            ".dockerconfigjson",
            json!({"auths": {"r3": {}}})
        )));
        assert_eq!(k.lookup("r1:5000/a")[0].username, "u1");
        assert_eq!(k.lookup("r2:5000/a")[0].password, "p2");
        assert!(k.lookup("r3/a").is_empty());
    }

    #[test]
    fn repositories_and_policies_follow_upstream() {
        assert_eq!(repository_of("busybox"), "docker.io/library/busybox");
        assert_eq!(repository_of("r:5000/a/b:1"), "r:5000/a/b");
        let c = |image: &str, policy: Option<&str>| Container {
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Container::default()
        };
        assert_eq!(policy_of(&c("busybox", None)), "Always");
        assert_eq!(policy_of(&c("busybox:latest", None)), "Always");
        assert_eq!(policy_of(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(policy_of(&c("busybox:1.36", Some("Never"))), "Never");
        assert_eq!(millis(Duration::from_micros(1_234_567)), "1.234s");
    }

    #[test]
    fn globs_match_within_a_label() {
        assert!(glob("*", "abc"));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a*d", "abc"));
    }
}
