//! Understanding a request: which resource and verb a path names (upstream's RequestInfo),
//! its query parameters, and decoding its body.

use crate::error::{ApiError, ApiResult};
use serde_json::Value;
use std::collections::HashMap;

/// Bodies larger than this are refused with 413 (upstream's limit for JSON/YAML bodies).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What a resource path names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// What follows the subresource (`stats/summary` of `nodes/n1/proxy/stats/summary`).
    pub subpath: String,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths.
/// Returns None for paths that do not name a resource (discovery documents, for example).
pub fn parse_resource_path(
    method: &http::Method,
    path: &str,
    query: &Query,
) -> Option<RequestInfo> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let mut rest = rest.to_vec();
    let mut is_watch_path = false;
    if rest.first() == Some(&"watch") {
        is_watch_path = true;
        rest.remove(0);
    }
    let mut info = RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        info.namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(..2);
        }
    }
    match rest.as_slice() {
        [resource] => info.resource = resource.to_string(),
        [resource, name] => {
            info.resource = resource.to_string();
            info.name = Some(name.to_string());
        }
        [resource, name, sub, subpath @ ..] => {
            info.resource = resource.to_string();
            info.name = Some(name.to_string());
            info.subresource = Some(sub.to_string());
            info.subpath = subpath.join("/");
        }
        _ => return None,
    }
    if info.resource == "namespaces" && info.name.is_some() {
        // /api/v1/namespaces/<name>: the namespace object itself is cluster-scoped.
        info.namespace = None;
    }
    info.verb = match *method {
        http::Method::GET | http::Method::HEAD => {
            if is_watch_path || (info.name.is_none() && query.bool("watch")) {
                "watch".into()
            } else if info.name.is_some() {
                if query.bool("watch") {
                    "watch".into()
                } else {
                    "get".into()
                }
            } else {
                "list".into()
            }
        }
        http::Method::POST => "create".into(),
        http::Method::PUT => "update".into(),
        http::Method::PATCH => "patch".into(),
        http::Method::DELETE => {
            if info.name.is_some() {
                "delete".into()
            } else {
                "deletecollection".into()
            }
        }
        _ => String::new(),
    };
    Some(info)
}

/// Decoded query parameters (first value wins, as upstream's decoder does for scalars).
#[derive(Debug, Clone, Default)]
pub struct Query {
    map: HashMap<String, String>,
    /// Every pair in order, repeated keys included (`command` of exec).
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        let pairs = raw.map(kubox_core::net::parse_query).unwrap_or_default();
        for (k, v) in &pairs {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Query { map, pairs }
    }
    /// The query again as a string (every pair, in order, percent-encoded).
    pub fn encoded(&self) -> String {
        use kubox_core::net::percent_encode;
        self.pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
    /// Every value of a repeated parameter, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn bool(&self, key: &str) -> bool {
        matches!(
            self.map.get(key).map(String::as_str),
            Some("true" | "1" | "True")
        )
    }
    pub fn i64(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }
    /// `dryRun=All` (the only value upstream accepts).
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {v:?}; supported values: \"All\""
            ))),
        }
    }
}

/// The media type of a Content-Type header, without parameters, lowercased.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML body into one object. Other media types get 415.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large());
    }
    let mt = media_type(content_type);
    match mt.as_str() {
        "application/json"
        | ""
        | "*/*"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => decode_json(body),
        "application/yaml"
        | "application/x-yaml"
        | "text/yaml"
        | "application/apply-patch+yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => decode_protobuf(body),
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// A built-in object in Kubernetes' protobuf encoding (client-go's default since 1.31).
fn decode_protobuf(body: &[u8]) -> ApiResult<Value> {
    kubox_protobuf::decode(body).map_err(|e| match e {
        kubox_protobuf::Error::UnknownKind { .. } => ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - {e}; send it as application/json"),
        ),
        kubox_protobuf::Error::Malformed(m) => ApiError::bad_request(format!(
            "the object provided is unrecognized (couldn't decode protobuf: {m})"
        )),
    })
}

pub fn decode_json(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (couldn't decode JSON: {e})"
        ))
    })
}

/// YAML is a superset of JSON; a YAML body holds exactly one document.
pub fn decode_yaml(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn p(method: Method, path: &str, q: &str) -> Option<RequestInfo> {
        parse_resource_path(&method, path, &Query::parse(Some(q)))
    }

    #[test]
    fn namespaced_paths_give_namespace_resource_and_name() {
        let i = p(Method::GET, "/api/v1/namespaces/default/pods/web", "").expect("info");
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_deref(),
                i.resource.as_str(),
                i.name.as_deref()
            ),
            ("get", Some("default"), "pods", Some("web"))
        );
        let i = p(
            Method::PUT,
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            "",
        )
        .expect("info");
        assert_eq!(
            (i.verb.as_str(), i.group.as_str(), i.subresource.as_deref()),
            ("update", "apps", Some("scale"))
        );
    }

    #[test]
    fn namespace_objects_and_their_subresources_are_cluster_scoped() {
        let i = p(Method::GET, "/api/v1/namespaces/kube-system", "").expect("info");
        assert_eq!(
            (
                i.resource.as_str(),
                i.name.as_deref(),
                i.namespace.as_deref()
            ),
            ("namespaces", Some("kube-system"), None)
        );
        let i = p(Method::PUT, "/api/v1/namespaces/x/finalize", "").expect("info");
        assert_eq!(
            (
                i.resource.as_str(),
                i.name.as_deref(),
                i.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let i = p(Method::GET, "/api/v1/namespaces", "").expect("info");
        assert_eq!(i.verb, "list");
    }

    #[test]
    fn watch_is_a_query_flag_or_a_legacy_path_prefix() {
        assert_eq!(
            p(Method::GET, "/api/v1/pods", "watch=true")
                .expect("info")
                .verb,
            "watch"
        );
        assert_eq!(
            p(Method::GET, "/api/v1/watch/namespaces/a/pods", "")
                .expect("info")
                .verb,
            "watch"
        );
        assert_eq!(
            p(Method::DELETE, "/api/v1/namespaces/a/pods", "")
                .expect("info")
                .verb,
            "deletecollection"
        );
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.i64("limit").expect("int"), Some(5));
        assert!(Query::parse(Some("limit=x")).i64("limit").is_err());
    }

    #[test]
    fn bodies_decode_from_json_yaml_and_protobuf() {
        assert!(decode_body(Some("application/json"), b"{\"a\":1}").is_ok());
        assert_eq!(
            decode_body(Some("application/yaml"), b"a: 1\n").expect("yaml")["a"],
            1
        );
        assert_eq!(
            decode_body(Some("application/vnd.kubernetes.protobuf"), b"x")
                .map_err(|e| e.code)
                .err(),
            Some(400)
        );
        // k8s\0 + Unknown{typeMeta{v1, ConfigMap}, raw{metadata{name: c}}}
        let cm = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x05\x0a\x03\x0a\x01c";
        let v = decode_body(Some("application/vnd.kubernetes.protobuf"), cm).expect("protobuf");
        assert_eq!(v["metadata"]["name"], "c");
        assert_eq!(
            decode_body(Some("application/cbor"), b"x")
                .map_err(|e| e.code)
                .err(),
            Some(415)
        );
        assert_eq!(
            decode_body(None, b"{bad").map_err(|e| e.code).err(),
            Some(400)
        );
        assert_eq!(
            decode_body(None, &vec![b' '; MAX_BODY_BYTES + 1])
                .map_err(|e| e.code)
                .err(),
            Some(413)
        );
    }
}
