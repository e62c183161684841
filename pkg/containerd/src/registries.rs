//! k3s's `registries.yaml` (mirrors, endpoints, auth, TLS) turned into containerd's registry
//! configuration: one `hosts.toml` per registry under the CRI plugin's `config_path`
//! (endpoints in order, the registry itself last, TLS per host) and the CRI plugin's
//! `registry.configs.<host>.auth` for credentials (containerd 1.6's hosts.toml has no auth).
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//! configs:
//!   "127.0.0.1:5000":
//!     auth: {username: u, password: p}
//!     tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

/// The parsed `registries.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Registry name (`docker.io`, `registry.example:5000`, `*` for every registry) → mirror.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Registry host (a registry's or an endpoint's `host[:port]`) → credentials and TLS.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs, tried in order before the registry itself.
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Repository rewrites (regular expression → replacement). containerd's own hosts.toml
    /// has no rewrites (k3s patches its containerd for them); kubox warns and ignores them.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where a registry's own API is when no mirror answers (containerd's defaults).
fn default_server(registry: &str) -> Option<String> {
    match registry {
        "*" => None,
        "docker.io" => Some("https://registry-1.docker.io".into()),
        r => Some(format!("https://{r}")),
    }
}

/// A registry name or config key usable as a directory name: `host[:port]` or `*`.
fn valid_host(host: &str) -> bool {
    host == "*"
        || (!host.is_empty()
            && !host.starts_with('.')
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
            }))
}

/// The `host[:port]` of an `http://` or `https://` URL, or why it is not one.
fn url_host(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("endpoint {url:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || !valid_host(host) || host == "*" {
        return Err(format!("endpoint {url:?} has no valid host"));
    }
    Ok(host)
}

/// A config key as k3s accepts it: `host[:port]`, optionally written as a URL.
fn config_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or_default()
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Registries {
    /// Parses and checks a `registries.yaml`; the error is one sentence saying what is wrong.
    pub fn parse(text: &str) -> Result<Registries, String> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let r: Registries = serde_saphyr::from_str(text).map_err(|e| {
            let e = e.to_string();
            format!(
                "it is not valid (expected `mirrors` and `configs` as k3s documents them): {}",
                e.lines().next().unwrap_or_default()
            )
        })?;
        for (name, mirror) in &r.mirrors {
            if !valid_host(name) {
                return Err(format!(
                    "mirror {name:?} is not a registry host name (host[:port] or \"*\")"
                ));
            }
            for e in &mirror.endpoint {
                url_host(e).map_err(|m| format!("mirror {name:?}: {m}"))?;
            }
        }
        for (key, cfg) in &r.configs {
            let host = config_host(key);
            if !valid_host(host) || host == "*" {
                return Err(format!(
                    "config {key:?} is not a registry host name (host[:port])"
                ));
            }
            if let Some(tls) = &cfg.tls
                && tls.cert_file.is_some() != tls.key_file.is_some()
            {
                return Err(format!(
                    "config {key:?}: tls needs both cert_file and key_file for a client certificate"
                ));
            }
        }
        Ok(r)
    }

    /// What this configuration asks for that kubox ignores, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        self.mirrors
            .iter()
            .filter(|(_, m)| !m.rewrite.is_empty())
            .map(|(name, _)| {
                format!("mirror {name:?}: rewrite is not supported by containerd's registry hosts configuration and is ignored")
            })
            .collect()
    }

    fn tls_for(&self, host: &str) -> Option<&Tls> {
        self.configs
            .iter()
            .find(|(k, _)| config_host(k) == host)
            .and_then(|(_, c)| c.tls.as_ref())
    }

    /// The `hosts.toml` of every registry named as a mirror or a config, by directory name
    /// (`*` is containerd's `_default`).
    pub fn hosts_files(&self) -> BTreeMap<String, String> {
        let mut names: Vec<&str> = self.mirrors.keys().map(String::as_str).collect();
        names.extend(self.configs.keys().map(|k| config_host(k)));
        names.sort_unstable();
        names.dedup();
        let mut out = BTreeMap::new();
        for name in names {
            let mut text = String::from("# Generated by kubox from registries.yaml.\n");
            let server = default_server(name);
            if let Some(server) = &server {
                let _ = writeln!(text, "server = {}", toml_string(server));
                if let Some(tls) = self.tls_for(name) {
                    write_tls(&mut text, tls, "");
                }
            }
            let mut endpoints: Vec<&str> = self
                .mirrors
                .get(name)
                .map(|m| m.endpoint.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|e| e.trim_end_matches('/'))
                .filter(|e| Some(*e) != server.as_deref())
                .collect();
            // containerd 1.6 refuses a hosts.toml without `host` tables ("invalid `host`
            // tree"): a registry without mirrors lists itself.
            let only_server = endpoints.is_empty();
            if only_server && let Some(server) = &server {
                endpoints.push(server);
            }
            for e in endpoints {
                // The mirror's own path after `scheme://host`, if any.
                let path = e
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or_default();
                let _ = writeln!(text, "\n[host.{}]", toml_string(e));
                text.push_str(if only_server {
                    "  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
                } else {
                    "  capabilities = [\"pull\", \"resolve\"]\n"
                });
                if !path.is_empty() && path != "/v2" {
                    // A path of the mirror's own: used as given, as k3s does.
                    text.push_str("  override_path = true\n");
                }
                if let Ok(host) = url_host(e)
                    && let Some(tls) = self.tls_for(host)
                {
                    write_tls(&mut text, tls, "  ");
                }
            }
            let dir = if name == "*" { "_default" } else { name };
            out.insert(dir.to_string(), text);
        }
        out
    }

    /// Rewrites `dir` (the CRI plugin's `config_path`, owned by kubox) to hold exactly the
    /// hosts files of this configuration.
    pub fn write_hosts_dir(&self, dir: &Path) -> std::io::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        for (name, text) in self.hosts_files() {
            let d = dir.join(name);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("hosts.toml"), text)?;
        }
        Ok(())
    }

    /// The CRI plugin's `registry.configs.<host>.auth` tables.
    pub fn auth_toml(&self) -> String {
        let mut out = String::new();
        for (key, cfg) in &self.configs {
            let Some(auth) = &cfg.auth else { continue };
            let _ = writeln!(
                out,
                "  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]",
                toml_string(config_host(key))
            );
            for (field, value) in [
                ("username", &auth.username),
                ("password", &auth.password),
                ("auth", &auth.auth),
                ("identitytoken", &auth.identitytoken),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(out, "    {field} = {}", toml_string(v));
                }
            }
        }
        out
    }
}

fn write_tls(text: &mut String, tls: &Tls, indent: &str) {
    if let Some(ca) = &tls.ca_file {
        let _ = writeln!(text, "{indent}ca = {}", toml_string(ca));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let _ = writeln!(
            text,
            "{indent}client = [[{}, {}]]",
            toml_string(cert),
            toml_string(key)
        );
    }
    if tls.insecure_skip_verify {
        let _ = writeln!(text, "{indent}skip_verify = true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_become_hosts_files_with_the_registry_last() {
        let r = Registries::parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example/prefix"
configs:
  "mirror.example":
    tls:
      ca_file: /etc/ca.pem
      insecure_skip_verify: true
  "127.0.0.1:5000":
    auth:
      username: user
      password: "p\"w"
"#,
        )
        .unwrap();
        let files = r.hosts_files();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["127.0.0.1:5000", "docker.io", "mirror.example"]
        );
        let docker = &files["docker.io"];
        assert!(docker.contains("server = \"https://registry-1.docker.io\""));
        let local = docker.find("[host.\"http://127.0.0.1:5000\"]").unwrap();
        let remote = docker
            .find("[host.\"https://mirror.example/prefix\"]")
            .unwrap();
        assert!(local < remote);
        assert!(docker[remote..].contains("override_path = true"));
        assert!(docker[remote..].contains("ca = \"/etc/ca.pem\""));
        assert!(docker[remote..].contains("skip_verify = true"));
        // A registry without mirrors lists itself (containerd 1.6 needs a `host` table).
        let own = &files["mirror.example"];
        assert!(own.contains("server = \"https://mirror.example\""));
        let host = own.find("[host.\"https://mirror.example\"]").unwrap();
        assert!(own[host..].contains("ca = \"/etc/ca.pem\""), "{own}");
        let auth = r.auth_toml();
        assert!(auth.contains("registry.configs.\"127.0.0.1:5000\".auth]"));
        assert!(auth.contains("password = \"p\\\"w\""));
        assert!(r.warnings().is_empty());
    }

    #[test]
    fn wildcard_mirror_is_the_default_directory() {
        let r = Registries::parse("mirrors:\n  \"*\":\n    endpoint: [\"https://m.example\"]\n")
            .unwrap();
        let files = r.hosts_files();
        assert!(!files["_default"].contains("server ="));
        assert!(files["_default"].contains("[host.\"https://m.example\"]"));
    }

    #[test]
    fn bad_files_get_one_sentence() {
        for (text, want) in [
            ("mirrors: [1, 2]", "not valid"),
            ("mirror:\n  docker.io: {}\n", "not valid"),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
                "is not an http:// or https:// URL",
            ),
            (
                "mirrors:\n  ../etc:\n    endpoint: [\"http://x\"]\n",
                "not a registry host name",
            ),
            (
                "configs:\n  r.example:\n    tls: {cert_file: /c.pem}\n",
                "both cert_file and key_file",
            ),
        ] {
            let e = Registries::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert_eq!(Registries::parse("").unwrap(), Registries::default());
    }

    #[test]
    fn rewrites_are_reported_as_ignored() {
        let r = Registries::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://m:5000\"]\n    rewrite:\n      \"^rancher/(.*)\": \"mirrored/$1\"\n",
        )
        .unwrap();
        assert_eq!(r.warnings().len(), 1);
    }

    #[test]
    fn toml_strings_escape_quotes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
    }
}
