//! Reading stored objects without building a `serde_json::Value`: the read fast path of
//! LIST, GET and WATCH.
//!
//! Stored values are compact JSON written by serde_json (`storage::encode`) in the storage
//! version, without `metadata.resourceVersion`. Decoding one (`storage::decode`) and writing
//! it out again gives the same bytes with `"resourceVersion":"<rev>"` appended to `metadata`
//! (serde_json keeps key order, and a new key goes last), unless a conversion applies. So when
//! the stored `apiVersion` is the one served, [`Stored::write_with_revision`] splices that
//! member into the stored bytes instead; [`sparse`] copies out only the few fields selectors
//! look at. The scanner is lenient: anything it does not expect makes the caller take the
//! full decode, whose answer is the reference.

use serde_json::{Map, Value};
use std::io::Write;

/// A cursor over JSON bytes. Every method returns None on input it does not expect.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scanner { b, i: 0 }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace and consumes `c`.
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (*self.b.get(self.i)? == c).then(|| self.i += 1)
    }

    /// Skips whitespace and tells whether the next byte is `c` (without consuming it).
    fn at(&mut self, c: u8) -> bool {
        self.ws();
        self.b.get(self.i) == Some(&c)
    }

    /// A string, the cursor on its opening quote; returns its span including the quotes.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        (*self.b.get(self.i)? == b'"').then_some(())?;
        self.i += 1;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i));
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// Skips one value; returns its span.
    fn value(&mut self) -> Option<(usize, usize)> {
        self.ws();
        let start = self.i;
        match *self.b.get(self.i)? {
            b'"' => return self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some((start, self.i));
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while let Some(c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.i += 1;
                }
            }
        }
        (self.i > start).then_some((start, self.i))
    }

    /// Walks the members of the object the cursor is on, calling `member` with each key's
    /// span; `member` consumes the value (returning false stops the walk there). Returns the
    /// offset of the closing brace when the walk went to the end.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, (usize, usize)) -> Option<bool>,
    ) -> Option<Option<usize>> {
        self.eat(b'{')?;
        if self.at(b'}') {
            return Some(Some(self.i));
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            if !member(self, key)? {
                return Some(None);
            }
            if self.at(b'}') {
                return Some(Some(self.i));
            }
            self.eat(b',')?;
        }
    }

    /// Whether the key at `span` is `name` (escaped keys are decoded to compare).
    fn key_is(&self, span: (usize, usize), name: &str) -> bool {
        let Some(raw) = self.b.get(span.0..span.1) else {
            return false;
        };
        let inner = &raw[1..raw.len() - 1];
        if !inner.contains(&b'\\') {
            return inner == name.as_bytes();
        }
        serde_json::from_slice::<String>(raw).is_ok_and(|k| k == name)
    }
}

/// A stored object that needs no conversion to be served: where its metadata ends.
pub struct Stored<'a> {
    bytes: &'a [u8],
    /// Offset of the closing brace of `metadata`.
    metadata_end: usize,
    metadata_empty: bool,
    /// The span of `metadata.labels`.
    labels: Option<(usize, usize)>,
}

impl<'a> Stored<'a> {
    /// The stored `bytes` when they can be served as they are (plus the resourceVersion) for
    /// `api_version`: an object whose `apiVersion` is that string and whose `metadata` is an
    /// object without `resourceVersion`. None means the full decode must run.
    pub fn served_as(bytes: &'a [u8], api_version: &str) -> Option<Stored<'a>> {
        let mut s = Scanner::new(bytes);
        let (mut version_ok, mut metadata, mut labels) = (false, None, None);
        s.object(|s, key| {
            if s.key_is(key, "apiVersion") {
                let (a, b) = s.value()?;
                let v = s.b.get(a + 1..b.checked_sub(1)?)?;
                if *s.b.get(a)? != b'"' || v != api_version.as_bytes() {
                    return None;
                }
                version_ok = true;
            } else if s.key_is(key, "metadata") {
                let end = s.object(|s, key| {
                    if s.key_is(key, "resourceVersion") {
                        return None;
                    }
                    let span = s.value()?;
                    if s.key_is(key, "labels") {
                        labels = Some(span);
                    }
                    Some(true)
                })??;
                let empty =
                    s.b.get(..end)?
                        .iter()
                        .rev()
                        .find(|c| !c.is_ascii_whitespace());
                metadata = Some((end, empty == Some(&b'{')));
                s.i = end + 1;
            } else {
                s.value()?;
            }
            Some(!(version_ok && metadata.is_some()))
        })?;
        let (metadata_end, metadata_empty) = metadata.filter(|_| version_ok)?;
        Some(Stored {
            bytes,
            metadata_end,
            metadata_empty,
            labels,
        })
    }

    /// The JSON of `metadata.labels`, if present.
    pub fn labels(&self) -> Option<&'a [u8]> {
        self.labels.and_then(|(a, b)| self.bytes.get(a..b))
    }

    /// Appends the object as served at `revision` to `out`.
    pub fn write_with_revision(&self, out: &mut Vec<u8>, revision: i64) {
        let (head, tail) = self.bytes.split_at(self.metadata_end);
        out.reserve(self.bytes.len() + 40);
        out.extend_from_slice(head);
        if !self.metadata_empty {
            out.push(b',');
        }
        // Writing into a Vec cannot fail.
        let _ = write!(out, "\"resourceVersion\":\"{revision}\"");
        out.extend_from_slice(tail);
    }
}

/// Calls `f` with each member of the JSON object `bytes` whose value is a string (nothing
/// when `bytes` is not an object): how `metadata.labels` is read for label selectors.
pub fn string_members(bytes: &[u8], mut f: impl FnMut(&str, &str)) {
    fn text(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
        let inner = raw.get(1..raw.len().checked_sub(1)?)?;
        if inner.contains(&b'\\') {
            serde_json::from_slice::<String>(raw).ok().map(Into::into)
        } else {
            std::str::from_utf8(inner).ok().map(Into::into)
        }
    }
    let mut s = Scanner::new(bytes);
    let _ = s.object(|s, (ka, kb)| {
        let (va, vb) = s.value()?;
        if s.b.get(va) == Some(&b'"')
            && let (Some(k), Some(v)) = (text(s.b.get(ka..kb)?), text(s.b.get(va..vb)?))
        {
            f(&k, &v);
        }
        Some(true)
    });
}

/// The span of the value at `path` (object keys from the top) in `bytes`, None if absent or
/// if a step is not an object.
fn find<'a>(bytes: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
    let mut s = Scanner::new(bytes);
    let mut found = None;
    for (depth, part) in path.iter().enumerate() {
        found = None;
        let last = depth + 1 == path.len();
        s.object(|s, key| {
            if !s.key_is(key, part) {
                s.value()?;
                return Some(true);
            }
            if last {
                found = Some(s.value()?);
            } else {
                s.ws();
                found = Some((s.i, s.i));
            }
            Some(false)
        })?;
        found?;
    }
    let (a, b) = found?;
    bytes.get(a..b)
}

/// An object holding only the values at `paths` of the stored `bytes` (a path whose value is
/// absent is left out), what selectors need to be checked as on the whole object. None if
/// `bytes` is not a JSON object or a value does not parse.
pub fn sparse(bytes: &[u8], paths: &[Vec<&str>]) -> Option<Value> {
    let mut out = Value::Object(Map::new());
    Scanner::new(bytes).eat(b'{')?;
    for path in paths {
        let Some(raw) = find(bytes, path) else {
            continue;
        };
        let v: Value = serde_json::from_slice(raw).ok()?;
        insert(&mut out, path, v);
    }
    Some(out)
}

/// Sets `path` of `obj` to `v`, creating objects on the way; a step already holding a
/// non-object came from a shorter path whose whole value is there, so it is kept.
fn insert(obj: &mut Value, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        let Value::Object(m) = cur else {
            return;
        };
        cur = m
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(m) = cur {
        m.insert(last.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn served(v: &Value, av: &str, rev: i64) -> Option<Value> {
        let bytes = serde_json::to_vec(v).ok()?;
        let s = Stored::served_as(&bytes, av)?;
        let mut out = Vec::new();
        s.write_with_revision(&mut out, rev);
        serde_json::from_slice(&out).ok()
    }

    #[test]
    fn splices_the_revision_at_the_end_of_metadata() {
        let v = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"}{\"]"}},"data":{"k":"v"}});
        let bytes = serde_json::to_vec(&v).expect("json");
        let s = Stored::served_as(&bytes, "v1").expect("fast");
        let mut out = Vec::new();
        s.write_with_revision(&mut out, 42);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"}{\"]"},"resourceVersion":"42"},"data":{"k":"v"}}"#
        );
        let empty = json!({"metadata":{},"apiVersion":"v1"});
        assert_eq!(
            served(&empty, "v1", 7),
            Some(json!({"metadata":{"resourceVersion":"7"},"apiVersion":"v1"}))
        );
    }

    #[test]
    fn refuses_what_needs_the_full_decode() {
        let other = json!({"apiVersion":"autoscaling/v2","metadata":{"name":"a"}});
        assert!(served(&other, "autoscaling/v1", 1).is_none());
        let with_rv = json!({"apiVersion":"v1","metadata":{"name":"a","resourceVersion":"3"}});
        assert!(served(&with_rv, "v1", 1).is_none());
        let no_meta = json!({"apiVersion":"v1","kind":"X"});
        assert!(served(&no_meta, "v1", 1).is_none());
        let bad_meta = json!({"apiVersion":"v1","metadata":"x"});
        assert!(served(&bad_meta, "v1", 1).is_none());
        let no_version = json!({"metadata":{}});
        assert!(served(&no_version, "v1", 1).is_none());
        for junk in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"apiVersion\":\"v1\",\"metadata\":{",
            b"null",
        ] {
            assert!(Stored::served_as(junk, "v1").is_none());
        }
        // An escaped key is still recognised.
        let escaped = br#"{"apiVersion":"v1","metadata":{"resource\u0056ersion":"1"}}"#;
        assert!(Stored::served_as(escaped, "v1").is_none());
    }

    #[test]
    fn labels_are_read_as_string_members() {
        let v = json!({"apiVersion":"v1","metadata":{"name":"a","labels":{"a":"1","b\"q":"x\\y","n":3,"z":null}}});
        let bytes = serde_json::to_vec(&v).expect("json");
        let s = Stored::served_as(&bytes, "v1").expect("fast");
        let mut seen = Vec::new();
        string_members(s.labels().expect("labels"), |k, v| {
            seen.push((k.to_string(), v.to_string()))
        });
        assert_eq!(
            seen,
            [("a".into(), "1".into()), ("b\"q".into(), "x\\y".into())]
        );
        let none = serde_json::to_vec(&json!({"apiVersion":"v1","metadata":{}})).expect("json");
        assert!(
            Stored::served_as(&none, "v1")
                .expect("fast")
                .labels()
                .is_none()
        );
        string_members(b"null", |_, _| panic!("not an object"));
    }

    #[test]
    fn sparse_copies_only_the_asked_paths() {
        let v = json!({"metadata":{"name":"p","labels":{"a":"b"},"managedFields":[{"x":1}]},"spec":{"nodeName":"n","containers":[{}]},"source":{"host":"h"},"status":null});
        let bytes = serde_json::to_vec(&v).expect("json");
        let paths = vec![
            vec!["metadata", "labels"],
            vec!["spec", "nodeName"],
            vec!["spec", "missing"],
            vec!["source", "host"],
            vec!["source"],
            vec!["status", "phase"],
        ];
        assert_eq!(
            sparse(&bytes, &paths),
            Some(
                json!({"metadata":{"labels":{"a":"b"}},"spec":{"nodeName":"n"},"source":{"host":"h"}})
            )
        );
        assert_eq!(sparse(b"[1]", &paths), None);
    }
}
