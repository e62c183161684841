//! Discovery: /api, /apis (plain and aggregated apidiscovery.k8s.io v2/v2beta1), per-group and
//! per-group-version documents, and /version.

use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use kubox_core::resources::{Registry, ResourceDef};
use serde_json::{Value, json};

/// Kubernetes version kubox serves.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub use kubox_core::KUBE_GIT_VERSION;

/// The /version document.
pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "emulationMajor": KUBE_MAJOR,
        "emulationMinor": KUBE_MINOR,
        "minCompatibilityMajor": KUBE_MAJOR,
        "minCompatibilityMinor": "32",
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// Which aggregated discovery version the Accept header asks for, if any.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())?;
    for range in accept.split(',') {
        let params: Vec<(&str, &str)> = range
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| *pk == k && *pv == v);
        if has("g", "apidiscovery.k8s.io") && has("as", "APIGroupDiscoveryList") {
            if has("v", "v2") {
                return Some("v2");
            }
            if has("v", "v2beta1") {
                return Some("v2beta1");
            }
        }
        // A plain type earlier in the list wins.
        let mime = range.split(';').next().unwrap_or("").trim();
        if params.is_empty() && matches!(mime, "application/json" | "*/*") {
            return None;
        }
    }
    None
}

fn respond(body: &Value, content_type: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = StatusCode::OK;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
    r
}

fn aggregated_content_type(v: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList")
}

fn verbs(def: &ResourceDef) -> Vec<String> {
    def.verbs.clone()
}

fn scope(def: &ResourceDef) -> &'static str {
    if def.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// The aggregated (v2) description of one resource with its subresources.
fn aggregated_resource(def: &ResourceDef) -> Value {
    let mut r = json!({
        "resource": def.plural,
        "responseKind": {"group": def.group, "version": def.version, "kind": def.kind},
        "scope": scope(def),
        "singularResource": def.singular,
        "verbs": verbs(def),
    });
    if !def.short_names.is_empty() {
        r["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        r["categories"] = json!(def.categories);
    }
    if !def.subresources.is_empty() {
        r["subresources"] = Value::Array(
            def.subresources
                .iter()
                .map(|s| {
                    json!({
                        "subresource": s.name,
                        "responseKind": {"group": s.response.0, "version": s.response.1, "kind": s.response.2},
                        "verbs": s.verbs,
                    })
                })
                .collect(),
        );
    }
    r
}

fn aggregated_group(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .group_version(group, v)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut md = json!({"creationTimestamp": null});
    if !group.is_empty() {
        md["name"] = json!(group);
    }
    json!({"metadata": md, "versions": vs})
}

/// GET /api
pub fn api(state: &ApiState, headers: &HeaderMap) -> Response {
    let reg = state.registry();
    if let Some(v) = aggregated_version(headers) {
        let versions = reg
            .group("")
            .map(|g| g.versions.clone())
            .unwrap_or_default();
        let body = json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{v}"),
            "metadata": {},
            "items": [aggregated_group(&reg, "", &versions)],
        });
        return respond(&body, &aggregated_content_type(v));
    }
    let body = json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{
            "clientCIDR": "0.0.0.0/0",
            "serverAddress": format!("{}:{}", state.config.advertise_address, state.config.port),
        }],
    });
    respond(&body, "application/json")
}

fn group_doc(g: &kubox_core::resources::GroupDef) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{}/{v}", g.name), "version": v});
    json!({
        "name": g.name,
        "versions": g.versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": g.versions.first().map(gv).unwrap_or(Value::Null),
    })
}

/// GET /apis
pub fn apis(state: &ApiState, headers: &HeaderMap) -> Response {
    let reg = state.registry();
    let groups: Vec<_> = reg
        .groups()
        .iter()
        .filter(|g| !g.name.is_empty())
        .cloned()
        .collect();
    if let Some(v) = aggregated_version(headers) {
        let items: Vec<Value> = groups
            .iter()
            .map(|g| aggregated_group(&reg, &g.name, &g.versions))
            .collect();
        let body = json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{v}"),
            "metadata": {},
            "items": items,
        });
        return respond(&body, &aggregated_content_type(v));
    }
    let body = json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups.iter().map(group_doc).collect::<Vec<_>>(),
    });
    respond(&body, "application/json")
}

/// GET /apis/<group>
pub fn group(state: &ApiState, group: &str) -> ApiResult<Response> {
    let reg = state.registry();
    let g = reg
        .group(group)
        .filter(|g| !g.name.is_empty())
        .ok_or_else(ApiError::not_found_path)?;
    let mut body = group_doc(g);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(respond(&body, "application/json"))
}

/// GET /api/v1 or /apis/<group>/<version>
pub fn resource_list(state: &ApiState, group: &str, version: &str) -> ApiResult<Response> {
    let reg = state.registry();
    let defs = reg.group_version(group, version);
    if defs.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let mut resources = Vec::new();
    for def in defs {
        let mut r = json!({
            "name": def.plural,
            "singularName": def.singular,
            "namespaced": def.namespaced,
            "kind": def.kind,
            "verbs": verbs(def),
        });
        if !def.short_names.is_empty() {
            r["shortNames"] = json!(def.short_names);
        }
        if !def.categories.is_empty() {
            r["categories"] = json!(def.categories);
        }
        resources.push(r);
        for s in &def.subresources {
            let mut sr = json!({
                "name": format!("{}/{}", def.plural, s.name),
                "singularName": "",
                "namespaced": def.namespaced,
                "kind": s.response.2,
                "verbs": s.verbs,
            });
            if s.response.0 != def.group || s.response.1 != def.version {
                sr["group"] = json!(s.response.0);
                sr["version"] = json!(s.response.1);
            }
            resources.push(sr);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let body = json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    });
    Ok(respond(&body, "application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.insert(http::header::ACCEPT, v);
        }
        h
    }

    #[test]
    fn kubectl_accept_header_selects_aggregated_v2() {
        let h = accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        );
        assert_eq!(aggregated_version(&h), Some("v2"));
    }

    #[test]
    fn v2beta1_only_clients_get_v2beta1() {
        let h = accept(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        );
        assert_eq!(aggregated_version(&h), Some("v2beta1"));
    }

    #[test]
    fn plain_json_gets_plain_documents() {
        assert_eq!(aggregated_version(&accept("application/json")), None);
        assert_eq!(aggregated_version(&HeaderMap::new()), None);
    }

    #[test]
    fn aggregated_pods_carry_subresources_and_short_names() {
        let reg = Registry::builtin();
        let g = aggregated_group(&reg, "", &["v1".to_string()]);
        let pods = g["versions"][0]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resource"] == "pods"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(
            pods["subresources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["subresource"] == "status"))
        );
    }
}
