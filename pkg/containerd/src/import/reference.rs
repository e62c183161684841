//! Image names: normalizing what archives call their images (`busybox:test`,
//! `org.opencontainers.image.ref.name` values) into full references like containerd's.

/// Full reference for `name` the way docker and containerd normalize it, or `None` if it is
/// not a valid image reference.
///
/// `busybox` → `docker.io/library/busybox:latest`, `quay.io/a/b:1` stays, a digest is kept.
pub fn normalize(name: &str) -> Option<String> {
    let name = name.trim();
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (name, None),
    };
    let (repo, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let (domain, path) = match repo.split_once('/') {
        Some((first, path)) if is_domain(first) => {
            let domain = if first == "index.docker.io" {
                "docker.io"
            } else {
                first
            };
            (domain, path.to_string())
        }
        _ => ("docker.io", repo.to_string()),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if !valid_domain(domain) || !path.split('/').all(valid_component) {
        return None;
    }
    let mut full = format!("{domain}/{path}");
    match tag {
        Some(tag) if valid_tag(tag) => full = format!("{full}:{tag}"),
        Some(_) => return None,
        None if digest.is_none() => full.push_str(":latest"),
        None => {}
    }
    if let Some(digest) = digest {
        if !valid_digest(digest) {
            return None;
        }
        full = format!("{full}@{digest}");
    }
    Some(full)
}

/// True when `name` is a reference on its own rather than a bare tag such as `3.10`
/// (which OCI layouts may put in `org.opencontainers.image.ref.name`).
pub(crate) fn is_full_reference(name: &str) -> bool {
    name.contains('/') || name.contains(':') || name.contains('@')
}

/// True when the first path component of a reference names a registry host.
fn is_domain(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

/// Registry host (and optional port): letters, digits, `.`, `-`, `:`, `[`, `]`.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Repository path component: lowercase letters and digits, separated by `.`, `_`, `__` or `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

/// Tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    (1..=128).contains(&bytes.len())
        && bytes.first().is_some_and(word)
        && bytes.iter().all(|b| word(b) || matches!(b, b'.' | b'-'))
}

/// Digest in a reference: `algorithm:hex`.
fn valid_digest(digest: &str) -> bool {
    match digest.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty()
                && alg.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '+'
                        || c == '.'
                        || c == '_'
                        || c == '-'
                })
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", Some("docker.io/library/busybox:latest")),
            ("busybox:test", Some("docker.io/library/busybox:test")),
            ("kubox/pause:3.10", Some("docker.io/kubox/pause:3.10")),
            (
                "docker.io/library/busybox:test",
                Some("docker.io/library/busybox:test"),
            ),
            (
                "index.docker.io/library/busybox",
                Some("docker.io/library/busybox:latest"),
            ),
            ("localhost:5000/foo/bar:1", Some("localhost:5000/foo/bar:1")),
            ("quay.io/a/b", Some("quay.io/a/b:latest")),
            ("Busybox", None),
            ("busybox:", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), want, "{input}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("busybox@{digest}")),
            Some(format!("docker.io/library/busybox@{digest}"))
        );
        assert!(!is_full_reference("3.10"));
        assert!(is_full_reference("busybox:3.10"));
    }
}
