//! Decodes Kubernetes protobuf request bodies into the JSON form of the same object.
//!
//! Go clients built on client-go 1.31 and later (kubectl 1.31+, helm, controllers) send the
//! built-in types as `application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\0` followed
//! by a `runtime.Unknown` envelope carrying `apiVersion`, `kind` and the object's protobuf
//! bytes. The rest of the API server works on JSON, so the body is turned into exactly the
//! JSON a Go client would have sent for the same struct. The wire schema of every built-in
//! message (field numbers, JSON names, kinds) is generated into `fields.txt` by
//! `gen/gen.py`; the types whose JSON form is not a plain object (Time, Quantity,
//! IntOrString, RawExtension, ...) are handled here by name.
//!
//! Go's marshaller writes every non-pointer field, also when it holds its zero value. The
//! decoder drops empty strings (Go's `omitempty` would, and a pointer to "" is not used by the
//! API), keeps zero numbers and `false` (a `*int32` set to 0, like `replicas: 0`, matters) and
//! keeps empty messages (`emptyDir: {}` matters); empty lists and maps never reach the wire.

mod schema;
mod wire;

use base64::Engine as _;
use schema::{Kind, Schema, Shape};
use serde_json::{Map, Value};
use wire::{Field, Reader};

/// The magic prefix of a Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Deepest nesting accepted; JSON schemas in CRDs are the deepest real objects.
const MAX_DEPTH: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a well-formed protobuf message.
    #[error("{0}")]
    Malformed(String),
    /// The envelope names a kind this decoder has no schema for (custom resources are never
    /// protobuf-encoded).
    #[error("no protobuf schema for kind {kind:?} in {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
}

impl Error {
    fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
}

/// Decodes a whole `k8s\0`-prefixed body into a JSON object with `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let raw = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        Error::malformed("the body does not start with the protobuf magic \"k8s\\0\"")
    })?;
    let env = Envelope::parse(raw)?;
    if !env.content_encoding.is_empty() {
        return Err(Error::malformed(format!(
            "unsupported contentEncoding {:?}",
            env.content_encoding
        )));
    }
    let schema = Schema::get().map_err(Error::Malformed)?;
    let msg =
        message_for(schema, &env.api_version, &env.kind).ok_or_else(|| Error::UnknownKind {
            api_version: env.api_version.clone(),
            kind: env.kind.clone(),
        })?;
    let decoded = decode_message(schema, msg, env.raw, 0)?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(env.api_version));
    out.insert("kind".into(), Value::String(env.kind));
    if let Value::Object(fields) = decoded {
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// `runtime.Unknown`: {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
/// 4: contentType}.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let mut env = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(buf);
        while let Some((tag, field)) = r.next_field()? {
            match (tag, field) {
                (1, Field::Bytes(tm)) => {
                    let mut t = Reader::new(tm);
                    while let Some((tag, field)) = t.next_field()? {
                        match (tag, field) {
                            (1, Field::Bytes(b)) => env.api_version = utf8(b)?,
                            (2, Field::Bytes(b)) => env.kind = utf8(b)?,
                            _ => {}
                        }
                    }
                }
                (2, Field::Bytes(b)) => env.raw = b,
                (3, Field::Bytes(b)) => env.content_encoding = utf8(b)?,
                _ => {}
            }
        }
        if env.kind.is_empty() {
            return Err(Error::malformed("the protobuf envelope names no kind"));
        }
        Ok(env)
    }
}

/// The proto package of an API group (`apps` -> `api.apps`).
fn package_of(group: &str) -> String {
    match group {
        "" => "api.core".into(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".into(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".into(),
        "internal.apiserver.k8s.io" => "api.apiserverinternal".into(),
        "rbac.authorization.k8s.io" => "api.rbac".into(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    }
}

fn message_for(schema: &Schema, api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    schema
        .lookup(&format!("{}.{version}.{kind}", package_of(group)))
        // Options and Status kinds are meta/v1 types registered in every group version.
        .or_else(|| schema.lookup(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

fn utf8(b: &[u8]) -> Result<String, Error> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::malformed("a string field is not valid UTF-8"))
}

fn decode_message(schema: &Schema, idx: usize, buf: &[u8], depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::malformed("the object is nested too deeply"));
    }
    let msg = &schema.messages[idx];
    if let Some(v) = special(schema, msg.name, buf, depth)? {
        return Ok(v);
    }
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while let Some((tag, field)) = r.next_field()? {
        let Some(def) = msg.fields.get(&tag) else {
            continue; // unknown fields are skipped, as Go's unmarshaller does
        };
        match def.shape {
            Shape::Single => {
                let v = scalar_or_message(schema, def.kind, field, depth)?;
                if def.inline {
                    if let Value::Object(m) = v {
                        out.extend(m);
                    }
                } else if !matches!(&v, Value::String(s) if s.is_empty()) {
                    out.insert(def.json.to_string(), v);
                }
            }
            Shape::Repeated => {
                let list = out
                    .entry(def.json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else { continue };
                match (def.kind, field) {
                    // packed repeated scalars
                    (Kind::I32 | Kind::I64 | Kind::Bool, Field::Bytes(b)) => {
                        let mut p = Reader::new(b);
                        while !p.is_empty() {
                            list.push(varint_value(def.kind, p.varint()?));
                        }
                    }
                    (kind, field) => list.push(scalar_or_message(schema, kind, field, depth)?),
                }
            }
            Shape::Map => {
                let Field::Bytes(entry) = field else {
                    return Err(Error::malformed(format!(
                        "map field {} is not length-delimited",
                        def.json
                    )));
                };
                let (key, value) = map_entry(schema, def.kind, entry, depth)?;
                let map = out
                    .entry(def.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    if msg.unwrap {
        return Ok(out
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Array(Vec::new())));
    }
    Ok(Value::Object(out))
}

fn map_entry(
    schema: &Schema,
    kind: Kind,
    buf: &[u8],
    depth: usize,
) -> Result<(String, Value), Error> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(buf);
    while let Some((tag, field)) = r.next_field()? {
        match (tag, field) {
            (1, Field::Bytes(b)) => key = utf8(b)?,
            (2, field) => value = Some(scalar_or_message(schema, kind, field, depth)?),
            _ => {}
        }
    }
    let value = value.unwrap_or_else(|| zero(kind));
    Ok((key, value))
}

/// The value of a map entry whose value is absent on the wire.
fn zero(kind: Kind) -> Value {
    match kind {
        Kind::Str | Kind::Bytes => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::I32 | Kind::I64 | Kind::F64 => Value::from(0),
        Kind::Msg(_) => Value::Object(Map::new()),
    }
}

fn varint_value(kind: Kind, v: u64) -> Value {
    match kind {
        Kind::Bool => Value::Bool(v != 0),
        // int32 is sign-extended to 64 bits on the wire
        Kind::I32 => Value::from(v as i64 as i32),
        _ => Value::from(v as i64),
    }
}

fn scalar_or_message(
    schema: &Schema,
    kind: Kind,
    field: Field<'_>,
    depth: usize,
) -> Result<Value, Error> {
    Ok(match (kind, field) {
        (Kind::Str, Field::Bytes(b)) => Value::String(utf8(b)?),
        (Kind::Bytes, Field::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Bool | Kind::I32 | Kind::I64, Field::Varint(v)) => varint_value(kind, v),
        (Kind::F64, Field::Fixed64(v)) => serde_json::Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .ok_or_else(|| Error::malformed("a number is not finite"))?,
        (Kind::Msg(idx), Field::Bytes(b)) => decode_message(schema, idx, b, depth + 1)?,
        _ => {
            return Err(Error::malformed(
                "a field's wire type does not match its type",
            ));
        }
    })
}

/// The fields of a small well-known message, by number.
fn fields_of(buf: &[u8]) -> Result<Vec<(u32, Field<'_>)>, Error> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field()? {
        out.push(f);
    }
    Ok(out)
}

fn int_field(fields: &[(u32, Field<'_>)], tag: u32) -> i64 {
    fields
        .iter()
        .rev()
        .find_map(|(t, f)| match f {
            Field::Varint(v) if *t == tag => Some(*v as i64),
            _ => None,
        })
        .unwrap_or(0)
}

fn bytes_field<'a>(fields: &[(u32, Field<'a>)], tag: u32) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(t, f)| match f {
        Field::Bytes(b) if *t == tag => Some(*b),
        _ => None,
    })
}

/// Raw JSON bytes (RawExtension, FieldsV1, apiextensions JSON) as a value.
fn raw_json(raw: Option<&[u8]>) -> Result<Value, Error> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| Error::malformed(format!("embedded raw object is not JSON: {e}"))),
    }
}

/// Messages whose JSON form is not an object of their fields.
fn special(schema: &Schema, name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, Error> {
    const META: &str = "apimachinery.pkg.apis.meta.v1.";
    const EXT: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.";
    let Some(short) = name
        .strip_prefix(META)
        .or_else(|| name.strip_prefix(EXT))
        .or_else(|| {
            matches!(
                name,
                "apimachinery.pkg.util.intstr.IntOrString"
                    | "apimachinery.pkg.api.resource.Quantity"
                    | "apimachinery.pkg.runtime.RawExtension"
            )
            .then(|| name.rsplit('.').next().unwrap_or(name))
        })
    else {
        return Ok(None);
    };
    let fields = fields_of(buf)?;
    let schema_field = |tag: u32| -> Result<Option<Value>, Error> {
        match (
            bytes_field(&fields, tag),
            schema.lookup(&format!("{EXT}JSONSchemaProps")),
        ) {
            (Some(b), Some(idx)) => Ok(Some(decode_message(schema, idx, b, depth + 1)?)),
            _ => Ok(None),
        }
    };
    let micro = short == "MicroTime";
    Ok(Some(match short.to_ascii_lowercase().as_str() {
        "time" | "microtime" => {
            let (secs, nanos) = (int_field(&fields, 1), int_field(&fields, 2));
            if secs == 0 && nanos == 0 {
                Value::Null
            } else {
                Value::String(format_time(secs, nanos, micro)?)
            }
        }
        "duration" => Value::String(kubox_core::meta::go_duration(int_field(&fields, 1))),
        "intorstring" => {
            if int_field(&fields, 1) == 1 {
                Value::String(
                    bytes_field(&fields, 3)
                        .map(utf8)
                        .transpose()?
                        .unwrap_or_default(),
                )
            } else {
                Value::from(int_field(&fields, 2) as i32)
            }
        }
        "quantity" => Value::String(
            bytes_field(&fields, 1)
                .map(utf8)
                .transpose()?
                .unwrap_or_default(),
        ),
        "rawextension" | "fieldsv1" | "json" => raw_json(bytes_field(&fields, 1))?,
        "jsonschemapropsorbool" => match schema_field(2)? {
            Some(s) => s,
            None => Value::Bool(int_field(&fields, 1) != 0),
        },
        "jsonschemapropsorarray" => {
            let items: Vec<Value> = match schema.lookup(&format!("{EXT}JSONSchemaProps")) {
                Some(idx) => fields
                    .iter()
                    .filter_map(|(t, f)| match f {
                        Field::Bytes(b) if *t == 2 => {
                            Some(decode_message(schema, idx, b, depth + 1))
                        }
                        _ => None,
                    })
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            if items.is_empty() {
                schema_field(1)?.unwrap_or(Value::Null)
            } else {
                Value::Array(items)
            }
        }
        "jsonschemapropsorstringarray" => {
            let items: Vec<Value> = fields
                .iter()
                .filter_map(|(t, f)| match f {
                    Field::Bytes(b) if *t == 2 => Some(utf8(b).map(Value::String)),
                    _ => None,
                })
                .collect::<Result<_, _>>()?;
            if items.is_empty() {
                schema_field(1)?.unwrap_or(Value::Null)
            } else {
                Value::Array(items)
            }
        }
        _ => return Ok(None),
    }))
}

/// RFC 3339 in UTC, seconds precision (`metav1.Time`) or microseconds (`metav1.MicroTime`).
fn format_time(secs: i64, nanos: i64, micro: bool) -> Result<String, Error> {
    let ts = jiff::Timestamp::from_second(secs)
        .map_err(|e| Error::malformed(format!("time out of range: {e}")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(if micro {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    })
}

#[cfg(test)]
mod tests;
