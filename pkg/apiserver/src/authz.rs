//! Authorization of every authenticated request, in upstream's order: `system:masters`
//! (superusers), the Node authorizer, then RBAC; and impersonation (`Impersonate-*` headers).

use crate::authn::User;
use crate::error::ApiError;
use crate::rbac::Attributes;
use crate::request::{Query, RequestInfo};
use crate::state::ApiState;
use serde_json::json;

/// The authorizer's answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Upstream's request attributes: resource requests from their [`RequestInfo`] (a list or
/// watch narrowed by `fieldSelector=metadata.name=X` names X), everything else by path.
pub fn attributes(
    method: &http::Method,
    path: &str,
    info: Option<&RequestInfo>,
    query: &Query,
) -> Attributes {
    match info {
        Some(i) => {
            let mut name = i.name.clone().unwrap_or_default();
            if name.is_empty()
                && matches!(i.verb.as_str(), "list" | "watch")
                && let Some(sel) = query.get("fieldSelector")
            {
                for term in sel.split(',') {
                    if let Some(v) = term
                        .strip_prefix("metadata.name==")
                        .or_else(|| term.strip_prefix("metadata.name="))
                    {
                        name = v.to_string();
                    }
                }
            }
            // Streaming into a pod over GET (websocket) needs `create`, as upstream's
            // AuthorizePodWebsocketUpgradeCreatePermission.
            let streams = i.verb == "get"
                && i.group.is_empty()
                && i.resource == "pods"
                && matches!(
                    i.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward")
                );
            Attributes::resource(
                if streams { "create" } else { &i.verb },
                &i.group,
                &i.resource,
                i.subresource.as_deref().unwrap_or_default(),
                i.namespace.as_deref().unwrap_or_default(),
                &name,
            )
        }
        None => {
            let verb = match *method {
                http::Method::GET | http::Method::HEAD => "get",
                http::Method::POST => "post",
                http::Method::PUT => "put",
                http::Method::PATCH => "patch",
                http::Method::DELETE => "delete",
                _ => "",
            };
            Attributes::non_resource(verb, path)
        }
    }
}

/// Whether `user` may do `a`.
pub fn decide(state: &ApiState, user: &User, a: &Attributes) -> Decision {
    if user.in_group("system:masters") {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    if let Some(node) = user.as_node() {
        match crate::nodeauth::decide(state, node, a) {
            Some(true) => {
                return Decision {
                    allowed: true,
                    reason: "node authorizer".into(),
                };
            }
            Some(false) => {
                return Decision {
                    allowed: false,
                    reason: format!(
                        "node '{node}' cannot {} {} {:?} in namespace {:?}: not related to a pod bound to the node",
                        a.verb, a.resource, a.name, a.namespace
                    ),
                };
            }
            None => {}
        }
    }
    match state.rbac.authorize(user, a) {
        Some(reason) => Decision {
            allowed: true,
            reason,
        },
        None => Decision {
            allowed: false,
            reason: String::new(),
        },
    }
}

/// Ok when `user` may do `a`; otherwise upstream's 403 `Status`.
pub fn check(state: &ApiState, user: &User, a: &Attributes) -> Result<(), ApiError> {
    let d = decide(state, user, a);
    if d.allowed {
        Ok(())
    } else {
        Err(forbidden(user, a, &d.reason))
    }
}

/// Upstream's Forbidden message: `pods "x" is forbidden: User "u" cannot get resource "pods"
/// in API group "" in the namespace "dev"`.
pub fn forbidden(user: &User, a: &Attributes, reason: &str) -> ApiError {
    let suffix = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    if !a.resource_request {
        return ApiError::forbidden(format!(
            "forbidden: User {:?} cannot {} path {:?}{suffix}",
            user.name, a.verb, a.path
        ))
        .with_details(json!({}));
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let what = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} {:?}", a.name)
    };
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    ApiError::forbidden(format!(
        "{what} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}{suffix}",
        user.name, a.verb, a.api_group
    ))
    .with_details(json!({"name": a.name, "group": a.api_group, "kind": a.resource}))
}

/// Applies `Impersonate-User/-Group/-Uid/-Extra-*` headers: each impersonated attribute needs
/// the `impersonate` verb on it. Returns the user the request then runs as.
pub fn impersonate(
    state: &ApiState,
    user: User,
    headers: &http::HeaderMap,
) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let target = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = v.to_str()
        {
            let key = percent_decode(key);
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    let Some(name) = target else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(user);
    };
    let may = |a: Attributes| check(state, &user, &a);
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => may(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            ns,
            sa,
        ))?,
        None => may(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            "",
            &name,
        ))?,
    }
    for g in &groups {
        may(Attributes::resource("impersonate", "", "groups", "", "", g))?;
    }
    if let Some(u) = &uid {
        may(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            "",
            u,
        ))?;
    }
    for (k, vs) in &extra {
        for v in vs {
            may(Attributes::resource(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                k,
                "",
                v,
            ))?;
        }
    }
    let mut out = User {
        name: name.clone(),
        groups,
        uid: uid.unwrap_or_default(),
        extra,
    };
    if let Some((ns, _)) = out
        .as_service_account()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        && out.groups.is_empty()
    {
        out.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if name == "system:anonymous" {
        if !out.in_group("system:unauthenticated") {
            out.groups.push("system:unauthenticated".into());
        }
        Ok(out)
    } else {
        Ok(out.authenticated())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_match_upstream() {
        let u = User::service_account("dev", "builder", "x");
        let a = Attributes::resource("list", "", "pods", "", "dev", "");
        assert_eq!(
            forbidden(&u, &a, "").message,
            "pods is forbidden: User \"system:serviceaccount:dev:builder\" cannot list resource \"pods\" in API group \"\" in the namespace \"dev\""
        );
        let a = Attributes::resource("get", "apps", "deployments", "scale", "", "web");
        assert_eq!(
            forbidden(&u, &a, "").message,
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:dev:builder\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        let a = Attributes::non_resource("get", "/metrics");
        assert_eq!(
            forbidden(&u, &a, "").message,
            "forbidden: User \"system:serviceaccount:dev:builder\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn list_with_a_name_selector_names_the_object() {
        let q = Query::parse(Some("fieldSelector=metadata.name%3Dtls"));
        let info = RequestInfo {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: Some("dev".into()),
            ..Default::default()
        };
        let a = attributes(
            &http::Method::GET,
            "/api/v1/namespaces/dev/secrets",
            Some(&info),
            &q,
        );
        assert_eq!(a.name, "tls");
        assert_eq!(percent_decode("example.com%2Fscopes"), "example.com/scopes");
    }
}
