//! LIST with label/field selectors, paging (limit/continue) and resourceVersion semantics.

use super::{Ctx, json_bytes_response, json_response};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Negotiated;
use crate::{rawjson, storage};
use axum::response::Response;
use http::StatusCode;
use kubox_core::resources::ResourceDef;
use kubox_core::selectors::{FieldSelector, LabelSelector};
use kubox_store::KeyValue;
use serde_json::{Value, json};

/// Selectors of a list or watch request, checked against the resource's field labels.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""))?;
        fields.check_supported(crate::fieldlabels::supported(&ctx.def))?;
        Ok(Filter { labels, fields })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// A [`Filter`] applied to stored values of one resource, reading only the fields the
/// selectors look at when the stored version is the one served, and the JSON of the values
/// it keeps written without decoding them then (see `rawjson`); otherwise both go through
/// the full decode, as before.
pub struct StoredFilter<'a> {
    filter: &'a Filter,
    def: &'a ResourceDef,
    api_version: String,
    /// The label keys the label selector reads.
    label_keys: Vec<&'a str>,
    /// The object paths the field selector reads.
    field_paths: Vec<Vec<&'a str>>,
}

impl<'a> StoredFilter<'a> {
    pub fn new(filter: &'a Filter, def: &'a ResourceDef) -> Self {
        let label_keys = filter
            .labels
            .requirements
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        let field_paths = filter
            .fields
            .terms
            .iter()
            .map(|(field, _, _)| field.split('.').collect())
            .collect();
        StoredFilter {
            filter,
            def,
            api_version: def.api_version(),
            label_keys,
            field_paths,
        }
    }

    /// Whether the stored `kv` matches the selectors.
    pub fn matches(&self, kv: &KeyValue) -> ApiResult<bool> {
        if self.filter.is_empty() {
            return Ok(true);
        }
        match rawjson::Stored::served_as(&kv.value, &self.api_version) {
            Some(stored) => self.matches_served(&stored, kv),
            None => Ok(self.filter.matches(&storage::decode(self.def, kv)?)),
        }
    }

    /// [`Self::matches`] of a value that needs no conversion, reading only the labels the
    /// selector names and the selected fields.
    fn matches_served(&self, stored: &rawjson::Stored, kv: &KeyValue) -> ApiResult<bool> {
        if !self.filter.labels.is_empty() {
            let mut labels = std::collections::BTreeMap::new();
            if let Some(raw) = stored.labels() {
                rawjson::string_members(raw, |k, v| {
                    if self.label_keys.contains(&k) {
                        labels.insert(k.to_string(), v.to_string());
                    }
                });
            }
            if !self.filter.labels.matches(&labels) {
                return Ok(false);
            }
        }
        if self.filter.fields.is_empty() {
            return Ok(true);
        }
        match rawjson::sparse(&kv.value, &self.field_paths) {
            Some(fields) => Ok(self.filter.fields.matches_object(&fields)),
            None => Ok(self.filter.matches(&storage::decode(self.def, kv)?)),
        }
    }

    /// Reads the stored `kv` for a plain JSON answer: (how it is written, whether it
    /// matches). Nothing is copied until [`Read::write`].
    pub fn read<'k>(&self, kv: &'k KeyValue) -> ApiResult<(Read<'k>, bool)> {
        match rawjson::Stored::served_as(&kv.value, &self.api_version) {
            Some(stored) => {
                let matches = self.filter.is_empty() || self.matches_served(&stored, kv)?;
                Ok((Read::Served(stored, kv.mod_revision), matches))
            }
            None => {
                let obj = storage::decode(self.def, kv)?;
                let matches = self.filter.matches(&obj);
                Ok((Read::Decoded(obj), matches))
            }
        }
    }
}

/// A stored value read by [`StoredFilter::read`]: served from its bytes at a revision, or
/// decoded (converted) in full.
pub enum Read<'k> {
    Served(rawjson::Stored<'k>, i64),
    Decoded(Value),
}

impl Read<'_> {
    /// Appends the object's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> ApiResult<()> {
        match self {
            Read::Served(stored, revision) => {
                stored.write_with_revision(out, *revision);
                Ok(())
            }
            Read::Decoded(obj) => storage::write_value(out, obj),
        }
    }
}

/// One page of a list: the matching objects, the revision read at, and the continue state.
pub struct Page<T = Value> {
    pub items: Vec<T>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// Reads a page of objects following upstream's list semantics.
pub async fn read_page(ctx: &Ctx, filter: &Filter) -> ApiResult<Page> {
    read_page_with(ctx, filter, |kv| {
        let obj = storage::decode(&ctx.def, kv)?;
        Ok(filter.matches(&obj).then_some(obj))
    })
    .await
}

/// [`read_page`] with the items made by `keep` from the stored values: None leaves one out
/// (it does not match `filter`).
pub async fn read_page_with<T>(
    ctx: &Ctx,
    filter: &Filter,
    mut keep: impl FnMut(&KeyValue) -> ApiResult<Option<T>>,
) -> ApiResult<Page<T>> {
    let prefix = storage::prefix(&ctx.def, ctx.namespace());
    let limit = ctx
        .query
        .i64("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let rv_param = ctx.query.get("resourceVersion");
    let rv_match = ctx.query.get("resourceVersionMatch");
    let (mut revision, mut start_after) = (None, None);
    if let Some(token) = ctx.query.get("continue") {
        if rv_param.is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = storage::decode_continue(token, &prefix)?;
        if rv < ctx.state.store.compacted_revision() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        revision = Some(rv);
        start_after = Some(start);
    } else if let Some(rv) = rv_param {
        let n: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
        match rv_match {
            Some("Exact") => revision = Some(n),
            Some("NotOlderThan") | None => {
                if rv_match.is_none() && limit.is_some() && n != 0 {
                    revision = Some(n);
                } else if n > ctx.state.store.current_revision() {
                    return Err(kubox_store::Error::FutureRevision {
                        requested: n,
                        current: ctx.state.store.current_revision(),
                    }
                    .into());
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {other:?}; supported: Exact, NotOlderThan"
                )));
            }
        }
    } else if rv_match.is_some() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    // Without a limit the whole range is one read: every chunk's query would scan the rest
    // of the range again (and count it).
    let chunk = limit.map(|l| l.max(50));
    let mut items = Vec::new();
    let mut read_rev = revision;
    loop {
        let res = ctx
            .state
            .store
            .list(&prefix, start_after.as_deref(), chunk, read_rev)
            .await?;
        read_rev = Some(res.revision);
        let n = res.items.len();
        for (i, kv) in res.items.iter().enumerate() {
            if let Some(item) = keep(kv)? {
                items.push(item);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let more = i + 1 < n || res.more;
                let token = more.then(|| storage::encode_continue(res.revision, &kv.key));
                let remaining =
                    (more && filter.is_empty()).then(|| (n - i - 1) as i64 + res.remaining);
                return Ok(Page {
                    items,
                    revision: res.revision,
                    continue_token: token,
                    remaining,
                });
            }
        }
        if !res.more || n == 0 {
            return Ok(Page {
                items,
                revision: res.revision,
                continue_token: None,
                remaining: None,
            });
        }
        start_after = res.items.last().map(|kv| kv.key.clone());
    }
}

pub async fn list(ctx: &Ctx) -> ApiResult<Response> {
    let filter = Filter::from_ctx(ctx)?;
    if ctx.accept == Negotiated::Json {
        return list_json(ctx, &filter).await;
    }
    let page = read_page(ctx, &filter).await?;
    let metadata = list_metadata(&page);
    let body = crate::negotiate::render_list(ctx, page.items, metadata)?;
    Ok(json_response(StatusCode::OK, &body))
}

/// The ListMeta of a page.
fn list_metadata<T>(page: &Page<T>) -> Value {
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(t) = &page.continue_token {
        metadata["continue"] = json!(t);
    }
    if let Some(r) = page.remaining.filter(|r| *r > 0) {
        metadata["remainingItemCount"] = json!(r);
    }
    metadata
}

/// A plain JSON list, written item by item into the body (the same bytes as
/// `negotiate::render_list` serialized, without a Value of the whole list).
async fn list_json(ctx: &Ctx, filter: &Filter) -> ApiResult<Response> {
    let stored = StoredFilter::new(filter, &ctx.def);
    let mut items = Vec::new();
    let page = read_page_with(ctx, filter, |kv| {
        let (read, matches) = stored.read(kv)?;
        if !matches {
            return Ok(None);
        }
        if !items.is_empty() {
            items.push(b',');
        }
        read.write(&mut items)?;
        Ok(Some(()))
    })
    .await?;
    let head = json!({
        "kind": ctx.def.list_kind(),
        "apiVersion": ctx.def.api_version(),
        "metadata": list_metadata(&page),
    });
    let mut body = Vec::with_capacity(items.len() + 256);
    storage::write_value(&mut body, &head)?;
    // Reopen the object for its last member.
    body.pop();
    body.extend_from_slice(b",\"items\":[");
    body.extend_from_slice(&items);
    body.extend_from_slice(b"]}");
    Ok(json_bytes_response(StatusCode::OK, body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::authn::User;
    use crate::request::{Query, RequestInfo};
    use crate::state::{ApiConfig, ApiState};
    use kubox_core::net::percent_encode;
    use std::sync::Arc;

    /// An API state over a fresh SQLite store in `dir`.
    pub(crate) fn state(dir: &std::path::Path) -> Arc<ApiState> {
        let store = kubox_store::SqliteBackend::open(&dir.join("db.sqlite"), Default::default())
            .expect("store");
        ApiState::new(
            store,
            ApiConfig {
                service_cidr: ([10, 43, 0, 0].into(), 16),
                kubernetes_service_ip: [10, 43, 0, 1].into(),
                cluster_dns: [10, 43, 0, 10].into(),
                node_port_range: (30000, 32767),
                cluster_domain: "cluster.local".into(),
                advertise_address: [127, 0, 0, 1].into(),
                port: 6443,
                server_ca_pem: String::new(),
                default_not_ready_toleration_seconds: 300,
                default_unreachable_toleration_seconds: 300,
                static_tokens: Default::default(),
                extend_token_expiration: true,
                token_signer: None,
                join: None,
                kubelet_client: None,
            },
        )
    }

    /// A request context for `verb` on group/version/resource with the raw `query`.
    pub(crate) fn ctx(
        state: &Arc<ApiState>,
        verb: &str,
        gvr: (&str, &str, &str),
        namespace: Option<&str>,
        name: Option<&str>,
        query: &str,
    ) -> Ctx {
        let def = state
            .registry()
            .lookup(gvr.0, gvr.1, gvr.2)
            .cloned()
            .expect("resource");
        Ctx {
            state: state.clone(),
            info: RequestInfo {
                verb: verb.into(),
                group: gvr.0.into(),
                version: gvr.1.into(),
                namespace: namespace.map(String::from),
                resource: gvr.2.into(),
                name: name.map(String::from),
                subresource: None,
                subpath: String::new(),
            },
            def,
            query: Query::parse(Some(query)),
            headers: Default::default(),
            accept: Negotiated::Json,
            user: User::default(),
            warnings: Default::default(),
            upgrade: None,
        }
    }

    pub(crate) async fn put(state: &ApiState, storage: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = match ns {
            Some(ns) => format!("{}{storage}/{ns}/{name}", storage::PREFIX),
            None => format!("{}{storage}/{name}", storage::PREFIX),
        };
        let bytes = storage::encode(&obj).expect("encode");
        state.store.create(&key, bytes).await.expect("create");
    }

    /// Stored objects with what tends to trip a byte-level reader: escapes, unicode, numbers,
    /// empty and nested metadata, managedFields, a stray selfLink.
    pub(crate) async fn fill(state: &ApiState) {
        for i in 0..7 {
            let ns = if i % 2 == 0 { "default" } else { "other" };
            put(state, "core/configmaps", json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {
                    "name": format!("cm-{i}"), "namespace": ns, "uid": format!("u{i}"),
                    "labels": {"app": if i < 4 { "web" } else { "db" }, "tier": i.to_string()},
                    "annotations": {"q": "\"quoted\" \\ back\tslash \u{1} é 日本 }{][,:"},
                    "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {".": {}, "f:k": {}}}}],
                    "selfLink": "/x",
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "data": {"k": format!("v{i}"), "json": "{\"a\":[1,2,{\"b\":\"}\"}]}"},
                "binaryData": null,
                "immutable": i == 3,
            }))
            .await;
        }
        for (i, (node, phase)) in [("n1", "Running"), ("n2", "Pending"), ("n1", "Succeeded")]
            .iter()
            .enumerate()
        {
            put(state, "core/pods", json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": 0.5, "memory": 1e9}}}], "hostNetwork": i == 1, "priority": -3},
                "status": {"phase": phase, "podIP": format!("10.42.0.{i}")},
            }))
            .await;
        }
        put(state, "autoscaling/horizontalpodautoscalers", json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"maxReplicas": 3, "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
        }))
        .await;
        put(state, "core/events", json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "message": "hi", "reason": "Started", "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "p0"}, "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
        }))
        .await;
        put(state, "core/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "status": {"phase": "Active"}})).await;
    }

    async fn body(resp: Response) -> String {
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(b.to_vec()).expect("utf8")
    }

    /// The list as the full decode renders it (the reference).
    async fn reference(ctx: &Ctx) -> ApiResult<String> {
        let filter = Filter::from_ctx(ctx)?;
        let page = read_page(ctx, &filter).await?;
        let metadata = list_metadata(&page);
        let v = crate::negotiate::render_list(ctx, page.items, metadata)?;
        Ok(serde_json::to_string(&v).expect("json"))
    }

    #[tokio::test]
    async fn plain_json_lists_are_the_bytes_of_the_full_decode() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = state(dir.path());
        fill(&state).await;
        let rv = state.store.current_revision();
        let sel = |s: &str| percent_encode(s);
        type Case<'a> = ((&'a str, &'a str, &'a str), Option<&'a str>, String);
        let cases: Vec<Case> = vec![
            (("", "v1", "configmaps"), None, String::new()),
            (("", "v1", "configmaps"), Some("default"), String::new()),
            (
                ("", "v1", "configmaps"),
                None,
                format!("labelSelector={}", sel("app=web")),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!("labelSelector={}", sel("app in (db),tier!=5")),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!("labelSelector={}", sel("!app")),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!("fieldSelector={}", sel("metadata.name=cm-3")),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!(
                    "fieldSelector={}&labelSelector=app%3Dweb",
                    sel("metadata.namespace!=other")
                ),
            ),
            (("", "v1", "configmaps"), None, "limit=2".into()),
            (
                ("", "v1", "configmaps"),
                None,
                "limit=3&labelSelector=app%3Ddb".into(),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!("resourceVersion={rv}&resourceVersionMatch=Exact"),
            ),
            (
                ("", "v1", "configmaps"),
                None,
                format!(
                    "resourceVersion={}&resourceVersionMatch=NotOlderThan",
                    rv - 3
                ),
            ),
            (("", "v1", "configmaps"), None, "resourceVersion=0".into()),
            (
                ("", "v1", "configmaps"),
                None,
                format!("resourceVersion={}&limit=2", rv - 5),
            ),
            (
                ("", "v1", "pods"),
                None,
                format!("fieldSelector={}", sel("spec.nodeName=n1")),
            ),
            (
                ("", "v1", "pods"),
                None,
                format!(
                    "fieldSelector={}",
                    sel("status.phase!=Running,spec.hostNetwork=false")
                ),
            ),
            (
                ("", "v1", "pods"),
                None,
                format!("fieldSelector={}", sel("spec.nodeName=")),
            ),
            (
                ("autoscaling", "v1", "horizontalpodautoscalers"),
                None,
                "labelSelector=app%3Dweb".into(),
            ),
            (
                ("autoscaling", "v2", "horizontalpodautoscalers"),
                None,
                String::new(),
            ),
            (
                ("events.k8s.io", "v1", "events"),
                None,
                format!("fieldSelector={}", sel("reason=Started")),
            ),
            (
                ("", "v1", "events"),
                None,
                format!("fieldSelector={}", sel("source=kubelet")),
            ),
            (
                ("", "v1", "namespaces"),
                None,
                format!("fieldSelector={}", sel("status.phase=Active")),
            ),
            (("", "v1", "secrets"), None, String::new()),
        ];
        for (gvr, ns, query) in cases {
            let mut query = query;
            // Follow continue tokens to the end.
            for page in 0.. {
                let c = ctx(&state, "list", gvr, ns, None, &query);
                let want = reference(&c).await.expect("reference list");
                let got = body(list(&c).await.expect("list")).await;
                assert_eq!(got, want, "{gvr:?} {ns:?} {query} page {page}");
                let v: Value = serde_json::from_str(&got).expect("json");
                let Some(token) = v["metadata"]["continue"].as_str() else {
                    break;
                };
                let base = query
                    .split("&continue=")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let base = base
                    .split('&')
                    .filter(|p| !p.starts_with("resourceVersion"))
                    .collect::<Vec<_>>()
                    .join("&");
                query = format!("{base}&continue={token}");
            }
        }
        // Errors stay errors.
        for query in [
            "resourceVersionMatch=Exact",
            "labelSelector=a%20in",
            "fieldSelector=spec.x%3D1",
            "continue=zz",
        ] {
            let c = ctx(&state, "list", ("", "v1", "configmaps"), None, None, query);
            let want = reference(&c).await.err().map(|e| e.status());
            assert!(want.is_some(), "{query}");
            assert_eq!(list(&c).await.err().map(|e| e.status()), want, "{query}");
        }
    }
}
