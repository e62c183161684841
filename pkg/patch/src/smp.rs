//! Strategic merge patch, following upstream `strategicpatch` semantics.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::schema::PatchSchema;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";
const SET_ORDER: &str = "$setElementOrder";

const ERR_PRIMITIVE: &str = "invalid patch format of primitive list";
const ERR_RETAIN: &str = "invalid patch format of retainKeys";
const ERR_SET_ORDER: &str = "invalid patch format of setElementOrder list";

/// Apply a strategic merge patch (`application/strategic-merge-patch+json`).
///
/// Maps merge recursively and `null` deletes a key. Lists whose schema says
/// `patchStrategy: merge` merge element-wise by merge key (lists of scalars
/// become set unions); other lists are replaced. Supports `$patch`
/// (`replace`/`delete` on maps, `replace`/`delete` on list elements),
/// `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` and
/// `$retainKeys`. As upstream, patch items without a relative order to live
/// items are placed first unless `$setElementOrder` says otherwise.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &dyn PatchSchema,
) -> Result<Value> {
    let original = doc
        .as_object()
        .ok_or_else(|| Error::bad("invalid JSON document"))?;
    let patch = patch
        .as_object()
        .ok_or_else(|| Error::bad("invalid JSON document"))?;
    let ctx = Ctx { schema };
    let out = ctx.merge_map(original.clone(), patch.clone(), &[])?;
    Ok(Value::Object(out))
}

struct Ctx<'a> {
    schema: &'a dyn PatchSchema,
}

fn child_path(path: &[String], key: &str) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(key.to_string());
    p
}

fn no_merge_key(item: &Value, key: &str) -> Error {
    Error::invalid(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

fn bad_type(expected: &str, actual: &Value) -> Error {
    Error::invalid(format!("expected a {expected}, but received {actual}"))
}

/// Position of `item` in `list`, by merge key for maps or by value.
fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let want = item.get(k)?;
            list.iter().position(|v| v.get(k) == Some(want))
        }
        None => list.iter().position(|v| v == item),
    }
}

fn has_directive(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key(DIRECTIVE))
}

fn is_delete_item(v: &Value) -> bool {
    v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// Stable sort of `items` by their position in `order` (unknown items last).
fn sort_by_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    items.sort_by_key(|v| index_of(order, v, key).unwrap_or(usize::MAX));
}

/// Interleave server-only items (`left`) into patch items (`right`) using the
/// live order where both are known; otherwise patch items go first.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (Some(a), Some(b)) => {
                let take_left = match (index_of(server, a, key), index_of(server, b, key)) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                };
                let next = if take_left { l.next() } else { r.next() };
                out.extend(next);
            }
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (None, None) => break,
        }
    }
    out
}

/// Order `merged` so that items present in `order` follow it, and the others
/// keep their live order, interleaved as upstream does.
fn normalize_order(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>> {
    let (mut in_order, mut server_only): (Vec<Value>, Vec<Value>) = (Vec::new(), Vec::new());
    for v in merged {
        if let Some(k) = key
            && v.get(k).is_none()
        {
            return Err(no_merge_key(&v, k));
        }
        if index_of(order, &v, key).is_some() {
            in_order.push(v);
        } else {
            server_only.push(v);
        }
    }
    sort_by_order(&mut in_order, order, key);
    sort_by_order(&mut server_only, server, key);
    Ok(merge_sorted(server_only, in_order, server, key))
}

/// Element kind of a list: `Some(true)` maps, `Some(false)` scalars.
fn element_kind(lists: &[&[Value]]) -> Result<Option<bool>> {
    let mut kind: Option<(bool, u8)> = None;
    for list in lists {
        for v in list.iter() {
            let tag = match v {
                Value::Array(_) => return Err(Error::invalid("lists of lists are not supported")),
                Value::Object(_) => 0,
                Value::String(_) => 1,
                Value::Number(_) => 2,
                Value::Bool(_) => 3,
                Value::Null => 4,
            };
            match kind {
                None => kind = Some((tag == 0, tag)),
                Some((_, t)) if t != tag => {
                    return Err(Error::invalid(format!(
                        "list element types are not identical: {}",
                        Value::Array(lists.iter().flat_map(|l| l.iter().cloned()).collect())
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Ok(kind.map(|(is_map, _)| is_map))
}

impl Ctx<'_> {
    fn meta_key(&self, path: &[String]) -> (bool, Option<String>) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match self.schema.field_meta(&p) {
            Some(m) => (m.strategy_merge, m.merge_key),
            None => (false, None),
        }
    }

    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &[String],
    ) -> Result<Map<String, Value>> {
        if let Some(d) = patch.get(DIRECTIVE) {
            return match d.as_str() {
                Some("replace") => {
                    patch.remove(DIRECTIVE);
                    self.merge_map(Map::new(), patch, path)
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(Error::invalid(format!(
                    "unknown patch type: {d} in map: {}",
                    Value::Object(patch.clone())
                ))),
            };
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch, path)?;

        for (k, pv) in patch {
            let (key, delete_list) = if k.starts_with(DELETE_PRIMITIVE) {
                let rest = k
                    .strip_prefix(DELETE_PRIMITIVE)
                    .and_then(|r| r.strip_prefix('/'))
                    .ok_or_else(|| Error::bad(ERR_PRIMITIVE))?;
                (rest.to_string(), true)
            } else {
                (k, false)
            };
            let cpath = child_path(path, &key);
            if pv.is_null() {
                if !delete_list {
                    original.remove(&key);
                }
                continue;
            }
            if delete_list {
                let Value::Array(to_delete) = pv else {
                    return Err(Error::bad(ERR_PRIMITIVE));
                };
                if let Some(Value::Array(cur)) = original.get_mut(&key) {
                    cur.retain(|v| !to_delete.contains(v));
                }
                continue;
            }
            let Some(ov) = original.get_mut(&key) else {
                let v = self.clean_new(pv, &cpath)?;
                original.insert(key, v);
                continue;
            };
            let merged = match (ov.take(), pv) {
                (Value::Object(o), Value::Object(p)) => {
                    Value::Object(self.merge_map(o, p, &cpath)?)
                }
                (Value::Array(o), Value::Array(p)) => {
                    Value::Array(self.merge_list_field(o, p, &cpath)?)
                }
                (_, p) => self.clean_new(p, &cpath)?,
            };
            *ov = merged;
        }
        Ok(original)
    }

    /// A patch value for a key absent from the original: directives and
    /// nulls are resolved against an empty original.
    fn clean_new(&self, v: Value, path: &[String]) -> Result<Value> {
        Ok(match v {
            Value::Object(m) => Value::Object(self.merge_map(Map::new(), m, path)?),
            Value::Array(a) => {
                let (merge, _) = self.meta_key(path);
                if merge {
                    Value::Array(self.merge_list_field(Vec::new(), a, path)?)
                } else {
                    Value::Array(a)
                }
            }
            other => other,
        })
    }

    fn merge_list_field(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        path: &[String],
    ) -> Result<Vec<Value>> {
        let (merge, key) = self.meta_key(path);
        if !merge {
            return Ok(patch);
        }
        self.merge_slice(original, patch, key.as_deref(), path)
    }

    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        key: Option<&str>,
        path: &[String],
    ) -> Result<Vec<Value>> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let is_map = element_kind(&[&original, &patch])?.unwrap_or(false);
        if !is_map {
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            return normalize_order(merged, &patch, &original, None);
        }
        let Some(key) = key else {
            return Err(Error::invalid(format!(
                "cannot merge lists without merge key for {}",
                path.join(".")
            )));
        };
        let (original, patch) = special_elements(original, patch, key)?;
        let mut merged = original.clone();
        for p in &patch {
            let Some(want) = p.get(key) else {
                return Err(no_merge_key(p, key));
            };
            let pos = merged.iter().position(|v| v.get(key) == Some(want));
            let Value::Object(pm) = p.clone() else {
                return Err(bad_type("map", p));
            };
            match pos {
                Some(i) => {
                    let Value::Object(om) = merged[i].take() else {
                        return Err(bad_type("map", &merged[i]));
                    };
                    merged[i] = Value::Object(self.merge_map(om, pm, path)?);
                }
                None => merged.push(Value::Object(self.merge_map(Map::new(), pm, path)?)),
            }
        }
        normalize_order(merged, &patch, &original, Some(key))
    }

    fn merge_set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        path: &[String],
    ) -> Result<()> {
        let keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ORDER))
            .cloned()
            .collect();
        for k in keys {
            let order = match patch.remove(&k) {
                Some(Value::Array(a)) => a,
                _ => return Err(Error::bad(ERR_SET_ORDER)),
            };
            let field = k
                .strip_prefix(SET_ORDER)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| Error::bad(ERR_SET_ORDER))?
                .to_string();
            let cpath = child_path(path, &field);
            let orig_list = match original.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_type("list", other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_type("list", other)),
            };
            let (_, key) = self.meta_key(&cpath);
            if let Some(pl) = &patch_list {
                validate_set_order(pl, &order, key.as_deref())?;
            }
            let merged = match (orig_list.clone(), patch_list) {
                (Some(o), None) => o,
                (None, Some(p)) => self.merge_list_field(Vec::new(), p, &cpath)?,
                (Some(o), Some(p)) => self.merge_list_field(o, p, &cpath)?,
                (None, None) => continue,
            };
            let server = orig_list.unwrap_or_default();
            let key = key.filter(|_| element_kind(&[&merged]).ok().flatten().unwrap_or(false));
            let ordered = normalize_order(merged, &order, &server, key.as_deref())?;
            original.insert(field.clone(), Value::Array(ordered));
            patch.remove(&field);
        }
        Ok(())
    }
}

/// Handle `$patch` elements of a merging list of maps: `delete` removes
/// matching originals, `replace` makes the rest of the patch the whole list.
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Some(d) = v.get(DIRECTIVE) else {
            rest.push(v);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let Some(want) = v.get(key) else {
                    return Err(no_merge_key(&v, key));
                };
                original.retain(|o| o.get(key) != Some(want));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(Error::invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown patch type: {d} in map: {v}"
                )));
            }
        }
    }
    if replace {
        Ok((rest, Vec::new()))
    } else {
        Ok((original, rest))
    }
}

/// Items of the patch list must appear in `$setElementOrder` in the same
/// relative order (deletions ignored).
fn validate_set_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = patch
        .iter()
        .filter(|v| key.is_none() || !is_delete_item(v))
        .collect();
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        let item = non_delete[pi];
        if has_directive(item) {
            pi += 1;
            continue;
        }
        let equal = match key {
            None => item == &order[oi],
            Some(k) => {
                let a = item.get(k).ok_or_else(|| no_merge_key(item, k))?;
                let b = order[oi]
                    .get(k)
                    .ok_or_else(|| no_merge_key(&order[oi], k))?;
                a == b
            }
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() {
        return Err(Error::bad(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
            Value::Array(patch.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

/// `$retainKeys`: drop original keys not listed; every non-null patch key
/// must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(rk) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = rk else {
        return Err(Error::bad(ERR_RETAIN));
    };
    let keep: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PRIMITIVE) || k.starts_with(SET_ORDER) {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(Error::invalid(
                "patch content doesn't match retainKeys list",
            ));
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "smp_tests.rs"]
mod tests;
