//! Image pulls from a real registry: Debian's `docker-registry` (distribution 2.8) on the
//! node's loopback with htpasswd auth, the test image pushed to it over the OCI distribution
//! API with plain HTTP requests. A `registries.yaml` mirror for docker.io (with the mirror's
//! credentials in `configs`) serves a `docker.io/library/...` image pulled with `Always`;
//! a private repository needs the pod's imagePullSecrets (here from its ServiceAccount);
//! a TLS registry is trusted through `configs.<host>.tls.ca_file`; `Never` on an absent image
//! is `ErrImageNeverPull`.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::images::{busybox_blobs, digest};
use crate::node::{json, node_ready};

const USER: &str = "kubox";
const PASSWORD: &str = "pull-secret-1";

/// An HTTP answer: status, headers (lowercased names), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A `docker-registry` running inside a node's network namespace, ended (by PID) on drop.
struct Registry {
    child: Child,
    netns: String,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts the registry on `127.0.0.1:port` of the node, storing under `storage`, its
    /// config and log in `dir`: with an htpasswd file for [`USER`], or serving TLS with
    /// `tls` (certificate and key files) and no auth. Two registries may share a storage.
    fn start(
        s: &Server,
        dir: &Path,
        storage: &Path,
        port: u16,
        tls: Option<(&Path, &Path)>,
    ) -> Registry {
        let access = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => {
                let htpasswd = std::process::Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(htpasswd.status.success());
                std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kubox-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\n{access}",
            root = storage.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        // nsenter execs the registry itself: the child's PID is the registry's.
        let child = s
            .command("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let r = Registry {
            child,
            netns: s.netns.clone().expect("a node test"),
            port,
        };
        // Up once it answers: 401 (auth needed), or 400 from a TLS port to plain HTTP.
        let up = eventually(Duration::from_secs(15), || {
            r.request("GET", "/v2/", &[], Vec::new(), false)
                .ok()
                .filter(|(status, _, _)| matches!(status, 400 | 401))
        });
        assert!(
            up.is_some(),
            "registry did not answer: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        r
    }

    /// One HTTP/1.1 request to the registry from inside the node's network namespace:
    /// (status, headers, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        auth: bool,
    ) -> std::io::Result<Answer> {
        let netns = format!("/run/netns/{}", self.netns);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            head.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let port = self.port;
        std::thread::spawn(move || {
            // This thread only: its sockets are made in the node's network namespace.
            let ns = std::fs::File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::other)?;
            let mut conn = TcpStream::connect(("127.0.0.1", port))?;
            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
            conn.write_all(head.as_bytes())?;
            conn.write_all(&body)?;
            let mut raw = Vec::new();
            conn.read_to_end(&mut raw)?;
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
            let text = String::from_utf8_lossy(&raw[..split]).to_string();
            let mut lines = text.lines();
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status"))?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            Ok((status, headers, raw[split + 4..].to_vec()))
        })
        .join()
        .expect("request thread")
    }

    /// Uploads a blob (POST an upload session, PUT its content with the digest).
    fn push_blob(&self, repo: &str, blob: &[u8]) {
        let d = digest(blob);
        let (status, headers, body) = self
            .request(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
                true,
            )
            .unwrap();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .expect("upload location");
        // The location may be absolute; keep its path and query.
        let location = match location.find("/v2/") {
            Some(i) => location[i..].to_string(),
            None => location,
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .request(
                "PUT",
                &format!("{location}{sep}digest={d}"),
                &[("Content-Type", "application/octet-stream")],
                blob.to_vec(),
                true,
            )
            .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }

    /// Pushes the busybox test image (with `marker` as an extra file) as `repo:tag`.
    fn push_image(&self, repo: &str, tag: &str, marker: &str) {
        let (layer, config, manifest) =
            busybox_blobs(&[("www/marker.txt", marker.as_bytes(), 0o644)]);
        self.push_blob(repo, &layer);
        self.push_blob(repo, &config);
        let (status, _, body) = self
            .request(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                manifest,
                true,
            )
            .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
}

fn pod(name: &str, image: &str, policy: &str, extra: Value) -> String {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c",
                "image": image,
                "imagePullPolicy": policy,
                "command": ["sleep", "3600"],
            }],
        },
    });
    if let (Some(spec), Value::Object(extra)) = (p["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    p.to_string()
}

/// The first container's waiting reason and message, or "Running" once it runs.
fn container_state(s: &Server, name: &str) -> (String, String) {
    let out = s.kubectl(KUBECTL_NEW, &["get", "pod", name, "-o", "json"]);
    let p = json(&String::from_utf8_lossy(&out.stdout));
    let st = &p["status"]["containerStatuses"][0]["state"];
    if st.get("running").is_some() {
        return ("Running".into(), String::new());
    }
    (
        st["waiting"]["reason"].as_str().unwrap_or_default().into(),
        st["waiting"]["message"].as_str().unwrap_or_default().into(),
    )
}

fn wait_state(s: &Server, name: &str, want: &str, timeout: Duration) -> String {
    let mut last = Default::default();
    let got = eventually(timeout, || {
        last = container_state(s, name);
        (last.0 == want).then(|| last.1.clone())
    });
    got.unwrap_or_else(|| {
        panic!(
            "pod {name} never reached {want}; last {last:?}\n{}\n{}",
            s.k(KUBECTL_NEW, &["get", "events", "-o", "wide"]),
            containerd_log(s)
        )
    })
}

/// The end of the node's containerd log (pull errors are there).
fn containerd_log(s: &Server) -> String {
    let log = std::fs::read_to_string(s.data_dir().join("agent/containerd/containerd.log"))
        .unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The events about pod `name`: (type, reason, message, count, fieldPath, source host).
fn events(s: &Server, name: &str) -> Vec<(String, String, String, i64, String, String)> {
    let list = json(&s.k(KUBECTL_NEW, &["get", "events", "-o", "json"]));
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&e["type"]),
                s(&e["reason"]),
                s(&e["message"]),
                e["count"].as_i64().unwrap_or(0),
                s(&e["involvedObject"]["fieldPath"]),
                s(&e["source"]["host"]),
            )
        })
        .collect()
}

#[test]
fn registries_yaml_mirrors_pull_secrets_and_pull_policies_against_a_real_registry() {
    let port = crate::common::free_port();
    let tls_port = crate::common::free_port();
    let reg_dir = tempfile::tempdir().unwrap();
    let (plain_dir, tls_dir, storage) = (
        reg_dir.path().join("plain"),
        reg_dir.path().join("tls"),
        reg_dir.path().join("storage"),
    );
    for d in [&plain_dir, &tls_dir, &storage] {
        std::fs::create_dir_all(d).unwrap();
    }
    // A CA of the test's own and a serving certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params
        .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        tls_dir.join("ca.pem"),
        tls_dir.join("cert.pem"),
        tls_dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let s = Server::start_node(&[], |data| {
        let etc = data.join("agent").join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        // docker.io is mirrored by the loopback registry, reached as `localhost`, whose
        // credentials come from `configs`; as 127.0.0.1 it has none (pull secrets needed).
        std::fs::write(
            etc.join("registries.yaml"),
            format!(
                "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://localhost:{port}\"\nconfigs:\n  \"localhost:{port}\":\n    auth:\n      username: {USER}\n      password: {PASSWORD}\n  \"127.0.0.1:{tls_port}\":\n    tls:\n      ca_file: {ca}\n",
                ca = ca_file.display(),
            ),
        )
        .unwrap();
    });
    let ready = eventually(Duration::from_secs(120), || node_ready(&s).then_some(()));
    assert!(ready.is_some(), "node not ready:\n{}", s.log());
    // containerd was configured from the file: a hosts.toml for docker.io naming the mirror.
    let hosts = std::fs::read_to_string(
        s.data_dir()
            .join("agent/etc/containerd/certs.d/docker.io/hosts.toml"),
    )
    .unwrap();
    assert!(
        hosts.contains(&format!("[host.\"http://localhost:{port}\"]")),
        "{hosts}"
    );
    let registry = Registry::start(&s, &plain_dir, &storage, port, None);
    registry.push_image("library/mirrored", "v1", "mirrored");
    registry.push_image("private/app", "v1", "private");
    // The same storage served over TLS by a certificate of the test's CA.
    let tls_registry = Registry::start(
        &s,
        &tls_dir,
        &storage,
        tls_port,
        Some((&cert_file, &key_file)),
    );
    assert!(s.default_service_account_within("default", Duration::from_secs(30)));

    // 1. A docker.io image served by the mirror, pulled at every start (Always).
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod(
            "mirrored",
            "docker.io/library/mirrored:v1",
            "Always",
            json!({"containers": [{
                "name": "c", "image": "docker.io/library/mirrored:v1", "imagePullPolicy": "Always",
                "command": ["sh", "-c", "sleep 1"],
            }]}),
        ),
    );
    // The container exits after a second and is restarted at once: a second pull.
    // (Each `Pulled` names its own duration, so two pulls are two Events.)
    let pulled_twice = eventually(Duration::from_secs(40), || {
        let pulls: Vec<_> = events(&s, "mirrored")
            .into_iter()
            .filter(|e| e.1 == "Pulled" && e.2.starts_with("Successfully pulled image"))
            .collect();
        (pulls.iter().map(|e| e.3).sum::<i64>() >= 2).then(|| pulls[0].clone())
    });
    let ev = events(&s, "mirrored");
    let Some(pulled) = pulled_twice else {
        panic!("no second pull: {ev:?}\n{}", containerd_log(&s));
    };
    assert!(
        pulled
            .2
            .starts_with("Successfully pulled image \"docker.io/library/mirrored:v1\" in "),
        "{pulled:?}"
    );
    assert!(
        pulled.2.contains(" including waiting). Image size: "),
        "{pulled:?}"
    );
    assert_eq!(pulled.4, "spec.containers{c}");
    assert_eq!(pulled.5, "node-1");
    assert!(
        ev.iter().any(|e| e.0 == "Normal"
            && e.1 == "Pulling"
            && e.2 == "Pulling image \"docker.io/library/mirrored:v1\""
            && e.3 >= 2),
        "{ev:?}"
    );

    // 2. A private repository: pulled with the pod's ServiceAccount's imagePullSecrets...
    let image = format!("127.0.0.1:{port}/private/app:v1");
    let config = json!({"auths": {format!("127.0.0.1:{port}"): {
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")),
    }}})
    .to_string();
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "secret",
            "generic",
            "regcred",
            "--type=kubernetes.io/dockerconfigjson",
            &format!("--from-literal=.dockerconfigjson={config}"),
        ],
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "puller"},
                "imagePullSecrets": [{"name": "regcred"}]})
        .to_string(),
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod(
            "allowed",
            &image,
            "Always",
            json!({"serviceAccountName": "puller"}),
        ),
    );
    let spec = json(&s.k(KUBECTL_NEW, &["get", "pod", "allowed", "-o", "json"]));
    assert_eq!(
        spec["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}]),
        "the ServiceAccount's pull secrets are the pod's"
    );
    wait_state(&s, "allowed", "Running", Duration::from_secs(60));

    // ...and refused without credentials under Always, although the image is on the node now.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("denied", &image, "Always", json!({})),
    );
    // ErrImagePull shows until the worker's next pass (a second later), then the back-off.
    let message = wait_state(&s, "denied", "ImagePullBackOff", Duration::from_secs(30));
    assert!(
        message.starts_with(&format!(
            "Back-off pulling image \"{image}\": ErrImagePull: rpc error: code = "
        )),
        "{message}"
    );
    let ev = events(&s, "denied");
    for (type_, reason, prefix) in [
        ("Normal", "Pulling", format!("Pulling image \"{image}\"")),
        (
            "Warning",
            "Failed",
            format!("Failed to pull image \"{image}\": "),
        ),
        ("Warning", "Failed", "Error: ErrImagePull".to_string()),
        (
            "Normal",
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
        ),
        ("Warning", "Failed", "Error: ImagePullBackOff".to_string()),
    ] {
        assert!(
            ev.iter()
                .any(|e| e.0 == type_ && e.1 == reason && e.2.starts_with(&prefix)),
            "no {type_} {reason} {prefix:?} in {ev:?}"
        );
    }

    // 3. TLS: the registry's certificate is trusted through `configs.<host>.tls.ca_file`.
    let tls_image = format!("127.0.0.1:{tls_port}/library/mirrored:v1");
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("tls", &tls_image, "IfNotPresent", json!({})),
    );
    wait_state(&s, "tls", "Running", Duration::from_secs(60));
    drop(tls_registry);

    // 4. Never: an absent image is not pulled.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("never", "docker.io/library/absent:v1", "Never", json!({})),
    );
    let message = wait_state(&s, "never", "ErrImageNeverPull", Duration::from_secs(30));
    assert_eq!(
        message,
        "Container image \"docker.io/library/absent:v1\" is not present with pull policy of Never"
    );
    assert!(
        events(&s, "never")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ErrImageNeverPull"),
        "{:?}",
        events(&s, "never")
    );
    drop(registry);
}

#[test]
fn a_bad_registries_yaml_stops_the_node_with_one_sentence() {
    // The node may stop before or after its API answered: both end with its log.
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Server::start_node(&[], |data| {
            let etc = data.join("agent").join("etc");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(
                etc.join("registries.yaml"),
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://mirror.example\"]\n",
            )
            .unwrap();
        })
    }));
    let log = match started {
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(mut s) => {
            let exited = eventually(Duration::from_secs(30), || {
                s.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
            });
            assert!(exited.is_some(), "the node kept running:\n{}", s.log());
            s.log()
        }
    };
    let line = log
        .lines()
        .find(|l| l.starts_with("kubox: "))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(
        line.contains(
            "agent/etc/registries.yaml: mirror \"docker.io\": endpoint \"ftp://mirror.example\" is not an http:// or https:// URL"
        ),
        "{line}"
    );
}
