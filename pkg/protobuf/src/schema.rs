//! The wire schema of the built-in types, parsed once from the generated `fields.txt`.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// A message: index into [`Schema::messages`].
    Msg(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    Repeated,
    /// `map<string, kind>`, on the wire a repeated entry message {1: key, 2: value}.
    Map,
}

#[derive(Debug)]
pub struct FieldDef {
    pub json: &'static str,
    /// An embedded Go struct: its fields are merged into the parent's JSON object.
    pub inline: bool,
    pub kind: Kind,
    pub shape: Shape,
}

#[derive(Debug)]
pub struct Message {
    /// Full name, e.g. `api.core.v1.ConfigMap`.
    pub name: &'static str,
    /// A Go slice type (e.g. `ExtraValue`) whose JSON form is its only field.
    pub unwrap: bool,
    pub fields: HashMap<u32, FieldDef>,
}

#[derive(Debug)]
pub struct Schema {
    pub messages: Vec<Message>,
    by_name: HashMap<String, usize>,
}

const FIELDS: &str = include_str!("fields.txt");

impl Schema {
    /// The schema of the built-in types (parsed on first use).
    pub fn get() -> Result<&'static Schema, String> {
        static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
        SCHEMA
            .get_or_init(|| Schema::parse(FIELDS))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A message by full name, matched without regard to case (`CSIDriver` is `CsiDriver`
    /// in the generated names).
    pub fn lookup(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    fn parse(text: &'static str) -> Result<Schema, String> {
        let mut messages: Vec<Message> = Vec::new();
        let mut pending: Vec<(usize, u32, &'static str)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |what: &str| format!("fields.txt line {}: {what}: {line:?}", n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(head) = line.strip_prefix('@') {
                let mut parts = head.split(' ');
                let name = parts.next().ok_or_else(|| bad("no name"))?;
                let unwrap = parts.next() == Some("unwrap");
                messages.push(Message {
                    name,
                    unwrap,
                    fields: HashMap::new(),
                });
                continue;
            }
            let idx = messages
                .len()
                .checked_sub(1)
                .ok_or_else(|| bad("field before message"))?;
            let mut parts = line.split(' ');
            let (Some(tag), Some(json), Some(kind)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected TAG NAME KIND"));
            };
            let tag: u32 = tag.parse().map_err(|_| bad("bad tag"))?;
            let (shape, kind) = match kind.as_bytes().first() {
                Some(b'*') => (Shape::Repeated, &kind[1..]),
                Some(b'M') => (Shape::Map, &kind[1..]),
                _ => (Shape::Single, kind),
            };
            let kind = match kind {
                "s" => Kind::Str,
                "y" => Kind::Bytes,
                "b" => Kind::Bool,
                "i" => Kind::I32,
                "l" => Kind::I64,
                "d" => Kind::F64,
                "m" => {
                    let ty = parts
                        .next()
                        .ok_or_else(|| bad("message field without a type"))?;
                    pending.push((idx, tag, ty));
                    Kind::Msg(usize::MAX)
                }
                _ => return Err(bad("unknown kind")),
            };
            let def = FieldDef {
                json,
                inline: json == "-",
                kind,
                shape,
            };
            messages[idx].fields.insert(tag, def);
        }
        let by_name: HashMap<String, usize> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.to_ascii_lowercase(), i))
            .collect();
        for (idx, tag, ty) in pending {
            let target = *by_name.get(&ty.to_ascii_lowercase()).ok_or_else(|| {
                format!(
                    "fields.txt: {} refers to unknown message {ty}",
                    messages[idx].name
                )
            })?;
            if let Some(f) = messages[idx].fields.get_mut(&tag) {
                f.kind = Kind::Msg(target);
            }
        }
        Ok(Schema { messages, by_name })
    }
}
