//! The schema seam: patch metadata for fields, looked up by path.

/// `x-kubernetes-list-type` of a list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// The list is replaced as a whole.
    Atomic,
    /// Items are unique scalars, owned one by one.
    Set,
    /// Items are objects identified by `map_keys`.
    Map,
}

/// Patch metadata of one list (or map) field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMeta {
    /// `x-kubernetes-patch-strategy` contains `merge`.
    pub strategy_merge: bool,
    /// `x-kubernetes-patch-strategy` contains `retainKeys`.
    pub retain_keys: bool,
    /// `x-kubernetes-patch-merge-key`.
    pub merge_key: Option<String>,
    /// `x-kubernetes-list-type`.
    pub list_type: Option<ListType>,
    /// `x-kubernetes-list-map-keys`.
    pub map_keys: Vec<String>,
}

/// Where patch metadata comes from (built-in table, OpenAPI, or nothing).
pub trait PatchSchema: Send + Sync {
    /// Metadata of the field at `path`: property names from the object root,
    /// list items being transparent (e.g. `["spec","containers","ports"]`).
    fn field_meta(&self, path: &[&str]) -> Option<ListMeta>;

    /// Whether the map at `path` is `x-kubernetes-map-type: atomic`.
    fn is_atomic_map(&self, path: &[&str]) -> bool {
        let _ = path;
        false
    }
}

/// No metadata at all: lists are atomic and replaced, maps merge (what CRDs get).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSchema;

impl PatchSchema for NoSchema {
    fn field_meta(&self, _path: &[&str]) -> Option<ListMeta> {
        None
    }
}

/// How a list is tracked by server-side apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Derive the apply list kind from the metadata at `path`.
pub(crate) fn list_kind(schema: &dyn PatchSchema, path: &[&str]) -> ListKind {
    let Some(meta) = schema.field_meta(path) else {
        return ListKind::Atomic;
    };
    let keys = || {
        if !meta.map_keys.is_empty() {
            meta.map_keys.clone()
        } else {
            meta.merge_key.iter().cloned().collect()
        }
    };
    match meta.list_type {
        Some(ListType::Atomic) => ListKind::Atomic,
        Some(ListType::Set) => ListKind::Set,
        Some(ListType::Map) => {
            let k = keys();
            if k.is_empty() {
                ListKind::Atomic
            } else {
                ListKind::Map(k)
            }
        }
        None if meta.strategy_merge => {
            let k = keys();
            if k.is_empty() {
                ListKind::Set
            } else {
                ListKind::Map(k)
            }
        }
        None => ListKind::Atomic,
    }
}
