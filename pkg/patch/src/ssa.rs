//! Structured value walks used by server-side apply: field sets, comparison,
//! merge and pruning of `serde_json::Value` objects guided by a [`PatchSchema`].

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::fieldset::{FieldSet, PathElement, canonical_key};
use crate::schema::{ListKind, PatchSchema, list_kind};

/// Added, modified and removed paths between two objects.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub(crate) added: FieldSet,
    pub(crate) modified: FieldSet,
    pub(crate) removed: FieldSet,
}

impl Comparison {
    pub(crate) fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Fields whose (always present) struct values upstream never records as added.
const STRUCT_FIELDS: &[&str] = &["metadata", "spec", "status", "template"];

pub(crate) struct Walker<'a> {
    pub(crate) schema: &'a dyn PatchSchema,
}

/// Key values of a map-list item; `protocol` defaults to `TCP` as upstream.
fn item_key(keys: &[String], item: &Value) -> Option<String> {
    let obj = item.as_object()?;
    let mut fields = Vec::new();
    for k in keys {
        match obj.get(k) {
            Some(v) => fields.push((k.clone(), v.clone())),
            None if k == "protocol" => fields.push((k.clone(), Value::String("TCP".into()))),
            None => {}
        }
    }
    if fields.is_empty() {
        None
    } else {
        Some(canonical_key(fields))
    }
}

fn item_pe(kind: &ListKind, item: &Value) -> Option<PathElement> {
    match kind {
        ListKind::Atomic => None,
        ListKind::Set => Some(PathElement::Value(item.to_string())),
        ListKind::Map(keys) => item_key(keys, item).map(PathElement::Key),
    }
}

/// Does `item` match the path element `pe` of its list?
fn item_matches(pe: &PathElement, item: &Value) -> bool {
    match pe {
        PathElement::Value(s) => &item.to_string() == s,
        PathElement::Key(k) => {
            let names: Vec<String> = serde_json::from_str::<Value>(k)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
                .unwrap_or_default();
            item_key(&names, item).as_deref() == Some(k.as_str())
        }
        PathElement::Field(_) | PathElement::Index(_) => false,
    }
}

fn get_elem_mut<'v>(v: &'v mut Value, pe: &PathElement) -> Option<&'v mut Value> {
    match (v, pe) {
        (Value::Object(m), PathElement::Field(n)) => m.get_mut(n),
        (Value::Array(a), PathElement::Index(i)) => a.get_mut(*i),
        (Value::Array(a), pe) => a.iter_mut().find(|i| item_matches(pe, i)),
        _ => None,
    }
}

fn remove_elem(v: &mut Value, pe: &PathElement) {
    match (v, pe) {
        (Value::Object(m), PathElement::Field(n)) => {
            m.shift_remove(n);
        }
        (Value::Array(a), PathElement::Index(i)) if *i < a.len() => {
            a.remove(*i);
        }
        (Value::Array(a), pe) => a.retain(|i| !item_matches(pe, i)),
        _ => {}
    }
}

impl Walker<'_> {
    fn sp(spath: &[String]) -> Vec<&str> {
        spath.iter().map(String::as_str).collect()
    }

    fn atomic_map(&self, spath: &[String]) -> bool {
        self.schema.is_atomic_map(&Self::sp(spath))
    }

    /// The list kind, downgraded to atomic when some item cannot be keyed.
    fn kind_for(&self, spath: &[String], lists: &[&[Value]]) -> ListKind {
        let kind = list_kind(self.schema, &Self::sp(spath));
        if let ListKind::Map(_) = kind {
            let all_keyed = lists
                .iter()
                .all(|l| l.iter().all(|i| item_pe(&kind, i).is_some()));
            if !all_keyed {
                return ListKind::Atomic;
            }
        }
        kind
    }

    /// The set of fields an applied configuration specifies.
    pub(crate) fn to_field_set(&self, v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        if let Value::Object(m) = v {
            self.fs_map(m, &mut Vec::new(), &mut Vec::new(), &mut out);
        }
        out
    }

    fn fs_map(
        &self,
        m: &Map<String, Value>,
        spath: &mut Vec<String>,
        ppath: &mut Vec<PathElement>,
        out: &mut FieldSet,
    ) {
        for (k, v) in m {
            spath.push(k.clone());
            ppath.push(PathElement::Field(k.clone()));
            self.fs_value(v, spath, ppath, out);
            spath.pop();
            ppath.pop();
        }
    }

    fn fs_value(
        &self,
        v: &Value,
        spath: &mut Vec<String>,
        ppath: &mut Vec<PathElement>,
        out: &mut FieldSet,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() && !self.atomic_map(spath) => {
                self.fs_map(m, spath, ppath, out);
            }
            Value::Array(a) => match self.kind_for(spath, &[a]) {
                ListKind::Atomic => out.insert(ppath),
                kind => {
                    for item in a {
                        let Some(pe) = item_pe(&kind, item) else {
                            continue;
                        };
                        ppath.push(pe);
                        out.insert(ppath);
                        if let (ListKind::Map(_), Value::Object(m)) = (&kind, item) {
                            self.fs_map(m, spath, ppath, out);
                        }
                        ppath.pop();
                    }
                }
            },
            _ => out.insert(ppath),
        }
    }

    /// Compare two objects the way upstream's typed comparison does.
    pub(crate) fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let mut c = Comparison::default();
        self.cmp(
            Some(old),
            Some(new),
            &mut Vec::new(),
            &mut Vec::new(),
            &mut c,
        );
        c
    }

    fn cmp(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        spath: &mut Vec<String>,
        ppath: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) {
        let granular = match (old, new) {
            (None, None) => return,
            (Some(Value::Object(_)) | None, Some(Value::Object(_)) | None)
            | (Some(Value::Array(_)) | None, Some(Value::Array(_)) | None) => {
                self.cmp_granular(old, new, spath, ppath, c)
            }
            _ => false,
        };
        if granular {
            let struct_field = matches!(ppath.last(), Some(PathElement::Field(n)) if STRUCT_FIELDS.contains(&n.as_str()))
                && old.or(new).is_some_and(Value::is_object);
            if !ppath.is_empty() && !struct_field {
                if old.is_none() {
                    c.added.insert(ppath);
                } else if new.is_none() {
                    c.removed.insert(ppath);
                }
            }
            return;
        }
        match (old, new) {
            (None, Some(_)) => c.added.insert(ppath),
            (Some(_), None) => c.removed.insert(ppath),
            (Some(a), Some(b)) if a != b => c.modified.insert(ppath),
            _ => {}
        }
    }

    /// Recurse into maps/lists; returns false when the node is a leaf.
    fn cmp_granular(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        spath: &mut Vec<String>,
        ppath: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) -> bool {
        let empty = |v: Option<&Value>| match v {
            None => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        if empty(old) && empty(new) {
            return false;
        }
        match (old.or(new), old, new) {
            (Some(Value::Object(_)), _, _) => {
                if self.atomic_map(spath) {
                    return false;
                }
                let om = old.and_then(Value::as_object);
                let nm = new.and_then(Value::as_object);
                let mut keys: Vec<&String> = om.map(|m| m.keys().collect()).unwrap_or_default();
                for k in nm.into_iter().flat_map(|m| m.keys()) {
                    if !om.is_some_and(|m| m.contains_key(k)) {
                        keys.push(k);
                    }
                }
                for k in keys {
                    spath.push(k.clone());
                    ppath.push(PathElement::Field(k.clone()));
                    self.cmp(
                        om.and_then(|m| m.get(k)),
                        nm.and_then(|m| m.get(k)),
                        spath,
                        ppath,
                        c,
                    );
                    spath.pop();
                    ppath.pop();
                }
                true
            }
            (Some(Value::Array(_)), _, _) => {
                let oa = old
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let na = new
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let kind = self.kind_for(spath, &[oa, na]);
                if kind == ListKind::Atomic {
                    return false;
                }
                let index = |a: &[Value]| -> Vec<(PathElement, Value)> {
                    a.iter()
                        .filter_map(|i| item_pe(&kind, i).map(|pe| (pe, i.clone())))
                        .collect()
                };
                let (oi, ni) = (index(oa), index(na));
                let mut seen = BTreeSet::new();
                for (pe, _) in oi.iter().chain(ni.iter()) {
                    if !seen.insert(pe.clone()) {
                        continue;
                    }
                    let o = oi.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
                    let n = ni.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
                    ppath.push(pe.clone());
                    if let ListKind::Map(_) = kind {
                        self.cmp_item(o, n, spath, ppath, c);
                    } else {
                        self.cmp_leaf(o, n, ppath, c);
                    }
                    ppath.pop();
                }
                true
            }
            _ => false,
        }
    }

    fn cmp_item(
        &self,
        o: Option<&Value>,
        n: Option<&Value>,
        spath: &mut Vec<String>,
        ppath: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) {
        if !self.cmp_granular(o, n, spath, ppath, c) {
            self.cmp_leaf(o, n, ppath, c);
            return;
        }
        if o.is_none() {
            c.added.insert(ppath);
        } else if n.is_none() {
            c.removed.insert(ppath);
        }
    }

    fn cmp_leaf(
        &self,
        o: Option<&Value>,
        n: Option<&Value>,
        ppath: &[PathElement],
        c: &mut Comparison,
    ) {
        match (o, n) {
            (None, Some(_)) => c.added.insert(ppath),
            (Some(_), None) => c.removed.insert(ppath),
            (Some(a), Some(b)) if a != b => c.modified.insert(ppath),
            _ => {}
        }
    }

    /// Merge an applied configuration into the live object.
    pub(crate) fn merge(&self, live: &Value, applied: &Value) -> Value {
        self.merge_value(Some(live), applied, &mut Vec::new())
    }

    fn merge_value(&self, lhs: Option<&Value>, rhs: &Value, spath: &mut Vec<String>) -> Value {
        match (lhs, rhs) {
            (Some(Value::Object(l)), Value::Object(r)) if !self.atomic_map(spath) => {
                let mut out = l.clone();
                for (k, rv) in r {
                    if rv.is_null() {
                        out.shift_remove(k);
                        continue;
                    }
                    spath.push(k.clone());
                    let merged = self.merge_value(l.get(k), rv, spath);
                    spath.pop();
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (Some(Value::Array(l)), Value::Array(r)) => {
                let kind = self.kind_for(spath, &[l, r]);
                if kind == ListKind::Atomic {
                    return rhs.clone();
                }
                Value::Array(self.merge_list(l, r, &kind, spath))
            }
            (_, Value::Object(r)) => {
                let cleaned: Map<String, Value> = r
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Value::Object(cleaned)
            }
            _ => rhs.clone(),
        }
    }

    /// Merge associative lists: live-only items keep their place, shared and
    /// new items follow the applied order (upstream's merge walk).
    fn merge_list(
        &self,
        l: &[Value],
        r: &[Value],
        kind: &ListKind,
        spath: &mut Vec<String>,
    ) -> Vec<Value> {
        let pes = |a: &[Value]| -> Vec<Option<PathElement>> {
            a.iter().map(|i| item_pe(kind, i)).collect()
        };
        let (lp, rp) = (pes(l), pes(r));
        let in_r = |pe: &Option<PathElement>| rp.contains(pe);
        let mut shared: std::collections::VecDeque<Option<PathElement>> =
            rp.iter().filter(|pe| lp.contains(pe)).cloned().collect();
        let mut next_shared = shared.pop_front();
        let mut merged_r: Vec<Option<PathElement>> = Vec::new();
        let mut out = Vec::with_capacity(l.len().max(r.len()));
        let merge_item =
            |this: &Self, li: Option<&Value>, ri: &Value, spath: &mut Vec<String>| match kind {
                ListKind::Map(_) => this.merge_value(li, ri, spath),
                _ => ri.clone(),
            };
        let (mut li, mut ri) = (0, 0);
        while li < l.len() || ri < r.len() {
            if li < l.len() && ri < r.len() {
                if lp[li] == rp[ri] {
                    merged_r.push(rp[ri].clone());
                    out.push(merge_item(self, Some(&l[li]), &r[ri], spath));
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if in_r(&lp[li]) && next_shared.as_ref().is_some_and(|n| n != &lp[li]) {
                    li += 1;
                    continue;
                }
            }
            if li < l.len() {
                if !in_r(&lp[li]) {
                    out.push(l[li].clone());
                    li += 1;
                    continue;
                } else if merged_r.contains(&lp[li]) {
                    li += 1;
                    continue;
                }
            }
            if ri < r.len() {
                let pe = rp[ri].clone();
                let lhs = lp.iter().position(|p| p == &pe).map(|i| &l[i]);
                out.push(merge_item(self, lhs, &r[ri], spath));
                if next_shared.as_ref() == Some(&pe) {
                    next_shared = shared.pop_front();
                }
                merged_r.push(pe);
                ri += 1;
            }
        }
        out
    }
}

/// Remove from `v` the fields in `last` that nobody in `owned` owns.
pub(crate) fn prune(v: &mut Value, last: &FieldSet, owned: &FieldSet) {
    let empty = FieldSet::default();
    let mut all: BTreeSet<&PathElement> = last.members.iter().collect();
    all.extend(last.children.keys());
    for pe in all {
        // Owning a node keeps the node, not what an old applier set below it.
        let owned_here = owned.members.contains(pe);
        let owned_child = owned.children.get(pe).filter(|c| !c.is_empty());
        if last.members.contains(pe) && !owned_here && owned_child.is_none() {
            remove_elem(v, pe);
            continue;
        }
        if let Some(lc) = last.children.get(pe)
            && let Some(child) = get_elem_mut(v, pe)
        {
            prune(child, lc, owned_child.unwrap_or(&empty));
        }
    }
}
