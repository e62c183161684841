use serde_json::{Value, json};

use super::strategic_merge_patch;
use crate::error::Error;
use crate::schema::{ListMeta, ListType, PatchSchema};
use crate::static_schema::static_schema;

/// The shape of upstream's `MergeItem` test struct.
struct TestSchema;

impl PatchSchema for TestSchema {
    fn field_meta(&self, path: &[&str]) -> Option<ListMeta> {
        let last = path.last().copied().unwrap_or_default();
        match last {
            "mergingList" => Some(ListMeta {
                strategy_merge: true,
                merge_key: Some("name".into()),
                list_type: Some(ListType::Map),
                map_keys: vec!["name".into()],
                ..ListMeta::default()
            }),
            "mergingIntList" => Some(ListMeta {
                strategy_merge: true,
                list_type: Some(ListType::Set),
                ..ListMeta::default()
            }),
            "mergeItemPtr" => Some(ListMeta {
                strategy_merge: true,
                merge_key: Some("name".into()),
                ..ListMeta::default()
            }),
            _ => None,
        }
    }
}

fn smp(original: Value, patch: Value) -> Result<Value, Error> {
    strategic_merge_patch(&original, &patch, &TestSchema)
}

fn ok(original: Value, patch: Value) -> Value {
    match smp(original, patch) {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn nested_maps_merge_and_null_deletes_a_key() {
    let out = ok(
        json!({"name": "1", "value": "1", "other": {"a": 1, "b": 2}}),
        json!({"value": null, "other": {"b": 3, "c": 4}, "new": "x"}),
    );
    assert_eq!(
        out,
        json!({"name": "1", "other": {"a": 1, "b": 3, "c": 4}, "new": "x"})
    );
}

#[test]
fn merging_list_adds_items_in_set_element_order() {
    let out = ok(
        json!({"mergingList": [{"name": "1", "value": "a"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
               "mergingList": [{"name": "2", "value": "b"}]}),
    );
    assert_eq!(
        out,
        json!({"mergingList": [{"name": "1", "value": "a"}, {"name": "2", "value": "b"}]})
    );
}

#[test]
fn merging_list_without_order_puts_new_items_first_like_upstream() {
    let out = ok(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}]}),
        json!({"mergingList": [{"name": "3"}]}),
    );
    assert_eq!(
        out,
        json!({"mergingList": [{"name": "3"}, {"name": "1"}, {"name": "2"}]})
    );
}

#[test]
fn merging_list_merges_existing_items_by_merge_key() {
    let out = ok(
        json!({"mergingList": [{"name": "1", "value": "a", "other": "x"}, {"name": "2"}]}),
        json!({"mergingList": [{"name": "1", "value": "b", "other": null}]}),
    );
    assert_eq!(
        out,
        json!({"mergingList": [{"name": "1", "value": "b"}, {"name": "2"}]})
    );
}

#[test]
fn patch_delete_directive_removes_list_items_with_that_key() {
    let out = ok(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}, {"name": "1"}]}),
        json!({"mergingList": [{"name": "1", "$patch": "delete"}]}),
    );
    assert_eq!(out, json!({"mergingList": [{"name": "2"}]}));
}

#[test]
fn patch_replace_directive_in_a_list_replaces_the_whole_list() {
    let out = ok(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}]}),
        json!({"mergingList": [{"name": "3", "value": "c"}, {"$patch": "replace"}]}),
    );
    assert_eq!(out, json!({"mergingList": [{"name": "3", "value": "c"}]}));
}

#[test]
fn patch_merge_directive_in_a_list_is_an_error() {
    let err = smp(
        json!({"mergingList": [{"name": "1"}]}),
        json!({"mergingList": [{"$patch": "merge"}]}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("merging lists cannot yet be specified")
    );
}

#[test]
fn patch_replace_directive_on_a_map_replaces_it() {
    let out = ok(
        json!({"other": {"a": 1, "b": 2}, "keep": true}),
        json!({"other": {"$patch": "replace", "c": 3}}),
    );
    assert_eq!(out, json!({"other": {"c": 3}, "keep": true}));
}

#[test]
fn patch_delete_directive_on_a_map_empties_it() {
    let out = ok(
        json!({"other": {"a": 1}}),
        json!({"other": {"$patch": "delete"}}),
    );
    assert_eq!(out, json!({"other": {}}));
}

#[test]
fn unknown_patch_directive_on_a_map_is_an_error() {
    let err = smp(
        json!({"other": {}}),
        json!({"other": {"$patch": "frobnicate"}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown patch type"));
}

#[test]
fn delete_from_primitive_list_removes_the_listed_values() {
    let out = ok(
        json!({"mergingIntList": [1, 2, 3]}),
        json!({"$deleteFromPrimitiveList/mergingIntList": [1, 2]}),
    );
    assert_eq!(out, json!({"mergingIntList": [3]}));
}

#[test]
fn delete_from_primitive_list_without_a_field_name_is_a_bad_request() {
    let err = smp(json!({}), json!({"$deleteFromPrimitiveList": [1]})).unwrap_err();
    assert_eq!(
        err,
        Error::BadRequest("invalid patch format of primitive list".into())
    );
}

#[test]
fn merging_primitive_lists_is_a_set_union() {
    let out = ok(
        json!({"mergingIntList": [1, 2]}),
        json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [2, 3]}),
    );
    assert_eq!(out, json!({"mergingIntList": [1, 2, 3]}));
    let unordered = ok(
        json!({"mergingIntList": [1, 2]}),
        json!({"mergingIntList": [3]}),
    );
    assert_eq!(unordered, json!({"mergingIntList": [3, 1, 2]}));
}

#[test]
fn set_element_order_alone_reorders_a_list() {
    let out = ok(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}, {"name": "3"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "3"}, {"name": "2"}, {"name": "1"}]}),
    );
    assert_eq!(
        out,
        json!({"mergingList": [{"name": "3"}, {"name": "2"}, {"name": "1"}]})
    );
}

#[test]
fn set_element_order_interleaves_server_only_items_by_live_order() {
    let out = ok(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}, {"name": "3"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "3"}, {"name": "1"}],
               "mergingList": [{"name": "3", "v": 1}]}),
    );
    let names: Vec<&str> = out["mergingList"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    // Upstream places "2" before "3" because it preceded "3" in the live list.
    assert_eq!(names, vec!["2", "3", "1"]);
}

#[test]
fn set_element_order_that_contradicts_the_patch_list_is_rejected() {
    let err = smp(
        json!({"mergingList": [{"name": "1"}, {"name": "2"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}],
               "mergingList": [{"name": "2"}, {"name": "1"}]}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("doesn't match $setElementOrder list")
    );
}

#[test]
fn set_element_order_without_a_field_name_is_a_bad_request() {
    let err = smp(json!({}), json!({"$setElementOrder": []})).unwrap_err();
    assert_eq!(err.status_code(), 400);
}

#[test]
fn retain_keys_drops_unlisted_keys_from_the_original() {
    let out = ok(
        json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
        json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
    );
    assert_eq!(out, json!({"strategy": {"type": "Recreate"}}));
}

#[test]
fn retain_keys_must_list_every_key_of_the_patch() {
    let err = smp(
        json!({"strategy": {}}),
        json!({"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}),
    )
    .unwrap_err();
    assert_eq!(err.status_code(), 422);
    let bad = smp(json!({"s": {}}), json!({"s": {"$retainKeys": "type"}})).unwrap_err();
    assert_eq!(
        bad,
        Error::BadRequest("invalid patch format of retainKeys".into())
    );
}

#[test]
fn non_merging_lists_are_replaced() {
    let out = ok(
        json!({"nonMergingList": [{"name": "1"}]}),
        json!({"nonMergingList": [{"name": "2"}]}),
    );
    assert_eq!(out, json!({"nonMergingList": [{"name": "2"}]}));
}

#[test]
fn merging_list_items_without_the_merge_key_are_rejected() {
    let err = smp(
        json!({"mergingList": [{"name": "1"}]}),
        json!({"mergingList": [{"value": "x"}]}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not contain declared merge key: name")
    );
}

#[test]
fn merging_list_without_merge_key_metadata_is_rejected() {
    struct NoKey;
    impl PatchSchema for NoKey {
        fn field_meta(&self, _path: &[&str]) -> Option<ListMeta> {
            Some(ListMeta {
                strategy_merge: true,
                ..ListMeta::default()
            })
        }
    }
    let err = strategic_merge_patch(&json!({"l": [{"a": 1}]}), &json!({"l": [{"a": 2}]}), &NoKey)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot merge lists without merge key")
    );
}

#[test]
fn lists_of_lists_cannot_be_merged() {
    let err = smp(
        json!({"mergingIntList": [[1]]}),
        json!({"mergingIntList": [[2]]}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Invalid("lists of lists are not supported".into())
    );
}

#[test]
fn directives_in_new_fields_are_resolved_not_stored() {
    let out = ok(
        json!({}),
        json!({"other": {"a": null, "b": 1}, "mergingList": [{"name": "1"}, {"name": "2", "$patch": "delete"}]}),
    );
    assert_eq!(
        out,
        json!({"other": {"b": 1}, "mergingList": [{"name": "1"}]})
    );
}

#[test]
fn pod_containers_merge_by_name_with_the_static_schema() {
    let pod = json!({"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "b:1"}]}});
    let patch = json!({"spec": {"containers": [
        {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}});
    let out = strategic_merge_patch(&pod, &patch, static_schema("", "Pod").as_ref()).unwrap();
    assert_eq!(
        out,
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}})
    );
}

#[test]
fn finalizers_merge_as_a_set_and_labels_merge_as_a_map() {
    let obj = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1"}}});
    let patch = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"y": "2"}}});
    let out = strategic_merge_patch(&obj, &patch, static_schema("", "ConfigMap").as_ref()).unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}})
    );
}

#[test]
fn a_patch_that_is_not_an_object_is_a_bad_request() {
    assert_eq!(smp(json!({}), json!([1])).unwrap_err().status_code(), 400);
}
