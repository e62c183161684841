//! `/openapi/v2`: one Swagger 2.0 document of every served group-version, derived from the v3
//! documents, as JSON and in the gnostic protobuf encoding
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! kubectl up to 1.28 fetches it (protobuf only) before `create -f`, `apply` and `explain`:
//! `explain` and client-side validation parse `definitions` with kube-openapi's `proto`
//! package (a `$ref` must be `#/definitions/<name>` of an existing definition and carry no
//! `type` or `properties`; an array has exactly one `items` schema; the kind is found by the
//! `x-kubernetes-group-version-kind` vendor extension, read as YAML from `Any.yaml`), and
//! `apply` reads `x-kubernetes-patch-strategy`/`-merge-key` from it.

use serde_json::{Map, Value, json};

const V3_REF: &str = "#/components/schemas/";
const V2_REF: &str = "#/definitions/";

/// Merges per-group-version v3 documents into one Swagger 2.0 document.
pub(crate) fn swagger(version: &str, docs: &[Value]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for doc in docs {
        if let Some(schemas) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, s) in schemas {
                definitions.insert(name.clone(), schema(s));
            }
        }
        if let Some(ps) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in ps {
                paths.insert(path.clone(), path_item(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": paths,
        "definitions": definitions,
    })
}

/// A v3 schema as a v2 schema: `#/definitions/` references, a lone `allOf: [{$ref}]` folded
/// into a plain reference, no v3-only keywords.
fn schema(s: &Value) -> Value {
    let Some(obj) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    if let Some([only]) = obj
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        && only.get("$ref").is_some()
        && let Value::Object(inner) = schema(only)
    {
        out.extend(inner);
    }
    for (k, v) in obj {
        let v = match k.as_str() {
            "allOf" if out.contains_key("$ref") => continue,
            "nullable" | "anyOf" | "oneOf" | "not" => continue,
            "$ref" => match v.as_str() {
                Some(r) => Value::String(r.replace(V3_REF, V2_REF)),
                None => continue,
            },
            "properties" => Value::Object(
                v.as_object()
                    .map(|m| m.iter().map(|(n, p)| (n.clone(), schema(p))).collect())
                    .unwrap_or_default(),
            ),
            "items" | "additionalProperties" if v.is_object() => schema(v),
            "allOf" => Value::Array(
                v.as_array()
                    .map(|a| a.iter().map(schema).collect())
                    .unwrap_or_default(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(obj) = item.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in obj {
        match k.as_str() {
            "get" | "put" | "post" | "delete" | "patch" | "options" | "head" => {
                out.insert(k.clone(), operation(v));
            }
            "parameters" => {
                out.insert(k.clone(), parameters(v));
            }
            _ if k.starts_with("x-") => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn parameters(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let mut out = Map::new();
                        for key in ["name", "in", "description", "required"] {
                            if let Some(x) = p.get(key) {
                                out.insert(key.into(), x.clone());
                            }
                        }
                        let ty = p
                            .pointer("/schema/type")
                            .cloned()
                            .unwrap_or(json!("string"));
                        out.insert("type".into(), ty);
                        if let Some(u) = p.pointer("/schema/uniqueItems") {
                            out.insert("uniqueItems".into(), u.clone());
                        }
                        Value::Object(out)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    let Some(obj) = op.as_object() else {
        return Value::Object(out);
    };
    let mut params = obj.get("parameters").map(parameters).unwrap_or(json!([]));
    if let Some(body) = obj.get("requestBody") {
        let content = body.get("content").and_then(Value::as_object);
        let consumes: Vec<Value> = content
            .map(|c| c.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        out.insert("consumes".into(), Value::Array(consumes));
        let body_schema = content
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"))
            .map(schema)
            .unwrap_or(json!({"type": "object"}));
        if let Value::Array(ps) = &mut params {
            ps.insert(
                0,
                json!({"name": "body", "in": "body", "required": body.get("required").cloned().unwrap_or(json!(true)), "schema": body_schema}),
            );
        }
    }
    for (k, v) in obj {
        match k.as_str() {
            "tags" | "description" | "operationId" => {
                out.insert(k.clone(), v.clone());
            }
            "responses" => {
                let mut rs = Map::new();
                for (code, r) in v.as_object().into_iter().flatten() {
                    let mut resp = Map::new();
                    resp.insert(
                        "description".into(),
                        r.get("description").cloned().unwrap_or(json!("")),
                    );
                    if let Some(s) = r
                        .get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.values().next())
                        .and_then(|m| m.get("schema"))
                    {
                        resp.insert("schema".into(), schema(s));
                    }
                    rs.insert(code.clone(), Value::Object(resp));
                }
                out.insert("responses".into(), Value::Object(rs));
                let produces = v
                    .pointer("/200/content")
                    .and_then(Value::as_object)
                    .map(|c| c.keys().map(|k| json!(k)).collect::<Vec<_>>())
                    .unwrap_or_default();
                if !produces.is_empty() {
                    out.insert("produces".into(), Value::Array(produces));
                }
            }
            _ if k.starts_with("x-") => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    if params.as_array().is_some_and(|p| !p.is_empty()) {
        out.insert("parameters".into(), params);
    }
    Value::Object(out)
}

/// Protobuf writer for the gnostic `openapi.v2` messages (proto3: defaults are not written).
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        self.varint((u64::from(tag) << 3) | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, tag: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(tag, s.as_bytes());
        }
    }
    fn strings(&mut self, tag: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(tag, s.as_bytes());
            }
        }
    }
    fn boolean(&mut self, tag: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.varint(u64::from(tag) << 3);
            self.varint(1);
        }
    }
    fn int(&mut self, tag: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
            self.varint(u64::from(tag) << 3);
            self.varint(n as u64);
        }
    }
    fn double(&mut self, tag: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64).filter(|n| *n != 0.0) {
            self.varint((u64::from(tag) << 3) | 1);
            self.0.extend_from_slice(&n.to_bits().to_le_bytes());
        }
    }
    fn message(&mut self, tag: u32, f: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::default();
        f(&mut inner);
        self.bytes(tag, &inner.0);
    }
    /// `Any{yaml: <JSON text>}` (JSON is YAML).
    fn any(&mut self, tag: u32, v: &Value) {
        self.message(tag, |a| a.bytes(2, v.to_string().as_bytes()));
    }
    /// `repeated NamedAny vendor_extension` from the `x-` members of `obj`.
    fn extensions(&mut self, tag: u32, obj: &Map<String, Value>) {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            self.message(tag, |n| {
                n.bytes(1, k.as_bytes());
                n.any(2, v);
            });
        }
    }
}

/// The gnostic protobuf encoding of a document made by [`swagger`].
pub(crate) fn protobuf(doc: &Value) -> Vec<u8> {
    let mut pb = Pb::default();
    pb.string(1, doc.get("swagger"));
    if let Some(info) = doc.get("info") {
        pb.message(2, |i| {
            i.string(1, info.get("title"));
            i.string(2, info.get("version"));
        });
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        pb.message(8, |p| {
            for (name, item) in paths {
                p.message(2, |n| {
                    n.bytes(1, name.as_bytes());
                    n.message(2, |pi| encode_path_item(pi, item));
                });
            }
        });
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        pb.message(9, |d| {
            for (name, s) in defs {
                d.message(1, |n| {
                    n.bytes(1, name.as_bytes());
                    n.message(2, |sm| encode_schema(sm, s));
                });
            }
        });
    }
    pb.0
}

fn encode_path_item(pb: &mut Pb, item: &Value) {
    let Some(obj) = item.as_object() else { return };
    for (tag, op) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(o) = obj.get(op) {
            pb.message(tag, |m| encode_operation(m, o));
        }
    }
    for p in obj
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        pb.message(9, |m| encode_parameter(m, p));
    }
    pb.extensions(10, obj);
}

fn encode_operation(pb: &mut Pb, op: &Value) {
    let Some(obj) = op.as_object() else { return };
    pb.strings(1, obj.get("tags"));
    pb.string(3, obj.get("description"));
    pb.string(5, obj.get("operationId"));
    pb.strings(6, obj.get("produces"));
    pb.strings(7, obj.get("consumes"));
    for p in obj
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        pb.message(8, |m| encode_parameter(m, p));
    }
    if let Some(rs) = obj.get("responses").and_then(Value::as_object) {
        pb.message(9, |m| {
            for (code, r) in rs {
                m.message(1, |n| {
                    n.bytes(1, code.as_bytes());
                    // ResponseValue{response: Response{description, schema: SchemaItem{schema}}}
                    n.message(2, |rv| {
                        rv.message(1, |resp| {
                            resp.string(1, r.get("description"));
                            if let Some(s) = r.get("schema") {
                                resp.message(2, |si| si.message(1, |sm| encode_schema(sm, s)));
                            }
                        })
                    });
                });
            }
        });
    }
    pb.extensions(13, obj);
}

/// `ParametersItem{parameter: Parameter{body_parameter | non_body_parameter}}`.
fn encode_parameter(pb: &mut Pb, p: &Value) {
    pb.message(1, |param| {
        if p.get("in").and_then(Value::as_str) == Some("body") {
            param.message(1, |b| {
                b.string(1, p.get("description"));
                b.string(2, p.get("name"));
                b.string(3, p.get("in"));
                b.boolean(4, p.get("required"));
                if let Some(s) = p.get("schema") {
                    b.message(5, |sm| encode_schema(sm, s));
                }
            });
        } else {
            // Query and path sub-schemas share their first fields' numbers.
            let (oneof, type_tag, unique_tag) = match p.get("in").and_then(Value::as_str) {
                Some("path") => (4, 5, 19),
                _ => (3, 6, 20),
            };
            param.message(2, |nb| {
                nb.message(oneof, |q| {
                    q.boolean(1, p.get("required"));
                    q.string(2, p.get("in"));
                    q.string(3, p.get("description"));
                    q.string(4, p.get("name"));
                    q.string(type_tag, p.get("type"));
                    q.boolean(unique_tag, p.get("uniqueItems"));
                })
            });
        }
    });
}

fn encode_schema(pb: &mut Pb, s: &Value) {
    let Some(obj) = s.as_object() else { return };
    pb.string(1, obj.get("$ref"));
    pb.string(2, obj.get("format"));
    pb.string(3, obj.get("title"));
    pb.string(4, obj.get("description"));
    if let Some(d) = obj.get("default") {
        pb.any(5, d);
    }
    pb.double(6, obj.get("multipleOf"));
    pb.double(7, obj.get("maximum"));
    pb.boolean(8, obj.get("exclusiveMaximum"));
    pb.double(9, obj.get("minimum"));
    pb.boolean(10, obj.get("exclusiveMinimum"));
    pb.int(11, obj.get("maxLength"));
    pb.int(12, obj.get("minLength"));
    pb.string(13, obj.get("pattern"));
    pb.int(14, obj.get("maxItems"));
    pb.int(15, obj.get("minItems"));
    pb.boolean(16, obj.get("uniqueItems"));
    pb.int(17, obj.get("maxProperties"));
    pb.int(18, obj.get("minProperties"));
    pb.strings(19, obj.get("required"));
    for e in obj
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        pb.any(20, e);
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => pb.message(21, |a| a.boolean(2, Some(&Value::Bool(*b)))),
        Some(ap @ Value::Object(_)) => pb.message(21, |a| a.message(1, |sm| encode_schema(sm, ap))),
        _ => {}
    }
    match obj.get("type") {
        Some(Value::String(t)) => pb.message(22, |ti| ti.bytes(1, t.as_bytes())),
        Some(ts @ Value::Array(_)) => pb.message(22, |ti| ti.strings(1, Some(ts))),
        _ => {}
    }
    if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
        pb.message(23, |ii| ii.message(1, |sm| encode_schema(sm, items)));
    }
    for a in obj
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        pb.message(24, |sm| encode_schema(sm, a));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        pb.message(25, |p| {
            for (name, ps) in props {
                p.message(1, |n| {
                    n.bytes(1, name.as_bytes());
                    n.message(2, |sm| encode_schema(sm, ps));
                });
            }
        });
    }
    pb.boolean(27, obj.get("readOnly"));
    if let Some(e) = obj.get("example") {
        pb.any(30, e);
    }
    pb.extensions(31, obj);
}
