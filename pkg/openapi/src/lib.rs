//! kubox-openapi: the OpenAPI v3 documents the API server serves at `/openapi/v3` and
//! `/openapi/v3/<gv-path>`, plus schema-driven checks the API server runs on writes.
//!
//! Entry points: [`OpenApi::new`] (from a [`kubox_core::resources::Registry`]),
//! [`OpenApi::index`], [`OpenApi::document`], [`OpenApi::unknown_fields`],
//! [`OpenApi::field_meta`], [`OpenApi::set_custom`] / [`OpenApi::remove_custom`].
//!
//! # What kubectl (1.27..1.33) reads
//!
//! * client-go `openapi` client: `GET /openapi/v3` → `{"paths": {"<gv-path>": {"serverRelativeURL":
//!   "/openapi/v3/<gv-path>?hash=H"}}}`; gv-path is `api/v1` or `apis/<group>/<version>`. It then
//!   fetches `serverRelativeURL` (the hash lets its disk cache treat the response as immutable, so
//!   the hash must change whenever the document does).
//! * `kubectl apply/create --validate=strict` (cli-runtime `queryParamVerifierV3`): parses the
//!   document as `spec3.OpenAPI`; for every path whose `patch` operation carries
//!   `x-kubernetes-group-version-kind: {group, version, kind}` equal to the object's GVK it
//!   checks the *operation-level* `parameters` for one named `fieldValidation` (path-level
//!   parameters are not consulted, and the first matching PATCH decides, in random map order, so
//!   every PATCH of the kind, subresources included, must list it). Missing GV document and a
//!   CRD → it checks core/v1 Namespace instead. Then validation is left to the server
//!   (`?fieldValidation=Strict`).
//! * `kubectl explain` (explain/v2 `plaintext.tmpl`): finds the GVK in `paths` at
//!   `<prefix>/<v>/[namespaces/{namespace}/]<plural>[/{name}]` under get/post/put/patch/delete
//!   (`x-kubernetes-group-version-kind` object), then the `components.schemas` entry whose
//!   `x-kubernetes-group-version-kind` list contains exactly `{group, kind, version}`. It walks
//!   fields via `properties`, `items`, object-valued `additionalProperties` and `allOf`,
//!   resolves `$ref` of the form `#/components/schemas/<name>`, prints a field's own
//!   `description` (hence upstream's `allOf: [{$ref}]` + sibling `description`), `type`,
//!   `required`, `enum` and `externalDocs`.
//! * `kubectl apply` (client-side): newer kubectl computes the strategic merge patch from the v3
//!   document: the kind's PATCH `requestBody.content` must list
//!   `application/strategic-merge-patch+json` (else JSON merge patch, as for CRDs), and the
//!   schema with the kind in `x-kubernetes-group-version-kind` supplies
//!   `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` (following `$ref`/`allOf`).
//!   Older kubectl uses `/openapi/v2` for this, falling back to compiled-in struct tags when it
//!   is unavailable.
#![forbid(unsafe_code)]

mod document;
pub mod error;
mod extensions;
mod schema;
mod types;
mod v2;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use kubox_core::resources::{ALL_VERBS, Registry, SubresourceDef};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use error::Error;

/// Bump whenever generated documents change shape, so clients' hash-keyed caches refresh.
const GENERATOR_REVISION: &str = "kubox-openapi/1";

/// Patch metadata of one field (from upstream's `x-kubernetes-*` extensions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMeta {
    pub patch_strategy: Option<String>,
    pub patch_merge_key: Option<String>,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
}

/// One resource a document describes.
#[derive(Debug, Clone)]
pub(crate) struct Res {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub subresources: Vec<SubresourceDef>,
    /// The openAPIV3Schema of a custom resource.
    pub custom: Option<Arc<Value>>,
}

impl Res {
    pub(crate) fn has(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// One built group-version document.
struct GvDoc {
    bytes: Arc<Vec<u8>>,
    schemas: Map<String, Value>,
    kinds: BTreeMap<(String, String, String), String>,
}

#[derive(Default)]
struct State {
    resources: Vec<Res>,
    cache: HashMap<(String, String), Arc<GvDoc>>,
    /// Bumped on every change of `resources`; a document built from an older snapshot is not cached.
    generation: u64,
    /// The `/openapi/v2` document and the generation it was built at.
    v2: Option<(u64, Arc<V2Doc>)>,
}

/// The Swagger 2.0 document of every served group-version (`/openapi/v2`).
#[derive(Debug)]
pub struct V2Doc {
    /// `application/json`.
    pub json: Vec<u8>,
    /// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (what kubectl asks for).
    pub protobuf: Vec<u8>,
    /// A strong ETag of the content.
    pub etag: String,
}

/// The OpenAPI v3 documents of the served resources, built lazily per group-version and cached.
/// Cheap to clone: clones share the cache.
#[derive(Clone, Default)]
pub struct OpenApi {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi").finish_non_exhaustive()
    }
}

/// `api/v1` → ("", "v1"); `apis/apps/v1` → ("apps", "v1"). A leading `/` is allowed.
pub fn split_gv_path(gv_path: &str) -> Option<(&str, &str)> {
    let p = gv_path.trim_start_matches('/');
    if let Some(v) = p.strip_prefix("api/") {
        return (!v.is_empty() && !v.contains('/')).then_some(("", v));
    }
    let rest = p.strip_prefix("apis/")?;
    let (g, v) = rest.split_once('/')?;
    (!g.is_empty() && !v.is_empty() && !v.contains('/')).then_some((g, v))
}

/// The gv-path of a group/version: `api/v1` or `apis/<group>/<version>`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl OpenApi {
    /// Describes every resource of `registry`. Custom resources without a schema yet (see
    /// [`OpenApi::set_custom`]) get one that accepts anything.
    pub fn new(registry: &Registry) -> OpenApi {
        let resources = registry
            .resources()
            .iter()
            .map(|r| Res {
                group: r.group.clone(),
                version: r.version.clone(),
                kind: r.kind.clone(),
                plural: r.plural.clone(),
                namespaced: r.namespaced,
                verbs: r.verbs.clone(),
                subresources: r.subresources.clone(),
                custom: r.custom.then(|| {
                    Arc::new(
                        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
                    )
                }),
            })
            .collect();
        OpenApi {
            state: Arc::new(Mutex::new(State {
                resources,
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=<HASH>"}, ...}}`.
    pub fn index(&self) -> Value {
        let state = self.lock();
        let mut gvs: BTreeMap<String, Sha256> = BTreeMap::new();
        for r in &state.resources {
            let hasher = gvs.entry(gv_path(&r.group, &r.version)).or_insert_with(|| {
                let mut h = Sha256::new();
                h.update(GENERATOR_REVISION.as_bytes());
                h
            });
            hash_resource(hasher, r);
        }
        let paths: Map<String, Value> = gvs
            .into_iter()
            .map(|(path, h)| {
                let hash = hex::encode_upper(h.finalize());
                let url = format!("/openapi/v3/{path}?hash={hash}");
                (path, json!({ "serverRelativeURL": url }))
            })
            .collect();
        json!({ "paths": paths })
    }

    /// The document of `api/v1` or `apis/<group>/<version>` (OpenAPI 3.0 JSON), `None` if the
    /// group-version is not served.
    pub fn document(&self, gv_path: &str) -> Option<Arc<Vec<u8>>> {
        let (group, version) = split_gv_path(gv_path)?;
        self.doc(group, version).ok().map(|d| d.bytes.clone())
    }

    fn doc(&self, group: &str, version: &str) -> Result<Arc<GvDoc>, Error> {
        let key = (group.to_string(), version.to_string());
        let (resources, generation) = {
            let state = self.lock();
            if let Some(doc) = state.cache.get(&key) {
                return Ok(doc.clone());
            }
            let resources: Vec<Res> = state
                .resources
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .cloned()
                .collect();
            (resources, state.generation)
        };
        if resources.is_empty() {
            return Err(Error::UnknownGroupVersion(gv_path(group, version)));
        }
        // Built without holding the lock: a core/v1 document takes a while.
        let doc = Arc::new(build(group, version, &resources)?);
        let mut state = self.lock();
        if state.generation == generation {
            state.cache.insert(key, doc.clone());
        }
        Ok(doc)
    }

    /// The `/openapi/v2` document, built from every group-version's v3 document and cached
    /// until the served resources change. `version` goes to `info.version`.
    pub fn v2(&self, version: &str) -> Result<Arc<V2Doc>, Error> {
        let (gvs, generation) = {
            let state = self.lock();
            if let Some((g, doc)) = &state.v2
                && *g == state.generation
            {
                return Ok(doc.clone());
            }
            let gvs: std::collections::BTreeSet<(String, String)> = state
                .resources
                .iter()
                .map(|r| (r.group.clone(), r.version.clone()))
                .collect();
            (gvs, state.generation)
        };
        let mut docs = Vec::with_capacity(gvs.len());
        for (g, v) in &gvs {
            let d = self.doc(g, v)?;
            docs.push(serde_json::from_slice::<Value>(&d.bytes)?);
        }
        let doc = v2::swagger(version, &docs);
        let json = serde_json::to_vec(&doc)?;
        let protobuf = v2::protobuf(&doc);
        let etag = format!("\"{}\"", hex::encode_upper(Sha256::digest(&json)));
        let built = Arc::new(V2Doc {
            json,
            protobuf,
            etag,
        });
        let mut state = self.lock();
        if state.generation == generation {
            state.v2 = Some((generation, built.clone()));
        }
        Ok(built)
    }

    /// Dotted paths (`.spec.replicass`, `.spec.template.spec.containers[0].imagee`) of members of
    /// `obj` the kind's schema does not know, for `fieldValidation=Strict|Warn`. Map values
    /// (labels, annotations, data) and free-form parts (RawExtension,
    /// `x-kubernetes-preserve-unknown-fields`, embedded resources) are not descended. Empty for
    /// a kind without a schema.
    pub fn unknown_fields(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        obj: &Value,
    ) -> Vec<String> {
        let Ok(doc) = self.doc(group, version) else {
            return Vec::new();
        };
        let Some(root) = kind_schema(&doc, group, version, kind) else {
            return Vec::new();
        };
        validate::unknown_fields(&doc.schemas, &root, obj)
    }

    /// Patch metadata of the field at `path` (property names from the object root, list items
    /// transparent: `["spec", "template", "spec", "containers", "ports"]`). `None` if the kind
    /// or the field is unknown; a known field without extensions gives an empty [`FieldMeta`].
    pub fn field_meta(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        path: &[&str],
    ) -> Option<FieldMeta> {
        let doc = self.doc(group, version).ok()?;
        let root = kind_schema(&doc, group, version, kind)?;
        validate::field_meta(&doc.schemas, &root, path)
    }

    /// Adds or replaces a custom resource with its openAPIV3Schema (one CRD version).
    pub fn set_custom(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        schema: Value,
    ) {
        let mut state = self.lock();
        let res = Res {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
            subresources: Vec::new(),
            custom: Some(Arc::new(schema)),
        };
        match state.resources.iter_mut().find(|r| {
            r.custom.is_some() && r.group == group && r.version == version && r.kind == kind
        }) {
            Some(existing) => *existing = res,
            None => state.resources.push(res),
        }
        invalidate(&mut state, group, version);
    }

    /// Removes a custom resource added by [`OpenApi::set_custom`] (or from the registry).
    pub fn remove_custom(&self, group: &str, version: &str, kind: &str) {
        let mut state = self.lock();
        state.resources.retain(|r| {
            !(r.custom.is_some() && r.group == group && r.version == version && r.kind == kind)
        });
        invalidate(&mut state, group, version);
    }
}

fn invalidate(state: &mut State, group: &str, version: &str) {
    state.generation += 1;
    state
        .cache
        .remove(&(group.to_string(), version.to_string()));
}

fn kind_schema(doc: &GvDoc, group: &str, version: &str, kind: &str) -> Option<Value> {
    let name = doc
        .kinds
        .get(&(group.to_string(), version.to_string(), kind.to_string()))?;
    Some(schema::reference(name))
}

fn hash_resource(h: &mut Sha256, r: &Res) {
    let mut feed = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    feed(&r.kind);
    feed(&r.plural);
    feed(if r.namespaced { "ns" } else { "cluster" });
    feed(&r.verbs.join(","));
    for s in &r.subresources {
        feed(&s.name);
        feed(&format!("{:?}{:?}", s.response, s.verbs));
    }
    if let Some(c) = &r.custom {
        feed(&c.to_string());
    }
}

fn build(group: &str, version: &str, resources: &[Res]) -> Result<GvDoc, Error> {
    let mut specs: Vec<schema::KindSpec<'_>> = resources
        .iter()
        .map(|r| schema::KindSpec {
            group: &r.group,
            version: &r.version,
            kind: &r.kind,
            custom: r.custom.as_deref(),
            list: r.has("list"),
        })
        .collect();
    for r in resources {
        for s in &r.subresources {
            let (g, v, k) = &s.response;
            if !specs
                .iter()
                .any(|x| x.group == g && x.version == v && x.kind == k)
            {
                specs.push(schema::KindSpec {
                    group: g,
                    version: v,
                    kind: k,
                    custom: None,
                    list: false,
                });
            }
        }
    }
    let built = schema::build(&specs);
    let paths = document::paths(group, version, resources, &built);
    let doc = json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": { "schemas": built.schemas },
    });
    let bytes = serde_json::to_vec(&doc)?;
    let Value::Object(mut doc) = doc else {
        return Err(Error::UnknownGroupVersion(gv_path(group, version)));
    };
    let schemas = match doc
        .remove("components")
        .and_then(|mut c| c.get_mut("schemas").map(Value::take))
    {
        Some(Value::Object(s)) => s,
        _ => Map::new(),
    };
    Ok(GvDoc {
        bytes: Arc::new(bytes),
        schemas,
        kinds: built.kinds,
    })
}

#[cfg(test)]
mod tests;
