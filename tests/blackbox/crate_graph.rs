//! The crate graph follows the layer order of ARCHITECTURE.md: dependencies only point to
//! lower layers (core -> pki, store, patch, openapi -> apiserver -> controllers -> server ->
//! cmd), and API clients (the controllers) never reach past the API into its implementation.
use std::collections::BTreeMap;
use std::path::Path;

/// Layer of every workspace crate; a crate may depend only on crates of a lower layer.
fn layers() -> BTreeMap<&'static str, u32> {
    BTreeMap::from([
        ("kubox-core", 0),
        ("kubox-pki", 1),
        ("kubox-store", 1),
        ("kubox-patch", 1),
        ("kubox-protobuf", 1),
        ("kubox-openapi", 1),
        ("kubox-apiserver", 2),
        ("kubox-containerd", 2),
        ("kubox-network", 2),
        // An API client like the controllers and the agent, one layer below the agent that
        // runs it on every node.
        ("kubox-dns", 2),
        // The Event recorder, shared by the controllers and the agent (kubelet events).
        ("kubox-events", 2),
        ("kubox-controllers", 3),
        ("kubox-agent", 3),
        ("kubox-server", 4),
        ("kubox-bench", 5),
        ("kubox", 5),
    ])
}

/// kubox-* crates a manifest depends on in [dependencies] (not dev-dependencies).
fn kubox_deps(manifest: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut name = String::new();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[package]" && line.starts_with("name") {
            name = line.split('"').nth(1).unwrap_or_default().to_string();
        }
        if section == "[dependencies]" && line.starts_with("kubox-") {
            deps.push(
                line.split(['.', ' ', '='])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    (name, deps)
}

#[test]
fn crate_dependencies_point_only_to_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layers();
    let mut manifests = vec![root.join("Cargo.toml")];
    for e in std::fs::read_dir(root.join("pkg")).unwrap() {
        let p = e.unwrap().path().join("Cargo.toml");
        if p.exists() {
            manifests.push(p);
        }
    }
    for m in manifests {
        let (name, deps) = kubox_deps(&m);
        let Some(&own) = layers.get(name.as_str()) else {
            panic!(
                "{name} ({}) has no layer: add it to this test and to ARCHITECTURE.md",
                m.display()
            );
        };
        for d in deps {
            let Some(&theirs) = layers.get(d.as_str()) else {
                panic!("{name} depends on unknown crate {d}")
            };
            assert!(
                theirs < own,
                "{name} (layer {own}) must not depend on {d} (layer {theirs})"
            );
            assert!(
                !(["kubox-controllers", "kubox-agent", "kubox-dns"].contains(&name.as_str())
                    && (d == "kubox-store" || d == "kubox-apiserver")),
                "{name} is an API client: it must not depend on {d}"
            );
        }
    }
}
