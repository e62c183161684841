//! Upstream `x-kubernetes-*` extensions that k8s-openapi's schemars output lacks: patch
//! strategies and merge keys (strategic merge patch) and list types / map keys (server-side
//! apply), transcribed from the `+patchStrategy`, `+patchMergeKey`, `+listType` and
//! `+listMapKey` markers of upstream's Go types.

use serde_json::{Map, Value};

/// One field's extensions.
struct Ext {
    /// Schema name without the `io.k8s.` prefix, e.g. `api.core.v1.PodSpec`.
    schema: &'static str,
    property: &'static str,
    strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
    list_type: Option<&'static str>,
    map_keys: &'static [&'static str],
}

const fn merge_map(
    schema: &'static str,
    property: &'static str,
    key: &'static str,
    keys: &'static [&'static str],
) -> Ext {
    Ext {
        schema,
        property,
        strategy: Some("merge"),
        merge_key: Some(key),
        list_type: Some("map"),
        map_keys: keys,
    }
}

const fn list(
    schema: &'static str,
    property: &'static str,
    list_type: &'static str,
    keys: &'static [&'static str],
) -> Ext {
    Ext {
        schema,
        property,
        strategy: None,
        merge_key: None,
        list_type: Some(list_type),
        map_keys: keys,
    }
}

const fn strategy(schema: &'static str, property: &'static str, strategy: &'static str) -> Ext {
    Ext {
        schema,
        property,
        strategy: Some(strategy),
        merge_key: None,
        list_type: None,
        map_keys: &[],
    }
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];

const TABLE: &[Ext] = &[
    // meta/v1
    Ext {
        schema: "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        property: "finalizers",
        strategy: Some("merge"),
        merge_key: None,
        list_type: Some("set"),
        map_keys: &[],
    },
    merge_map(
        "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
        &["uid"],
    ),
    list(
        "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "managedFields",
        "atomic",
        &[],
    ),
    list(
        "apimachinery.pkg.apis.meta.v1.LabelSelector",
        "matchExpressions",
        "atomic",
        &[],
    ),
    list(
        "apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement",
        "values",
        "atomic",
        &[],
    ),
    // core/v1 pods
    merge_map("api.core.v1.PodSpec", "containers", "name", NAME),
    merge_map("api.core.v1.PodSpec", "initContainers", "name", NAME),
    merge_map("api.core.v1.PodSpec", "ephemeralContainers", "name", NAME),
    Ext {
        schema: "api.core.v1.PodSpec",
        property: "volumes",
        strategy: Some("merge,retainKeys"),
        merge_key: Some("name"),
        list_type: Some("map"),
        map_keys: NAME,
    },
    merge_map("api.core.v1.PodSpec", "imagePullSecrets", "name", NAME),
    merge_map("api.core.v1.PodSpec", "hostAliases", "ip", &["ip"]),
    list("api.core.v1.PodSpec", "tolerations", "atomic", &[]),
    merge_map(
        "api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    merge_map("api.core.v1.PodSpec", "schedulingGates", "name", NAME),
    Ext {
        schema: "api.core.v1.PodSpec",
        property: "resourceClaims",
        strategy: Some("merge,retainKeys"),
        merge_key: Some("name"),
        list_type: Some("map"),
        map_keys: NAME,
    },
    list("api.core.v1.PodSpec", "readinessGates", "atomic", &[]),
    merge_map("api.core.v1.PodStatus", "conditions", "type", TYPE),
    merge_map("api.core.v1.PodStatus", "podIPs", "ip", &["ip"]),
    merge_map("api.core.v1.PodStatus", "hostIPs", "ip", &["ip"]),
    list("api.core.v1.PodStatus", "containerStatuses", "atomic", &[]),
    list(
        "api.core.v1.PodStatus",
        "initContainerStatuses",
        "atomic",
        &[],
    ),
    list(
        "api.core.v1.PodStatus",
        "ephemeralContainerStatuses",
        "atomic",
        &[],
    ),
    merge_map(
        "api.core.v1.Container",
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    merge_map("api.core.v1.Container", "env", "name", NAME),
    merge_map(
        "api.core.v1.Container",
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    merge_map(
        "api.core.v1.Container",
        "volumeDevices",
        "devicePath",
        &["devicePath"],
    ),
    list("api.core.v1.Container", "envFrom", "atomic", &[]),
    list("api.core.v1.Container", "resizePolicy", "atomic", &[]),
    list("api.core.v1.Container", "args", "atomic", &[]),
    list("api.core.v1.Container", "command", "atomic", &[]),
    merge_map(
        "api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    merge_map("api.core.v1.EphemeralContainer", "env", "name", NAME),
    merge_map(
        "api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    merge_map(
        "api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
        &["devicePath"],
    ),
    list("api.core.v1.ResourceRequirements", "claims", "map", NAME),
    // core/v1 others
    merge_map(
        "api.core.v1.ServiceSpec",
        "ports",
        "port",
        &["port", "protocol"],
    ),
    list("api.core.v1.ServiceSpec", "clusterIPs", "atomic", &[]),
    list("api.core.v1.ServiceSpec", "ipFamilies", "atomic", &[]),
    merge_map("api.core.v1.ServiceStatus", "conditions", "type", TYPE),
    merge_map("api.core.v1.NodeStatus", "conditions", "type", TYPE),
    merge_map("api.core.v1.NodeStatus", "addresses", "type", TYPE),
    Ext {
        schema: "api.core.v1.NodeSpec",
        property: "podCIDRs",
        strategy: Some("merge"),
        merge_key: None,
        list_type: Some("set"),
        map_keys: &[],
    },
    list("api.core.v1.NodeSpec", "taints", "atomic", &[]),
    merge_map("api.core.v1.NamespaceStatus", "conditions", "type", TYPE),
    merge_map(
        "api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "type",
        TYPE,
    ),
    merge_map(
        "api.core.v1.ReplicationControllerStatus",
        "conditions",
        "type",
        TYPE,
    ),
    merge_map("api.core.v1.ServiceAccount", "secrets", "name", NAME),
    list(
        "api.core.v1.ServiceAccount",
        "imagePullSecrets",
        "atomic",
        &[],
    ),
    list("api.core.v1.EndpointSubset", "addresses", "atomic", &[]),
    list(
        "api.core.v1.EndpointSubset",
        "notReadyAddresses",
        "atomic",
        &[],
    ),
    list("api.core.v1.EndpointSubset", "ports", "atomic", &[]),
    list("api.core.v1.Endpoints", "subsets", "atomic", &[]),
    list(
        "api.core.v1.NodeSelectorTerm",
        "matchExpressions",
        "atomic",
        &[],
    ),
    list(
        "api.core.v1.NodeSelector",
        "nodeSelectorTerms",
        "atomic",
        &[],
    ),
    list("api.core.v1.LimitRangeSpec", "limits", "atomic", &[]),
    // apps/v1
    strategy("api.apps.v1.DeploymentSpec", "strategy", "retainKeys"),
    merge_map("api.apps.v1.DeploymentStatus", "conditions", "type", TYPE),
    merge_map("api.apps.v1.DaemonSetStatus", "conditions", "type", TYPE),
    merge_map("api.apps.v1.ReplicaSetStatus", "conditions", "type", TYPE),
    merge_map("api.apps.v1.StatefulSetStatus", "conditions", "type", TYPE),
    list(
        "api.apps.v1.StatefulSetSpec",
        "volumeClaimTemplates",
        "atomic",
        &[],
    ),
    // batch/v1
    Ext {
        schema: "api.batch.v1.JobStatus",
        property: "conditions",
        strategy: Some("merge"),
        merge_key: Some("type"),
        list_type: Some("atomic"),
        map_keys: &[],
    },
    list("api.batch.v1.CronJobStatus", "active", "atomic", &[]),
    // autoscaling
    merge_map(
        "api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "type",
        TYPE,
    ),
    list(
        "api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "metrics",
        "atomic",
        &[],
    ),
    // policy, networking, apiextensions, discovery
    merge_map(
        "api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "type",
        TYPE,
    ),
    list("api.networking.v1.IngressSpec", "rules", "atomic", &[]),
    list("api.networking.v1.IngressSpec", "tls", "atomic", &[]),
    list(
        "api.networking.v1.HTTPIngressRuleValue",
        "paths",
        "atomic",
        &[],
    ),
    list(
        "api.networking.v1.NetworkPolicySpec",
        "ingress",
        "atomic",
        &[],
    ),
    list(
        "api.networking.v1.NetworkPolicySpec",
        "egress",
        "atomic",
        &[],
    ),
    list(
        "api.networking.v1.NetworkPolicySpec",
        "policyTypes",
        "atomic",
        &[],
    ),
    list(
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "conditions",
        "map",
        TYPE,
    ),
    list(
        "apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec",
        "versions",
        "atomic",
        &[],
    ),
    list("api.discovery.v1.EndpointSlice", "endpoints", "atomic", &[]),
    list("api.discovery.v1.EndpointSlice", "ports", "atomic", &[]),
    list("api.rbac.v1.ClusterRole", "rules", "atomic", &[]),
    list("api.rbac.v1.Role", "rules", "atomic", &[]),
    list("api.rbac.v1.RoleBinding", "subjects", "atomic", &[]),
    list("api.rbac.v1.ClusterRoleBinding", "subjects", "atomic", &[]),
];

/// (schema name, property) of every table entry.
#[cfg(test)]
pub(crate) fn entries() -> impl Iterator<Item = (String, &'static str)> {
    TABLE
        .iter()
        .map(|e| (format!("io.k8s.{}", e.schema), e.property))
}

/// Adds the table's extensions to the properties of the schemas in `schemas`.
pub(crate) fn apply(schemas: &mut Map<String, Value>) {
    for ext in TABLE {
        let name = format!("io.k8s.{}", ext.schema);
        let Some(prop) = schemas
            .get_mut(&name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(ext.property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(s) = ext.strategy {
            prop.insert("x-kubernetes-patch-strategy".into(), s.into());
        }
        if let Some(k) = ext.merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), k.into());
        }
        if let Some(t) = ext.list_type {
            prop.insert("x-kubernetes-list-type".into(), t.into());
        }
        if !ext.map_keys.is_empty() {
            prop.insert(
                "x-kubernetes-list-map-keys".into(),
                ext.map_keys.iter().map(|k| Value::from(*k)).collect(),
            );
        }
    }
}
