//! Server-side apply and managed-fields bookkeeping for other writes.

use serde_json::Value;

use crate::error::{ApplyError, Conflict, Error};
use crate::fieldset::{FieldSet, human_path};
use crate::managed::{self, Entry};
use crate::schema::PatchSchema;
use crate::ssa::{Walker, prune};

const APPLY: &str = "Apply";

/// Who writes: the field manager, the request's apiVersion and subresource (empty for the
/// main resource), and the RFC 3339 time stamped on its managedFields entry.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub now: &'a str,
}

impl Writer<'_> {
    fn entry(&self, operation: &str, set: FieldSet) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation: operation.to_string(),
            api_version: self.api_version.to_string(),
            time: Some(self.now.to_string()),
            subresource: self.subresource.to_string(),
            set,
        }
    }

    fn owns(&self, e: &Entry, operation: &str) -> bool {
        e.same_identity(self.manager, operation, self.api_version, self.subresource)
    }
}

/// Server-side apply (`application/apply-patch+yaml`) of `applied` by `writer`.
///
/// Returns the new object with `metadata.managedFields` updated. Fields in
/// `applied` are set and owned by the writer; fields it applied before but
/// omits now are removed unless another manager owns them. Changing a field
/// owned by another manager is a [`Error::Conflict`] unless `force`, which
/// moves ownership. With `reset_status` (main resource of a kind with a status
/// subresource) `status` in `applied` is ignored.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer,
    force: bool,
    schema: &dyn PatchSchema,
    reset_status: bool,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(Error::bad("apply patch must be a JSON or YAML object"));
    }
    if managed::managed_fields(applied).is_some_and(|l| !l.is_empty()) {
        return Err(Error::bad("metadata.managedFields must be nil"));
    }
    let walker = Walker { schema };
    let mut config = managed::without_managed_fields(applied);
    if reset_status && let Some(o) = config.as_object_mut() {
        o.shift_remove("status");
    }
    let live_full = live
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let mut entries = managed::managed_fields(&live_full)
        .map(|l| managed::decode(l))
        .unwrap_or_default();
    let live_obj = managed::without_managed_fields(&live_full);

    let new_set = managed::strip(walker.to_field_set(&config), reset_status);
    let mut merged = walker.merge(&live_obj, &config);

    let me = entries.iter().position(|e| writer.owns(e, APPLY));
    let last_set = me.map(|i| entries[i].set.clone()).unwrap_or_default();
    let owned = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != me)
        .fold(new_set.clone(), |acc, (_, e)| acc.union(&e.set));
    prune(&mut merged, &last_set, &owned);

    let cmp = walker.compare(&live_obj, &merged);
    let changed = managed::strip(cmp.modified.union(&cmp.added), reset_status);
    let removed = managed::strip(cmp.removed.clone(), reset_status);

    let mut conflicts = Vec::new();
    let mut conflict_sets = vec![FieldSet::default(); entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == me {
            continue;
        }
        let c = e.set.intersection(&changed);
        for p in c.paths() {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                operation: e.operation.clone(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
                field: human_path(&p),
            });
        }
        conflict_sets[i] = c;
    }
    if !force && !conflicts.is_empty() {
        return Err(Error::Conflict(conflicts));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == me {
            continue;
        }
        e.set = e
            .set
            .difference(&conflict_sets[i])
            .difference(&removed)
            .pruned();
    }
    match me {
        Some(i) => {
            let e = &mut entries[i];
            e.set = new_set;
            e.api_version = writer.api_version.to_string();
            if !cmp.is_same() || e.time.is_none() {
                e.time = Some(writer.now.to_string());
            }
        }
        None => entries.push(writer.entry(APPLY, new_set)),
    }
    entries.retain(|e| !e.set.is_empty());
    managed::store(&mut merged, entries);
    Ok(merged)
}

/// Managed-fields bookkeeping for a non-apply write (create, update, patch).
///
/// The fields that changed from `old` to `new` join the writer's entry for
/// `operation` (normally `"Update"`) and leave every other entry; entries
/// left empty are dropped. As upstream, `managedFields: []` (or `[{}]`) in
/// `new` resets tracking, other explicit managed fields in `new` are kept as
/// the starting point, and otherwise `old`'s entries are used.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer,
    operation: &str,
    schema: &dyn PatchSchema,
) {
    let walker = Walker { schema };
    let mut entries = match managed::managed_fields(new) {
        Some(l) if managed::is_reset(l) => Vec::new(),
        Some(l) if !managed::decode(l).is_empty() => managed::decode(l),
        _ => old
            .and_then(managed::managed_fields)
            .map(|l| managed::decode(l))
            .unwrap_or_default(),
    };
    let empty = Value::Object(Default::default());
    let old_obj = managed::without_managed_fields(old.unwrap_or(&empty));
    let new_obj = managed::without_managed_fields(new);
    let cmp = walker.compare(&old_obj, &new_obj);
    let changed = managed::strip(cmp.modified.union(&cmp.added), false);
    let removed = managed::strip(cmp.removed.clone(), false);
    for e in entries.iter_mut() {
        e.set = e.set.difference(&changed).difference(&removed).pruned();
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| writer.owns(e, operation)) {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(writer.now.to_string());
            }
            None => entries.push(writer.entry(operation, changed)),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    managed::store(new, entries);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
#[path = "apply_tests.rs"]
mod tests;
