//! The RBAC authorizer: Roles, ClusterRoles and their bindings, held in memory (a
//! [`crate::mirror`] of `/registry/rbac.authorization.k8s.io/`, no store reads per request),
//! evaluated as upstream's `rbac.authorizer` does.

use crate::authn::User;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// What a request asks to do (upstream's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// Resource requests: group, resource, subresource, namespace ("" = cluster), name.
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Non-resource requests: the path.
    pub path: String,
}

impl Attributes {
    pub fn resource(
        verb: &str,
        api_group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: api_group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: String::new(),
        }
    }
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

#[derive(Default)]
struct Policy {
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    cluster_bindings: HashMap<String, Binding>,
    bindings: HashMap<String, HashMap<String, Binding>>,
}

/// The in-memory RBAC policy of the cluster.
#[derive(Default)]
pub struct Rbac {
    policy: RwLock<Policy>,
}

fn rules_of(obj: &Value) -> Arc<Vec<PolicyRule>> {
    Arc::new(
        obj.get("rules")
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok())
            .unwrap_or_default(),
    )
}

fn binding_of(obj: &Value) -> Option<Binding> {
    Some(Binding {
        name: obj.pointer("/metadata/name")?.as_str()?.to_string(),
        role_kind: obj.pointer("/roleRef/kind")?.as_str()?.to_string(),
        role_name: obj.pointer("/roleRef/name")?.as_str()?.to_string(),
        subjects: obj
            .get("subjects")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default(),
    })
}

/// `(kind, namespace, name)` from a key under [`PREFIX`].
fn parse_key(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [kind, ns, name] => Some((kind, Some(ns), name)),
        [kind, name] => Some((kind, None, name)),
        _ => None,
    }
}

impl crate::mirror::Mirror for Rbac {
    const PREFIXES: &'static [&'static str] = &[PREFIX];
    const WHAT: &'static str = "RBAC policy";
    fn apply(&self, key: &str, obj: Option<&Value>) {
        Rbac::apply(self, key, obj);
    }
    fn clear(&self) {
        if let Ok(mut p) = self.policy.write() {
            *p = Policy::default();
        }
    }
}

impl Rbac {
    fn apply(&self, key: &str, obj: Option<&Value>) {
        let Some((kind, ns, name)) = parse_key(key) else {
            return;
        };
        let Ok(mut p) = self.policy.write() else {
            return;
        };
        match (kind, ns, obj) {
            ("clusterroles", None, Some(o)) => {
                p.cluster_roles.insert(name.into(), rules_of(o));
            }
            ("clusterroles", None, None) => {
                p.cluster_roles.remove(name);
            }
            ("roles", Some(ns), Some(o)) => {
                p.roles.insert((ns.into(), name.into()), rules_of(o));
            }
            ("roles", Some(ns), None) => {
                p.roles.remove(&(ns.to_string(), name.to_string()));
            }
            ("clusterrolebindings", None, Some(o)) => match binding_of(o) {
                Some(b) => {
                    p.cluster_bindings.insert(name.into(), b);
                }
                None => {
                    p.cluster_bindings.remove(name);
                }
            },
            ("clusterrolebindings", None, None) => {
                p.cluster_bindings.remove(name);
            }
            ("rolebindings", Some(ns), o) => {
                let m = p.bindings.entry(ns.to_string()).or_default();
                match o.and_then(binding_of) {
                    Some(b) => {
                        m.insert(name.into(), b);
                    }
                    None => {
                        m.remove(name);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every rule that applies to `user` in `namespace` ("" = cluster-wide rules only), with a
    /// description of where it came from.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<(String, Arc<Vec<PolicyRule>>)> {
        let Ok(p) = self.policy.read() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let role = |kind: &str, ns: Option<&str>, name: &str| -> Option<Arc<Vec<PolicyRule>>> {
            match (kind, ns) {
                ("ClusterRole", _) => p.cluster_roles.get(name).cloned(),
                ("Role", Some(ns)) => p.roles.get(&(ns.to_string(), name.to_string())).cloned(),
                _ => None,
            }
        };
        for b in p.cluster_bindings.values() {
            if b.subjects.iter().any(|s| subject_matches(s, user, ""))
                && let Some(r) = role(&b.role_kind, None, &b.role_name)
            {
                out.push((
                    format!(
                        "ClusterRoleBinding {:?} of ClusterRole {:?}",
                        b.name, b.role_name
                    ),
                    r,
                ));
            }
        }
        if !namespace.is_empty()
            && let Some(bs) = p.bindings.get(namespace)
        {
            for b in bs.values() {
                if b.subjects
                    .iter()
                    .any(|s| subject_matches(s, user, namespace))
                    && let Some(r) = role(&b.role_kind, Some(namespace), &b.role_name)
                {
                    out.push((
                        format!(
                            "RoleBinding {:?} of {} {:?} in namespace {namespace:?}",
                            b.name, b.role_kind, b.role_name
                        ),
                        r,
                    ));
                }
            }
        }
        out
    }

    /// Whether RBAC allows `attrs` for `user`, with upstream's reason text when allowed.
    pub fn authorize(&self, user: &User, attrs: &Attributes) -> Option<String> {
        let ns = if attrs.resource_request {
            attrs.namespace.as_str()
        } else {
            ""
        };
        self.rules_for(user, ns)
            .into_iter()
            .find(|(_, rules)| rules.iter().any(|r| rule_allows(r, attrs)))
            .map(|(from, _)| format!("RBAC: allowed by {from}"))
    }

    /// The rules of a ClusterRole (for aggregation and escalation checks).
    pub fn cluster_role(&self, name: &str) -> Option<Arc<Vec<PolicyRule>>> {
        self.policy.read().ok()?.cluster_roles.get(name).cloned()
    }

    /// The rules of a Role.
    pub fn role(&self, namespace: &str, name: &str) -> Option<Arc<Vec<PolicyRule>>> {
        self.policy
            .read()
            .ok()?
            .roles
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

fn subject_matches(s: &Subject, user: &User, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.in_group(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            !ns.is_empty() && user.name == crate::authn::service_account_username(ns, &s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(r: &PolicyRule, a: &Attributes) -> bool {
    if !has(&r.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return r.non_resource_urls.iter().any(|u| {
            u == "*"
                || u == &a.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| a.path.starts_with(prefix))
        });
    }
    if !has(&r.api_groups, &a.api_group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = r.resources.iter().any(|res| {
        res == "*"
            || *res == combined
            || (!a.subresource.is_empty()
                && res
                    .strip_prefix("*/")
                    .is_some_and(|sub| sub == a.subresource))
    });
    resource_ok && (r.resource_names.is_empty() || r.resource_names.contains(&a.name))
}

/// Whether `owner` rules cover every permission in `rule` (upstream's escalation check,
/// `validation.Covers`, on the rule broken down into one verb/group/resource/name each).
pub fn covers(owner: &[PolicyRule], rule: &PolicyRule) -> bool {
    let names: Vec<Option<&String>> = if rule.resource_names.is_empty() {
        vec![None]
    } else {
        rule.resource_names.iter().map(Some).collect()
    };
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            let covered = owner.iter().any(|o| {
                has(&o.verbs, verb)
                    && (verb != "*" || o.verbs.iter().any(|v| v == "*"))
                    && o.non_resource_urls.iter().any(|ou| {
                        ou == "*"
                            || ou == url
                            || ou.strip_suffix('*').is_some_and(|p| url.starts_with(p))
                    })
            });
            if !covered {
                return false;
            }
        }
        for group in &rule.api_groups {
            for res in &rule.resources {
                for name in &names {
                    let covered = owner.iter().any(|o| {
                        // A wildcard in the new rule is covered only by a wildcard.
                        let exact = |list: &[String], v: &str| {
                            list.iter().any(|x| x == "*" || (v != "*" && x == v))
                        };
                        exact(&o.verbs, verb)
                            && exact(&o.api_groups, group)
                            && (o.resources.iter().any(|x| x == "*")
                                || o.resources.contains(res)
                                || res.split_once('/').is_some_and(|(_, sub)| {
                                    o.resources.iter().any(|x| x == &format!("*/{sub}"))
                                }))
                            && (o.resource_names.is_empty()
                                || name.is_some_and(|n| o.resource_names.contains(n)))
                    });
                    if !covered {
                        return false;
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn policy() -> Rbac {
        let r = Rbac::default();
        r.apply(
            "/registry/rbac.authorization.k8s.io/clusterroles/view-pods",
            Some(&json!({"rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]})),
        );
        r.apply(
            "/registry/rbac.authorization.k8s.io/roles/dev/scaler",
            Some(&json!({"rules": [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"], "resourceNames": ["web"]}]})),
        );
        r.apply(
            "/registry/rbac.authorization.k8s.io/rolebindings/dev/b1",
            Some(&json!({"metadata": {"name": "b1"}, "roleRef": {"kind": "ClusterRole", "name": "view-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "builder"}]})),
        );
        r.apply(
            "/registry/rbac.authorization.k8s.io/rolebindings/dev/b2",
            Some(
                &json!({"metadata": {"name": "b2"}, "roleRef": {"kind": "Role", "name": "scaler"},
                "subjects": [{"kind": "Group", "name": "ops"}]}),
            ),
        );
        r
    }

    #[test]
    fn bindings_grant_only_within_their_namespace() {
        let r = policy();
        let sa = User::service_account("dev", "builder", "u");
        let get = |ns: &str, sub: &str| Attributes::resource("get", "", "pods", sub, ns, "p");
        assert!(r.authorize(&sa, &get("dev", "")).is_some());
        assert!(r.authorize(&sa, &get("dev", "log")).is_some());
        assert!(r.authorize(&sa, &get("dev", "exec")).is_none());
        assert!(r.authorize(&sa, &get("prod", "")).is_none());
        assert!(r.authorize(&sa, &get("", "")).is_none());
        let del = Attributes::resource("delete", "", "pods", "", "dev", "p");
        assert!(r.authorize(&sa, &del).is_none());
        let other = User::service_account("prod", "builder", "u");
        assert!(r.authorize(&other, &get("dev", "")).is_none());
    }

    #[test]
    fn groups_wildcard_subresources_and_resource_names() {
        let r = policy();
        let ops = User::from_cert("alice".into(), vec!["ops".into()]);
        let scale = |name: &str| {
            Attributes::resource("update", "apps", "deployments", "scale", "dev", name)
        };
        assert!(r.authorize(&ops, &scale("web")).is_some());
        assert!(r.authorize(&ops, &scale("db")).is_none());
        r.apply(
            "/registry/rbac.authorization.k8s.io/rolebindings/dev/b2",
            None,
        );
        assert!(r.authorize(&ops, &scale("web")).is_none());
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rl = rule(json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}));
        assert!(rule_allows(
            &rl,
            &Attributes::non_resource("get", "/healthz")
        ));
        assert!(rule_allows(
            &rl,
            &Attributes::non_resource("get", "/apis/apps/v1")
        ));
        assert!(!rule_allows(&rl, &Attributes::non_resource("get", "/api")));
        assert!(!rule_allows(
            &rl,
            &Attributes::non_resource("post", "/healthz")
        ));
    }

    #[test]
    fn coverage_prevents_escalation() {
        let owner = vec![rule(
            json!({"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list"]}),
        )];
        let ok = rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}));
        let more_verbs =
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}));
        let wildcard = rule(json!({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}));
        let secrets = rule(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
        assert!(covers(&owner, &ok));
        assert!(!covers(&owner, &more_verbs));
        assert!(!covers(&owner, &wildcard));
        assert!(!covers(&owner, &secrets));
        let admin = vec![rule(
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        )];
        assert!(covers(&admin, &wildcard));
        let named = vec![rule(
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]}),
        )];
        assert!(!covers(&named, &ok));
        assert!(covers(
            &named,
            &rule(
                json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]})
            )
        ));
    }
}
