//! Building `components.schemas` of one group-version document.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::types;

pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

const API_VERSION_DESC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const OBJECT_META_DESC: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_META_DESC: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// A kind whose schema a document must hold.
pub(crate) struct KindSpec<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// The openAPIV3Schema of a custom resource; `None` for a built-in kind.
    pub custom: Option<&'a Value>,
    /// Whether to add a `<Kind>List` schema too.
    pub list: bool,
}

/// The schemas of one document: name to schema, plus where each kind landed.
pub(crate) struct Schemas {
    pub schemas: Map<String, Value>,
    /// (group, version, kind) to schema name.
    pub kinds: BTreeMap<(String, String, String), String>,
}

pub(crate) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

pub(crate) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// The schema name upstream gives a custom resource: the group reversed, then version and kind
/// (`com.example.stable.v1.CronTab`).
pub(crate) fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    format!("{}.{version}.{kind}", parts.join("."))
}

/// The schemas of every built-in kind (with `<Kind>List`), every meta/v1 type the paths use and
/// all they reference, upstream's extensions applied. schemars walks the k8s-openapi type graph
/// once per process; documents copy the part they need.
struct Universe {
    schemas: Map<String, Value>,
    /// (group, version, kind) to schema name.
    kinds: HashMap<(&'static str, &'static str, &'static str), String>,
    /// Schema names every document holds (meta/v1 types).
    meta: Vec<String>,
}

fn universe() -> &'static Universe {
    static UNIVERSE: OnceLock<Universe> = OnceLock::new();
    UNIVERSE.get_or_init(|| {
        let settings = SchemaSettings::openapi3().with(|s| {
            s.transforms.clear();
            s.meta_schema = None;
        });
        let mut generator = SchemaGenerator::new(settings);
        let meta = types::add_meta(&mut generator);
        let kinds = types::add_kinds(&mut generator);
        let mut schemas = generator.take_definitions(false);
        for ((group, version, kind), name) in &kinds {
            if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) {
                mark_kind(schema, group, version, kind);
            }
            add_list(&mut schemas, group, version, kind, name);
        }
        for schema in schemas.values_mut() {
            wrap_refs(schema);
        }
        crate::extensions::apply(&mut schemas);
        Universe {
            schemas,
            kinds: kinds.into_iter().collect(),
            meta,
        }
    })
}

/// Every schema name reachable from `roots` through `$ref`s within `schemas`.
fn closure(schemas: &Map<String, Value>, roots: Vec<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = roots;
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut todo);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Builds the schemas for `specs`, every meta/v1 type the paths use, and all they reference.
pub(crate) fn build(specs: &[KindSpec<'_>]) -> Schemas {
    let all = universe();
    let mut kinds = BTreeMap::new();
    let mut roots = all.meta.clone();
    for spec in specs.iter().filter(|s| s.custom.is_none()) {
        if let Some(name) = all.kinds.get(&(spec.group, spec.version, spec.kind)) {
            kinds.insert(key(spec), name.clone());
            roots.push(name.clone());
            if spec.list {
                roots.push(format!("{name}List"));
            }
        }
    }
    let mut schemas: Map<String, Value> = closure(&all.schemas, roots)
        .into_iter()
        .filter_map(|name| {
            let schema = all.schemas.get(&name)?.clone();
            Some((name, schema))
        })
        .collect();
    for spec in specs {
        let Some(custom) = spec.custom else { continue };
        let name = custom_schema_name(spec.group, spec.version, spec.kind);
        let mut schema = match custom {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        prepare_custom(&mut schema);
        mark_kind(&mut schema, spec.group, spec.version, spec.kind);
        schemas.insert(name.clone(), Value::Object(schema));
        if spec.list {
            add_list(&mut schemas, spec.group, spec.version, spec.kind, &name);
        }
        for n in [format!("{name}List"), name.clone()] {
            if let Some(s) = schemas.get_mut(&n) {
                wrap_refs(s);
            }
        }
        kinds.insert(key(spec), name);
    }
    Schemas { schemas, kinds }
}

fn key(spec: &KindSpec<'_>) -> (String, String, String) {
    (
        spec.group.to_string(),
        spec.version.to_string(),
        spec.kind.to_string(),
    )
}

/// Tags a top-level kind like upstream: its GVK, `metadata` not required, defaulted to `{}`.
fn mark_kind(schema: &mut Map<String, Value>, group: &str, version: &str, kind: &str) {
    schema.insert(
        "x-kubernetes-group-version-kind".into(),
        Value::Array(vec![gvk(group, version, kind)]),
    );
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r != "metadata");
        if required.is_empty() {
            schema.remove("required");
        }
    }
    if let Some(Value::Object(meta)) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("metadata"))
    {
        meta.insert("default".into(), json!({}));
    }
}

/// Gives a CRD schema the apiVersion/kind/metadata properties the API server adds.
fn prepare_custom(schema: &mut Map<String, Value>) {
    schema.entry("type").or_insert_with(|| "object".into());
    let props = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = props {
        props.insert(
            "apiVersion".into(),
            json!({ "description": API_VERSION_DESC, "type": "string" }),
        );
        props.insert(
            "kind".into(),
            json!({ "description": KIND_DESC, "type": "string" }),
        );
        let mut meta = reference(types::OBJECT_META);
        if let Value::Object(m) = &mut meta {
            m.insert("description".into(), OBJECT_META_DESC.into());
        }
        props.insert("metadata".into(), meta);
    }
}

fn add_list(
    schemas: &mut Map<String, Value>,
    group: &str,
    version: &str,
    kind: &str,
    item_name: &str,
) {
    let list_kind = format!("{kind}List");
    let name = format!("{item_name}List");
    let items = reference(item_name);
    let mut meta = reference(types::LIST_META);
    if let Value::Object(m) = &mut meta {
        m.insert("description".into(), LIST_META_DESC.into());
        m.insert("default".into(), json!({}));
    }
    let list = json!({
        "description": format!("{list_kind} is a list of {kind}."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "description": API_VERSION_DESC, "type": "string" },
            "items": { "description": format!("List of {kind}."), "type": "array", "items": items },
            "kind": { "description": KIND_DESC, "type": "string" },
            "metadata": meta,
        },
        "x-kubernetes-group-version-kind": [gvk(group, version, &list_kind)],
    });
    schemas.insert(name, list);
}

/// Moves every `$ref` that has siblings (description, default) into `allOf: [{$ref}]`, as
/// upstream does: OpenAPI 3.0 ignores a `$ref`'s siblings.
pub(crate) fn wrap_refs(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.len() > 1
        && let Some(r) = map.remove("$ref")
    {
        map.insert("allOf".into(), json!([{ "$ref": r }]));
    }
    for_each_subschema(map, &mut wrap_refs);
}

/// Calls `f` on every direct subschema of `map` (properties, items, additionalProperties,
/// allOf/anyOf/oneOf, not).
pub(crate) fn for_each_subschema(map: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    for (k, v) in map.iter_mut() {
        match k.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                if let Value::Object(props) = v {
                    props.values_mut().for_each(&mut *f);
                }
            }
            "items" | "additionalProperties" | "not" => match v {
                Value::Array(items) => items.iter_mut().for_each(&mut *f),
                other => f(other),
            },
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(items) = v {
                    items.iter_mut().for_each(&mut *f);
                }
            }
            _ => {}
        }
    }
}
