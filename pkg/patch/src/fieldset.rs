//! Field sets as tracked by server-side apply, and their FieldsV1 encoding.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One step of a field path. The variant order is upstream's sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathElement {
    /// `f:<name>`: a field of a map.
    Field(String),
    /// `k:{...}`: an item of a map-list; canonical JSON object with sorted keys.
    Key(String),
    /// `v:<json>`: an item of a set-list.
    Value(String),
    /// `i:<n>`: an item of a list by position.
    Index(usize),
}

impl PathElement {
    /// The FieldsV1 key for this element.
    pub(crate) fn encode(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parse a FieldsV1 key (not `.`).
    pub(crate) fn decode(s: &str) -> Option<PathElement> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                let obj = v.as_object()?;
                Some(PathElement::Key(canonical_key(
                    obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::Value(v.to_string()))
            }
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// Human form used in conflict messages: `.name`, `[k="v"]`, `[=v]`, `[0]`.
    pub(crate) fn human(&self) -> String {
        match self {
            PathElement::Field(n) => format!(".{n}"),
            PathElement::Key(k) => {
                let parsed: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = parsed
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// Canonical JSON object text with keys sorted.
pub(crate) fn canonical_key(mut fields: Vec<(String, Value)>) -> String {
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert(k, v);
    }
    Value::Object(m).to_string()
}

/// A set of field paths, as a tree: members are owned paths, children hold
/// paths below an element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    pub(crate) members: BTreeSet<PathElement>,
    pub(crate) children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Insert the path `path` as a member.
    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(oc) = other.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Drop empty child sets.
    pub(crate) fn pruned(mut self) -> FieldSet {
        let children = std::mem::take(&mut self.children);
        for (pe, c) in children {
            let c = c.pruned();
            if !c.is_empty() {
                self.children.insert(pe, c);
            }
        }
        self
    }

    /// Remove the subtree at `path` (member and children).
    pub(crate) fn remove_subtree(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove_subtree(rest);
                }
            }
        }
    }

    /// Every member path, in sorted order.
    pub(crate) fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        let mut all: BTreeSet<&PathElement> = self.members.iter().collect();
        all.extend(self.children.keys());
        for pe in all {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(pe) {
                c.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// Encode as FieldsV1 JSON.
    pub(crate) fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        let empty = self.members.is_empty() && self.children.is_empty();
        if include_self && !empty {
            out.insert(".".to_string(), Value::Object(Map::new()));
        }
        let mut all: BTreeSet<&PathElement> = self.members.iter().collect();
        all.extend(self.children.keys());
        for pe in all {
            let member = self.members.contains(pe);
            let body = match self.children.get(pe) {
                Some(c) => c.emit(member),
                None => Map::new(),
            };
            out.insert(pe.encode(), Value::Object(body));
        }
        out
    }

    /// Decode FieldsV1 JSON; unknown keys are skipped.
    pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        let Some(obj) = v.as_object() else {
            return out;
        };
        for (k, body) in obj {
            if k == "." {
                continue;
            }
            let Some(pe) = PathElement::decode(k) else {
                continue;
            };
            let inner = body.as_object();
            let has_self = inner.is_some_and(|o| o.contains_key("."));
            let has_other = inner.is_some_and(|o| o.keys().any(|k| k != "."));
            if has_self || !has_other {
                out.members.insert(pe.clone());
            }
            if has_other {
                let child = FieldSet::from_fields_v1(body);
                if !child.is_empty() {
                    out.children.insert(pe, child);
                }
            }
        }
        out
    }
}

/// Human path like `.spec.template.spec.containers[name="app"].image`.
pub(crate) fn human_path(path: &[PathElement]) -> String {
    path.iter().map(PathElement::human).collect()
}

/// How upstream prints a manager in conflict messages.
pub(crate) fn describe_manager(
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: &str,
) -> String {
    let mut s = format!("{manager:?}");
    if !subresource.is_empty() {
        s = format!("{s} with subresource {subresource:?}");
    }
    if operation == "Update" {
        s = format!("{s} using {api_version}");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> PathElement {
        PathElement::Field(n.to_string())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_that_have_children() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}},
                        "f:finalizers": {"v:\"x\"": {}}}
        });
        let set = FieldSet::from_fields_v1(&v);
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(set.contains(&[f("metadata"), f("labels"), f("app")]));
        assert!(!set.contains(&[f("metadata")]));
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn key_elements_are_canonicalised_with_sorted_keys() {
        let pe = PathElement::decode("k:{\"protocol\":\"TCP\",\"containerPort\":80}").unwrap();
        assert_eq!(pe.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(pe.human(), "[containerPort=80,protocol=\"TCP\"]");
    }

    #[test]
    fn human_paths_match_upstream_format() {
        let p = vec![
            f("spec"),
            f("containers"),
            PathElement::Key("{\"name\":\"app\"}".into()),
            f("image"),
        ];
        assert_eq!(human_path(&p), ".spec.containers[name=\"app\"].image");
    }

    #[test]
    fn set_operations_work_on_nested_paths() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        assert_eq!(a.intersection(&b), b);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        assert_eq!(b.union(&d), a);
    }
}
