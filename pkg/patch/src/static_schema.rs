//! A built-in table of upstream patch metadata for common core/apps/batch kinds.

use crate::schema::{ListMeta, ListType, PatchSchema};

/// Patch metadata for the most used fields of built-in kinds, keyed by
/// (group, kind) and field path. Used until an OpenAPI-driven schema exists.
#[derive(Debug, Clone)]
pub struct StaticSchema {
    group: String,
    kind: String,
}

/// The built-in schema for `group`/`kind` (group `""` is core).
pub fn static_schema(group: &str, kind: &str) -> Box<dyn PatchSchema> {
    Box::new(StaticSchema::new(group, kind))
}

fn merge_map(key: &str, keys: &[&str]) -> ListMeta {
    ListMeta {
        strategy_merge: true,
        retain_keys: false,
        merge_key: Some(key.to_string()),
        list_type: Some(ListType::Map),
        map_keys: keys.iter().map(|s| s.to_string()).collect(),
    }
}

fn atomic() -> ListMeta {
    ListMeta {
        list_type: Some(ListType::Atomic),
        ..ListMeta::default()
    }
}

fn merge_set() -> ListMeta {
    ListMeta {
        strategy_merge: true,
        list_type: Some(ListType::Set),
        ..ListMeta::default()
    }
}

fn retain(mut m: ListMeta) -> ListMeta {
    m.retain_keys = true;
    m
}

/// Metadata of a field relative to a pod spec.
fn pod_spec_meta(rel: &[&str]) -> Option<ListMeta> {
    let container = |c: &str| matches!(c, "containers" | "initContainers" | "ephemeralContainers");
    Some(match rel {
        [c] if container(c) => merge_map("name", &["name"]),
        [c, "ports"] if container(c) => merge_map("containerPort", &["containerPort", "protocol"]),
        [c, "env"] if container(c) => merge_map("name", &["name"]),
        [c, "volumeMounts"] if container(c) => merge_map("mountPath", &["mountPath"]),
        [c, "volumeDevices"] if container(c) => merge_map("devicePath", &["devicePath"]),
        [c, "resizePolicy"] if container(c) => atomic(),
        [c, "envFrom" | "command" | "args"] if container(c) => atomic(),
        ["volumes"] => retain(merge_map("name", &["name"])),
        ["imagePullSecrets"] => merge_map("name", &["name"]),
        ["hostAliases"] => merge_map("ip", &["ip"]),
        ["topologySpreadConstraints"] => {
            merge_map("topologyKey", &["topologyKey", "whenUnsatisfiable"])
        }
        ["schedulingGates"] => merge_map("name", &["name"]),
        ["resourceClaims"] => retain(merge_map("name", &["name"])),
        ["tolerations" | "readinessGates"] => atomic(),
        _ => return None,
    })
}

/// Where the pod spec sits for kinds that carry one.
fn pod_spec_prefix(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    match (group, kind) {
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => Some(&["spec", "template", "spec"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

impl StaticSchema {
    /// The table for one kind.
    pub fn new(group: &str, kind: &str) -> Self {
        StaticSchema {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }

    fn kind_meta(&self, path: &[&str]) -> Option<ListMeta> {
        match (self.group.as_str(), self.kind.as_str(), path) {
            ("", "Service", ["spec", "ports"]) => Some(merge_map("port", &["port", "protocol"])),
            ("", "Service", ["spec", "externalIPs" | "clusterIPs" | "ipFamilies"]) => {
                Some(atomic())
            }
            ("", "Node", ["spec", "taints"]) => Some(atomic()),
            ("", "Node", ["spec", "podCIDRs"]) => Some(merge_set()),
            ("", "Namespace", ["spec", "finalizers"]) => Some(atomic()),
            ("batch", "Job", ["status", "conditions"]) => Some(ListMeta {
                strategy_merge: true,
                merge_key: Some("type".into()),
                list_type: Some(ListType::Atomic),
                ..ListMeta::default()
            }),
            ("apps", "Deployment", ["spec", "strategy"]) => Some(retain(ListMeta::default())),
            (_, _, ["status", "conditions"]) => Some(merge_map("type", &["type"])),
            _ => None,
        }
    }
}

impl PatchSchema for StaticSchema {
    fn field_meta(&self, path: &[&str]) -> Option<ListMeta> {
        if let Some(m) = self.kind_meta(path) {
            return Some(m);
        }
        if let Some(prefix) = pod_spec_prefix(&self.group, &self.kind)
            && let Some(rel) = path.strip_prefix(prefix)
            && let Some(m) = pod_spec_meta(rel)
        {
            return Some(m);
        }
        match path {
            [.., "metadata", "ownerReferences"] => Some(merge_map("uid", &["uid"])),
            [.., "metadata", "finalizers"] => Some(merge_set()),
            _ => None,
        }
    }

    fn is_atomic_map(&self, path: &[&str]) -> bool {
        match (self.group.as_str(), path) {
            // LabelSelector is a `structType=atomic`; Service's selector is `mapType=atomic`.
            ("apps" | "batch" | "policy", ["spec", "selector"]) => true,
            ("", ["spec", "selector"]) => self.kind == "Service",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_containers_merge_by_name() {
        let s = static_schema("apps", "Deployment");
        let m = s
            .field_meta(&["spec", "template", "spec", "containers"])
            .unwrap_or_default();
        assert!(m.strategy_merge);
        assert_eq!(m.merge_key.as_deref(), Some("name"));
    }

    #[test]
    fn container_ports_use_container_port_and_protocol_as_map_keys() {
        let s = static_schema("", "Pod");
        let m = s
            .field_meta(&["spec", "containers", "ports"])
            .unwrap_or_default();
        assert_eq!(m.merge_key.as_deref(), Some("containerPort"));
        assert_eq!(m.map_keys, vec!["containerPort", "protocol"]);
    }

    #[test]
    fn cronjob_pod_spec_is_found_under_the_job_template() {
        let s = static_schema("batch", "CronJob");
        let p = ["spec", "jobTemplate", "spec", "template", "spec", "volumes"];
        let m = s.field_meta(&p).unwrap_or_default();
        assert!(m.retain_keys && m.strategy_merge);
    }

    #[test]
    fn metadata_lists_are_known_for_every_kind() {
        let s = static_schema("example.com", "Widget");
        let m = s
            .field_meta(&["metadata", "ownerReferences"])
            .unwrap_or_default();
        assert_eq!(m.merge_key.as_deref(), Some("uid"));
        let f = s
            .field_meta(&["metadata", "finalizers"])
            .unwrap_or_default();
        assert_eq!(f.list_type, Some(ListType::Set));
        assert!(s.field_meta(&["spec", "containers"]).is_none());
    }

    #[test]
    fn tolerations_are_atomic_and_selectors_are_atomic_maps() {
        let s = static_schema("apps", "DaemonSet");
        let t = s
            .field_meta(&["spec", "template", "spec", "tolerations"])
            .unwrap_or_default();
        assert!(!t.strategy_merge);
        assert!(s.is_atomic_map(&["spec", "selector"]));
        assert!(static_schema("", "Service").is_atomic_map(&["spec", "selector"]));
    }
}
