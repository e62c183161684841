//! The resource registry: every served group/version/resource, built-in or from a CRD.
//!
//! A [`ResourceDef`] says how a resource is named (kind, plural, singular, short names), whether
//! it is namespaced, which verbs and subresources it serves, and where it is stored. Several
//! served versions may share one storage location (`events` in core/v1 and events.k8s.io/v1,
//! HPAs in autoscaling/v1 and v2); [`ResourceDef::storage`] names it.

use std::collections::BTreeMap;

/// The standard verbs of a fully featured resource, in upstream's discovery order.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A subresource served under `<resource>/<name>/<subresource>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubresourceDef {
    pub name: String,
    /// (group, version, kind) of the object the subresource returns.
    pub response: (String, String, String),
    pub verbs: Vec<String>,
}

/// One served resource in one group/version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group, "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<SubresourceDef>,
    /// Storage location shared by every version serving the same objects, e.g. "apps/deployments".
    pub storage: String,
    /// True for custom resources (served from a CRD).
    pub custom: bool,
}

impl ResourceDef {
    /// "v1" for the core group, "apps/v1" otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `deployments.apps`, or `pods` for the core group: how upstream names a resource in messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    pub fn subresource(&self, name: &str) -> Option<&SubresourceDef> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

/// A group with its versions, preferred version first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    pub name: String,
    pub versions: Vec<String>,
}

/// All served resources. Built-ins are fixed; custom resources come and go with their CRDs.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<ResourceDef>,
    /// Group order as discovery lists it; versions preferred first.
    groups: Vec<GroupDef>,
}

impl Registry {
    /// The registry of Kubernetes 1.33 built-in resources served by kubox.
    pub fn builtin() -> Registry {
        let mut reg = Registry::default();
        for def in builtin_resources() {
            reg.add(def);
        }
        reg
    }

    /// Adds (or replaces) a resource. Versions are kept in the order they were first added,
    /// so add the preferred version first.
    pub fn add(&mut self, def: ResourceDef) {
        self.resources.retain(|r| {
            !(r.group == def.group && r.version == def.version && r.plural == def.plural)
        });
        match self.groups.iter_mut().find(|g| g.name == def.group) {
            Some(g) => {
                if !g.versions.contains(&def.version) {
                    g.versions.push(def.version.clone());
                }
            }
            None => self.groups.push(GroupDef {
                name: def.group.clone(),
                versions: vec![def.version.clone()],
            }),
        }
        self.resources.push(def);
    }

    /// Removes every custom resource of `group` whose plural is `plural`.
    pub fn remove_custom(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.custom && r.group == group && r.plural == plural));
        self.prune_groups();
    }

    /// Removes every resource of `group` (a built-in API switched off, such as metrics.k8s.io
    /// under `--disable metrics-server`).
    pub fn remove_group(&mut self, group: &str) {
        self.resources.retain(|r| r.group != group);
        self.prune_groups();
    }

    /// Sets the version order (preferred first) of a group, e.g. from a CRD's served versions.
    pub fn set_version_order(&mut self, group: &str, order: &[String]) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == group) {
            g.versions
                .sort_by_key(|v| order.iter().position(|o| o == v).unwrap_or(usize::MAX));
        }
    }

    fn prune_groups(&mut self) {
        let resources = &self.resources;
        for g in &mut self.groups {
            g.versions.retain(|v| {
                resources
                    .iter()
                    .any(|r| r.group == g.name && &r.version == v)
            });
        }
        self.groups.retain(|g| !g.versions.is_empty());
    }

    pub fn resources(&self) -> &[ResourceDef] {
        &self.resources
    }

    pub fn groups(&self) -> &[GroupDef] {
        &self.groups
    }

    pub fn group(&self, name: &str) -> Option<&GroupDef> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Resources of one group/version, in registration order.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&ResourceDef> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Every served version of the objects stored at `storage`.
    pub fn by_storage(&self, storage: &str) -> Vec<&ResourceDef> {
        self.resources
            .iter()
            .filter(|r| r.storage == storage)
            .collect()
    }

    /// The preferred version's definition for a group + plural.
    pub fn preferred(&self, group: &str, plural: &str) -> Option<&ResourceDef> {
        let g = self.group(group)?;
        g.versions
            .iter()
            .find_map(|v| self.lookup(group, v, plural))
    }

    /// Map from group to preferred version, for discovery.
    pub fn preferred_versions(&self) -> BTreeMap<String, String> {
        self.groups
            .iter()
            .filter_map(|g| g.versions.first().map(|v| (g.name.clone(), v.clone())))
            .collect()
    }
}

/// Splits "apps/v1" into ("apps", "v1") and "v1" into ("", "v1").
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

struct B {
    def: ResourceDef,
}

impl B {
    fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> B {
        let storage = if group.is_empty() {
            format!("core/{plural}")
        } else {
            format!("{group}/{plural}")
        };
        B {
            def: ResourceDef {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: kind.to_ascii_lowercase(),
                namespaced,
                short_names: vec![],
                categories: vec![],
                verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
                subresources: vec![],
                storage,
                custom: false,
            },
        }
    }
    fn short(mut self, names: &[&str]) -> B {
        self.def.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn all(mut self) -> B {
        self.def.categories.push("all".into());
        self
    }
    fn category(mut self, c: &str) -> B {
        self.def.categories.push(c.into());
        self
    }
    fn verbs(mut self, verbs: &[&str]) -> B {
        self.def.verbs = verbs.iter().map(|s| s.to_string()).collect();
        self
    }
    fn storage(mut self, storage: &str) -> B {
        self.def.storage = storage.into();
        self
    }
    fn sub(mut self, name: &str, response: (&str, &str, &str), verbs: &[&str]) -> B {
        self.def.subresources.push(SubresourceDef {
            name: name.into(),
            response: (response.0.into(), response.1.into(), response.2.into()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        });
        self
    }
    fn status(self) -> B {
        let (g, v, k) = (
            self.def.group.clone(),
            self.def.version.clone(),
            self.def.kind.clone(),
        );
        self.sub("status", (&g, &v, &k), &["get", "patch", "update"])
    }
    fn scale(self) -> B {
        self.sub(
            "scale",
            ("autoscaling", "v1", "Scale"),
            &["get", "patch", "update"],
        )
    }
}

const GPU: &[&str] = &["get", "patch", "update"];

fn builtin_resources() -> Vec<ResourceDef> {
    let b = B::new;
    let core = "";
    let list = vec![
        // core/v1
        b(core, "v1", "Binding", "bindings", true).verbs(&["create"]),
        b(core, "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
        b(core, "v1", "Endpoints", "endpoints", true).short(&["ep"]),
        b(core, "v1", "Event", "events", true).short(&["ev"]),
        b(core, "v1", "LimitRange", "limitranges", true).short(&["limits"]),
        b(core, "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .verbs(&[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ])
            .sub("finalize", ("", "v1", "Namespace"), &["update"])
            .status(),
        b(core, "v1", "Node", "nodes", false)
            .short(&["no"])
            .sub(
                "proxy",
                ("", "v1", "NodeProxyOptions"),
                &["create", "delete", "get", "patch", "update"],
            )
            .status(),
        b(
            core,
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        )
        .short(&["pvc"])
        .status(),
        b(core, "v1", "PersistentVolume", "persistentvolumes", false)
            .short(&["pv"])
            .status(),
        b(core, "v1", "Pod", "pods", true)
            .short(&["po"])
            .all()
            .sub("attach", ("", "v1", "PodAttachOptions"), &["create", "get"])
            .sub("binding", ("", "v1", "Binding"), &["create"])
            .sub("ephemeralcontainers", ("", "v1", "Pod"), GPU)
            .sub("eviction", ("policy", "v1", "Eviction"), &["create"])
            .sub("exec", ("", "v1", "PodExecOptions"), &["create", "get"])
            .sub("log", ("", "v1", "Pod"), &["get"])
            .sub(
                "portforward",
                ("", "v1", "PodPortForwardOptions"),
                &["create", "get"],
            )
            .sub(
                "proxy",
                ("", "v1", "PodProxyOptions"),
                &["create", "delete", "get", "patch", "update"],
            )
            .sub("resize", ("", "v1", "Pod"), GPU)
            .status(),
        b(core, "v1", "PodTemplate", "podtemplates", true),
        b(
            core,
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            true,
        )
        .short(&["rc"])
        .all()
        .scale()
        .status(),
        b(core, "v1", "ResourceQuota", "resourcequotas", true)
            .short(&["quota"])
            .status(),
        b(core, "v1", "Secret", "secrets", true),
        b(core, "v1", "ServiceAccount", "serviceaccounts", true)
            .short(&["sa"])
            .sub(
                "token",
                ("authentication.k8s.io", "v1", "TokenRequest"),
                &["create"],
            ),
        b(core, "v1", "Service", "services", true)
            .short(&["svc"])
            .all()
            .sub(
                "proxy",
                ("", "v1", "ServiceProxyOptions"),
                &["create", "delete", "get", "patch", "update"],
            )
            .status(),
        // apps/v1
        b(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
        ),
        b("apps", "v1", "DaemonSet", "daemonsets", true)
            .short(&["ds"])
            .all()
            .status(),
        b("apps", "v1", "Deployment", "deployments", true)
            .short(&["deploy"])
            .all()
            .scale()
            .status(),
        b("apps", "v1", "ReplicaSet", "replicasets", true)
            .short(&["rs"])
            .all()
            .scale()
            .status(),
        b("apps", "v1", "StatefulSet", "statefulsets", true)
            .short(&["sts"])
            .all()
            .scale()
            .status(),
        // events.k8s.io/v1: the same objects as core/v1 events, another view.
        b("events.k8s.io", "v1", "Event", "events", true)
            .short(&["ev"])
            .storage("core/events"),
        // authentication / authorization reviews: create-only, answered and never stored.
        b(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
        )
        .verbs(&["create"]),
        b(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
        )
        .verbs(&["create"]),
        b(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
        )
        .verbs(&["create"]),
        b(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
        )
        .verbs(&["create"]),
        b(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
        )
        .verbs(&["create"]),
        b(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
        )
        .verbs(&["create"]),
        // autoscaling: v2 preferred, v1 shares storage.
        b(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        )
        .short(&["hpa"])
        .all()
        .status(),
        b(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        )
        .short(&["hpa"])
        .all()
        .status(),
        // batch/v1
        b("batch", "v1", "CronJob", "cronjobs", true)
            .short(&["cj"])
            .all()
            .status(),
        b("batch", "v1", "Job", "jobs", true).all().status(),
        b(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            false,
        )
        .short(&["csr"])
        .sub(
            "approval",
            ("certificates.k8s.io", "v1", "CertificateSigningRequest"),
            GPU,
        )
        .status(),
        b(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
        ),
        b("networking.k8s.io", "v1", "Ingress", "ingresses", true)
            .short(&["ing"])
            .status(),
        b(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
        .short(&["netpol"]),
        b(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        )
        .short(&["pdb"])
        .status(),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        b("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        b("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false),
        b("storage.k8s.io", "v1", "CSINode", "csinodes", false),
        b(
            "storage.k8s.io",
            "v1",
            "CSIStorageCapacity",
            "csistoragecapacities",
            true,
        ),
        b(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
        )
        .short(&["sc"]),
        b(
            "storage.k8s.io",
            "v1",
            "VolumeAttachment",
            "volumeattachments",
            false,
        )
        .status(),
        b(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        )
        .category("api-extensions"),
        b(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        )
        .category("api-extensions"),
        b(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .short(&["crd", "crds"])
        .category("api-extensions")
        .status(),
        b(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            false,
        )
        .short(&["pc"]),
        b("coordination.k8s.io", "v1", "Lease", "leases", true),
        b("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false),
        b(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        // metrics.k8s.io: computed from kubelet samples, never stored (metrics-server's API).
        b("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", false).verbs(&["get", "list"]),
        b("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true).verbs(&["get", "list"]),
    ];
    list.into_iter().map(|b| b.def).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_pods_are_namespaced_with_status_and_binding() {
        let reg = Registry::builtin();
        let pods = reg.lookup("", "v1", "pods").expect("pods");
        assert!(pods.namespaced);
        assert!(pods.has_status());
        assert!(pods.subresource("binding").is_some());
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.storage, "core/events".replace("events", "pods"));
    }

    #[test]
    fn event_views_share_one_storage_location() {
        let reg = Registry::builtin();
        let views: Vec<_> = reg
            .by_storage("core/events")
            .iter()
            .map(|r| r.api_version())
            .collect();
        assert_eq!(views, vec!["v1", "events.k8s.io/v1"]);
    }

    #[test]
    fn autoscaling_prefers_v2() {
        let reg = Registry::builtin();
        assert_eq!(reg.preferred_versions()["autoscaling"], "v2");
        assert_eq!(
            reg.preferred("autoscaling", "horizontalpodautoscalers")
                .map(|r| r.version.as_str()),
            Some("v2")
        );
    }

    #[test]
    fn removing_a_custom_resource_drops_its_empty_group() {
        let mut reg = Registry::builtin();
        let mut def = reg.lookup("", "v1", "configmaps").expect("cm").clone();
        def.group = "example.com".into();
        def.custom = true;
        reg.add(def);
        assert!(reg.group("example.com").is_some());
        reg.remove_custom("example.com", "configmaps");
        assert!(reg.group("example.com").is_none());
    }

    #[test]
    fn metrics_are_served_until_their_group_is_removed() {
        let mut reg = Registry::builtin();
        let pods = reg
            .lookup("metrics.k8s.io", "v1beta1", "pods")
            .expect("podmetrics");
        assert_eq!(pods.kind, "PodMetrics");
        assert_eq!(pods.verbs, vec!["get", "list"]);
        reg.remove_group("metrics.k8s.io");
        assert!(reg.group("metrics.k8s.io").is_none());
        assert!(reg.lookup("", "v1", "pods").is_some());
    }

    #[test]
    fn api_version_splits_into_group_and_version() {
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
