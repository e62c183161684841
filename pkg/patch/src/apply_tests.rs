use serde_json::{Value, json};

use super::{Writer, apply, record_update};
use crate::error::Error;
use crate::schema::NoSchema;
use crate::static_schema::static_schema;

const T1: &str = "2025-01-01T00:00:00Z";
const T2: &str = "2025-01-02T00:00:00Z";

/// A writer of the main resource.
fn w<'a>(manager: &'a str, now: &'a str, api_version: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version,
        subresource: "",
        now,
    }
}

fn deploy(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": image}]}}
        }
    })
}

fn sa(live: Option<&Value>, cfg: &Value, manager: &str, force: bool) -> Result<Value, Error> {
    let schema = static_schema("apps", "Deployment");
    apply(
        live,
        cfg,
        &w(manager, T1, "apps/v1"),
        force,
        schema.as_ref(),
        true,
    )
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(list: &'a [Value], manager: &str) -> Option<&'a Value> {
    list.iter().find(|e| e["manager"] == manager)
}

#[test]
fn apply_on_create_records_an_apply_entry_in_fields_v1() {
    let out = sa(None, &deploy(2, "nginx:1"), "kubectl", false).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    let list = entries(&out);
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        })
    );
}

#[test]
fn fields_omitted_by_the_same_applier_are_removed() {
    let mut cfg = deploy(2, "nginx:1");
    cfg["spec"]["paused"] = json!(true);
    let first = sa(None, &cfg, "kubectl", false).unwrap();
    let second = sa(Some(&first), &deploy(2, "nginx:1"), "kubectl", false).unwrap();
    assert!(second["spec"].get("paused").is_none());
    assert_eq!(entries(&second).len(), 1);
}

#[test]
fn omitted_fields_still_owned_by_another_manager_are_kept() {
    let mut cfg = deploy(2, "nginx:1");
    cfg["spec"]["paused"] = json!(true);
    let a = sa(None, &cfg, "a", false).unwrap();
    let b = sa(Some(&a), &json!({"spec": {"paused": true}}), "b", false).unwrap();
    let a2 = sa(Some(&b), &deploy(2, "nginx:1"), "a", false).unwrap();
    assert_eq!(a2["spec"]["paused"], true);
}

#[test]
fn changing_a_field_owned_by_an_updater_is_a_conflict_with_upstream_message() {
    let mut live = deploy(2, "nginx:1");
    let schema = static_schema("apps", "Deployment");
    record_update(
        None,
        &mut live,
        &w("kubectl-client-side-apply", T1, "apps/v1"),
        "Update",
        schema.as_ref(),
    );
    let err = sa(
        Some(&live),
        &json!({"spec": {"replicas": 5}}),
        "kubectl",
        false,
    )
    .unwrap_err();
    assert_eq!(err.status_code(), 409);
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let Error::Conflict(c) = err else {
        panic!("not a conflict")
    };
    assert_eq!(c[0].field, ".spec.replicas");
    assert_eq!(
        c[0].cause_message(),
        "conflict with \"kubectl-client-side-apply\" using apps/v1"
    );
}

#[test]
fn applying_the_same_value_shares_ownership_without_conflict() {
    let a = sa(None, &deploy(2, "nginx:1"), "a", false).unwrap();
    let b = sa(Some(&a), &json!({"spec": {"replicas": 2}}), "b", false).unwrap();
    let list = entries(&b);
    assert!(entry(&list, "a").unwrap()["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    assert!(entry(&list, "b").unwrap()["fieldsV1"]["f:spec"]["f:replicas"].is_object());
}

#[test]
fn force_moves_ownership_of_conflicting_fields() {
    let a = sa(None, &deploy(2, "nginx:1"), "a", false).unwrap();
    let err = sa(Some(&a), &json!({"spec": {"replicas": 3}}), "b", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    let b = sa(Some(&a), &json!({"spec": {"replicas": 3}}), "b", true).unwrap();
    assert_eq!(b["spec"]["replicas"], 3);
    let list = entries(&b);
    assert!(
        entry(&list, "a").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert!(entry(&list, "b").unwrap()["fieldsV1"]["f:spec"]["f:replicas"].is_object());
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let a = sa(None, &deploy(2, "nginx:1"), "a", false).unwrap();
    let err = sa(Some(&a), &deploy(3, "nginx:2"), "b", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn map_list_items_from_two_appliers_are_merged_and_removed_by_owner() {
    let a = sa(None, &deploy(1, "nginx:1"), "a", false).unwrap();
    let side = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}});
    let b = sa(Some(&a), &side, "b", false).unwrap();
    let names: Vec<&str> = b["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["nginx", "sidecar"]);
    let b2 = sa(Some(&b), &json!({"spec": {}}), "b", false).unwrap();
    let names: Vec<&str> = b2["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["nginx"]);
    // `spec: {}` is an empty map, which upstream also records as owned.
    let list = entries(&b2);
    assert_eq!(
        entry(&list, "b").unwrap()["fieldsV1"],
        json!({"f:spec": {}})
    );
}

#[test]
fn ports_are_keyed_by_container_port_and_defaulted_protocol() {
    let mut cfg = deploy(1, "nginx:1");
    cfg["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let out = sa(None, &cfg, "a", false).unwrap();
    let c = &entries(&out)[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert!(c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["."].is_object());
}

#[test]
fn set_lists_are_owned_item_by_item() {
    let cfg = json!({"metadata": {"name": "x", "finalizers": ["a/b"]}});
    let out = apply(
        None,
        &cfg,
        &w("m", T1, "v1"),
        false,
        static_schema("", "ConfigMap").as_ref(),
        false,
    )
    .unwrap();
    assert_eq!(
        entries(&out)[0]["fieldsV1"],
        json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}})
    );
}

#[test]
fn status_is_ignored_when_reset_status_is_set() {
    let mut cfg = deploy(1, "nginx:1");
    cfg["status"] = json!({"replicas": 9});
    let out = sa(None, &cfg, "a", false).unwrap();
    assert!(out.get("status").is_none());
    assert!(entries(&out)[0]["fieldsV1"].get("f:status").is_none());
}

#[test]
fn applied_managed_fields_are_rejected() {
    let cfg = json!({"metadata": {"managedFields": [{"manager": "x"}]}});
    assert_eq!(sa(None, &cfg, "a", false).unwrap_err().status_code(), 400);
}

#[test]
fn lists_without_schema_are_atomic() {
    let cfg = json!({"spec": {"items": [1, 2]}});
    let out = apply(
        None,
        &cfg,
        &w("m", T1, "example.com/v1"),
        false,
        &NoSchema,
        false,
    )
    .unwrap();
    assert_eq!(
        entries(&out)[0]["fieldsV1"],
        json!({"f:spec": {"f:items": {}}})
    );
}

#[test]
fn record_update_on_create_tracks_new_maps_with_a_dot() {
    let mut obj = json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v"}});
    record_update(
        None,
        &mut obj,
        &w("kubectl-create", T1, "v1"),
        "Update",
        &NoSchema,
    );
    let list = entries(&obj);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["operation"], "Update");
    assert_eq!(
        list[0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
}

#[test]
fn record_update_moves_changed_fields_away_from_other_managers() {
    let schema = static_schema("apps", "Deployment");
    let applied = sa(None, &deploy(2, "nginx:1"), "kubectl", false).unwrap();
    let mut updated = applied.clone();
    updated["spec"]["replicas"] = json!(4);
    record_update(
        Some(&applied),
        &mut updated,
        &w("hpa", T2, "apps/v1"),
        "Update",
        schema.as_ref(),
    );
    let list = entries(&updated);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["manager"], "kubectl");
    assert!(list[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    assert_eq!(list[1]["manager"], "hpa");
    assert_eq!(list[1]["time"], T2);
    assert_eq!(list[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn record_update_drops_entries_left_empty_and_ignores_no_op_writes() {
    let mut a = json!({"spec": {"x": 1}});
    record_update(None, &mut a, &w("one", T1, "v1"), "Update", &NoSchema);
    let mut b = a.clone();
    b["spec"]["x"] = json!(2);
    record_update(Some(&a), &mut b, &w("two", T2, "v1"), "Update", &NoSchema);
    let list = entries(&b);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["manager"], "two");
    let mut c = b.clone();
    record_update(Some(&b), &mut c, &w("three", T2, "v1"), "Update", &NoSchema);
    assert_eq!(entries(&c), list);
}

#[test]
fn record_update_with_empty_managed_fields_resets_tracking() {
    let mut a = json!({"spec": {"x": 1}});
    record_update(None, &mut a, &w("one", T1, "v1"), "Update", &NoSchema);
    let mut b = a.clone();
    b["metadata"]["managedFields"] = json!([]);
    record_update(Some(&a), &mut b, &w("two", T2, "v1"), "Update", &NoSchema);
    assert!(b["metadata"].get("managedFields").is_none());
}

#[test]
fn server_managed_metadata_is_never_owned() {
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "uid": "u", "resourceVersion": "1", "creationTimestamp": T1}});
    record_update(None, &mut obj, &w("m", T1, "v1"), "Update", &NoSchema);
    assert!(obj["metadata"].get("managedFields").is_none());
}

#[test]
fn a_status_writer_gets_its_own_entry_tagged_with_the_subresource() {
    let mut a = json!({"spec": {"x": 1}});
    record_update(None, &mut a, &w("ctl", T1, "v1"), "Update", &NoSchema);
    let mut b = a.clone();
    b["status"] = json!({"ready": true});
    let status_writer = Writer {
        subresource: "status",
        ..w("ctl", T2, "v1")
    };
    record_update(Some(&a), &mut b, &status_writer, "Update", &NoSchema);
    let list = entries(&b);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list[0].get("subresource").is_none(), "{list:?}");
    assert_eq!(list[0]["fieldsV1"], json!({"f:spec": {"f:x": {}}}));
    assert_eq!(list[1]["subresource"], "status");
    assert_eq!(list[1]["fieldsV1"], json!({"f:status": {"f:ready": {}}}));
}
