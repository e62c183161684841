#![allow(clippy::unwrap_used)]

use super::*;
use kubox_core::resources::Registry;

fn api() -> OpenApi {
    OpenApi::new(&Registry::builtin())
}

fn doc(api: &OpenApi, path: &str) -> Value {
    serde_json::from_slice(&api.document(path).unwrap()).unwrap()
}

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let name = r.strip_prefix("#/components/schemas/").unwrap();
    &doc["components"]["schemas"][name]
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                // A `$ref` holding an object is a property named "$ref" (JSONSchemaProps).
                if let (true, Some(r)) = (k == "$ref", x.as_str()) {
                    out.push(r.to_string());
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Checks that every `$ref` resolves inside `doc` and that no `$ref` has siblings.
fn assert_refs_resolve(path: &str, doc: &Value) {
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty(), "{path} has no refs at all");
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{path}: non-local ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "{path}: dangling ref {r}");
    }
    fn no_siblings(path: &str, v: &Value) {
        match v {
            Value::Object(m) => {
                if m.get("$ref").is_some_and(Value::is_string) {
                    assert_eq!(m.len(), 1, "{path}: $ref with siblings: {v}");
                }
                m.values().for_each(|x| no_siblings(path, x));
            }
            Value::Array(a) => a.iter().for_each(|x| no_siblings(path, x)),
            _ => {}
        }
    }
    no_siblings(path, doc);
}

#[test]
fn index_lists_core_and_apps_with_hashed_urls() {
    let index = api().index();
    let paths = index["paths"].as_object().unwrap();
    let core = paths["api/v1"]["serverRelativeURL"].as_str().unwrap();
    assert!(core.starts_with("/openapi/v3/api/v1?hash="), "{core}");
    assert!(
        paths["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1?hash=")
    );
    assert!(paths.contains_key("apis/autoscaling/v2"));
    assert!(paths.contains_key("apis/autoscaling/v1"));
}

#[test]
fn index_hash_is_stable_and_changes_with_custom_schemas() {
    let api = api();
    let before = api.index();
    assert_eq!(before, api.index());
    api.set_custom(
        "example.com",
        "v1",
        "Widget",
        "widgets",
        true,
        json!({"type": "object"}),
    );
    let after = api.index();
    assert_eq!(before["paths"]["api/v1"], after["paths"]["api/v1"]);
    let url1 = after["paths"]["apis/example.com/v1"]["serverRelativeURL"].clone();
    api.set_custom(
        "example.com",
        "v1",
        "Widget",
        "widgets",
        true,
        json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
    );
    assert_ne!(
        url1,
        api.index()["paths"]["apis/example.com/v1"]["serverRelativeURL"]
    );
}

#[test]
fn unknown_group_versions_have_no_document() {
    let api = api();
    assert!(api.document("apis/nope.example.com/v1").is_none());
    assert!(api.document("apis/apps").is_none());
    assert!(api.document("garbage").is_none());
}

#[test]
fn documents_are_built_once_and_cached() {
    let api = api();
    let a = api.document("apis/apps/v1").unwrap();
    let b = api.clone().document("/apis/apps/v1").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn apps_document_has_deployment_with_gvk_and_strategy_description() {
    let d = doc(&api(), "apis/apps/v1");
    assert_eq!(d["openapi"], "3.0.0");
    let dep = &d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert!(
        dep.get("required").is_none(),
        "metadata is not required upstream"
    );
    // .spec.strategy, following refs the way kubectl explain does.
    let spec = &dep["properties"]["spec"];
    assert!(
        spec["description"]
            .as_str()
            .unwrap()
            .starts_with("Specification of the desired behavior")
    );
    let spec_schema = resolve(&d, spec["allOf"][0]["$ref"].as_str().unwrap());
    let strategy = &spec_schema["properties"]["strategy"];
    assert!(
        strategy["description"]
            .as_str()
            .unwrap()
            .contains("deployment strategy"),
        "{strategy}"
    );
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    let strategy_schema = resolve(&d, strategy["allOf"][0]["$ref"].as_str().unwrap());
    assert!(strategy_schema["properties"]["rollingUpdate"].is_object());
    assert!(strategy_schema["properties"]["type"]["description"].is_string());
    // List kinds and the meta types paths use are present.
    let list = &d["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentList"];
    assert_eq!(
        list["x-kubernetes-group-version-kind"][0]["kind"],
        "DeploymentList"
    );
    for meta in [
        "ObjectMeta",
        "ListMeta",
        "Status",
        "DeleteOptions",
        "Patch",
        "APIResourceList",
    ] {
        assert!(
            d["components"]["schemas"][format!("io.k8s.apimachinery.pkg.apis.meta.v1.{meta}")]
                .is_object(),
            "{meta}"
        );
    }
    // The scale subresource's kind comes along.
    assert!(d["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
}

#[test]
fn every_patch_operation_of_deployments_takes_field_validation() {
    let d = doc(&api(), "apis/apps/v1");
    let mut seen = 0;
    for (path, item) in d["paths"].as_object().unwrap() {
        let Some(patch) = item.get("patch") else {
            continue;
        };
        if patch["x-kubernetes-group-version-kind"]
            != json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        {
            continue;
        }
        seen += 1;
        let names: Vec<_> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for n in ["fieldValidation", "dryRun", "fieldManager", "force"] {
            assert!(names.contains(&n), "{path} lacks {n}");
        }
        assert_eq!(patch["x-kubernetes-action"], "patch");
    }
    assert_eq!(seen, 2, "the object and its status");
    let item = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    for m in ["get", "put", "patch", "delete"] {
        assert!(item[m].is_object(), "{m}");
    }
    let coll = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert!(coll["get"].is_object() && coll["post"].is_object());
    assert_eq!(
        coll["post"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    );
    let scale =
        &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
}

#[test]
fn core_paths_have_an_empty_group_in_their_gvk() {
    let d = doc(&api(), "api/v1");
    let get = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"];
    assert_eq!(
        get["x-kubernetes-group-version-kind"],
        json!({"group": "", "kind": "Pod", "version": "v1"})
    );
    let ns = &d["paths"]["/api/v1/namespaces/{name}"]["patch"];
    assert!(
        ns["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
    assert_eq!(
        d["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]
            ["group"],
        ""
    );
}

#[test]
fn every_ref_in_every_document_resolves_within_it() {
    let api = api();
    api.set_custom(
        "stable.example.com",
        "v1",
        "CronTab",
        "crontabs",
        true,
        crontab_schema(),
    );
    let index = api.index();
    let paths = index["paths"].as_object().unwrap();
    assert!(paths.len() > 15);
    for path in paths.keys() {
        let d = doc(&api, path);
        assert_refs_resolve(path, &d);
        // Every top-level kind a path names has a schema carrying the same GVK.
        for item in d["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let Some(gvk) = op.get("x-kubernetes-group-version-kind") else {
                    continue;
                };
                let found = d["components"]["schemas"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|s| {
                        s["x-kubernetes-group-version-kind"]
                            .as_array()
                            .is_some_and(|l| l.contains(gvk))
                    });
                assert!(found, "{path}: no schema for {gvk}");
            }
        }
    }
}

#[test]
fn unknown_fields_reports_typos_and_accepts_valid_objects() {
    let api = api();
    let valid = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "x": "y"}, "annotations": {"a.b/c": "d"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}, "env": [{"name": "A", "value": "b"}]}]}
            }
        },
        "status": {}
    });
    assert_eq!(
        api.unknown_fields("apps", "v1", "Deployment", &valid),
        Vec::<String>::new()
    );
    let mut bad = valid.clone();
    bad["spec"]["replicass"] = json!(3);
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
    bad["metadata"]["nam"] = json!("x");
    let mut unknown = api.unknown_fields("apps", "v1", "Deployment", &bad);
    unknown.sort();
    assert_eq!(
        unknown,
        vec![
            ".metadata.nam",
            ".spec.replicass",
            ".spec.template.spec.containers[0].imagee"
        ]
    );
}

#[test]
fn unknown_fields_does_not_descend_into_free_form_members() {
    let api = api();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"anything": "goes"}});
    assert!(api.unknown_fields("", "v1", "ConfigMap", &cm).is_empty());
    let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}, "revision": 1,
        "data": {"spec": {"whatever": true}}});
    assert!(
        api.unknown_fields("apps", "v1", "ControllerRevision", &rev)
            .is_empty()
    );
    assert!(
        api.unknown_fields("apps", "v1", "NoSuchKind", &rev)
            .is_empty()
    );
}

#[test]
fn field_meta_gives_merge_keys_and_list_types() {
    let api = api();
    let containers = api
        .field_meta(
            "apps",
            "v1",
            "Deployment",
            &["spec", "template", "spec", "containers"],
        )
        .unwrap();
    assert_eq!(containers.patch_merge_key.as_deref(), Some("name"));
    assert_eq!(containers.patch_strategy.as_deref(), Some("merge"));
    assert_eq!(containers.list_type.as_deref(), Some("map"));
    assert_eq!(containers.list_map_keys, vec!["name"]);
    let ports = api
        .field_meta("", "v1", "Pod", &["spec", "containers", "ports"])
        .unwrap();
    assert_eq!(ports.patch_merge_key.as_deref(), Some("containerPort"));
    assert_eq!(ports.list_map_keys, vec!["containerPort", "protocol"]);
    let svc = api
        .field_meta("", "v1", "Service", &["spec", "ports"])
        .unwrap();
    assert_eq!(svc.list_map_keys, vec!["port", "protocol"]);
    let owners = api
        .field_meta("", "v1", "ConfigMap", &["metadata", "ownerReferences"])
        .unwrap();
    assert_eq!(owners.patch_merge_key.as_deref(), Some("uid"));
    let finalizers = api
        .field_meta("", "v1", "ConfigMap", &["metadata", "finalizers"])
        .unwrap();
    assert_eq!(finalizers.list_type.as_deref(), Some("set"));
    assert_eq!(
        api.field_meta("", "v1", "Pod", &["spec", "nodeName"]),
        Some(FieldMeta::default())
    );
    assert_eq!(api.field_meta("", "v1", "Pod", &["spec", "nope"]), None);
}

fn crontab_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "cronSpec": {"type": "string"},
                "replicas": {"type": "integer"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    })
}

#[test]
fn custom_resources_get_documents_validation_and_can_be_removed() {
    let api = api();
    api.set_custom(
        "stable.example.com",
        "v1",
        "CronTab",
        "crontabs",
        true,
        crontab_schema(),
    );
    let d = doc(&api, "apis/stable.example.com/v1");
    let ct = &d["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(ct["x-kubernetes-group-version-kind"][0]["kind"], "CronTab");
    assert!(ct["properties"]["metadata"]["allOf"][0]["$ref"].is_string());
    let patch =
        &d["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"];
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
    assert!(
        patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_none()
    );
    let obj = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "a"},
        "spec": {"cronSpec": "* * * * *", "replicass": 1, "extra": {"free": 1}}, "status": {"x": 1}});
    assert_eq!(
        api.unknown_fields("stable.example.com", "v1", "CronTab", &obj),
        vec![".spec.replicass"]
    );
    api.remove_custom("stable.example.com", "v1", "CronTab");
    assert!(api.document("apis/stable.example.com/v1").is_none());
    assert!(
        !api.index()["paths"]
            .as_object()
            .unwrap()
            .contains_key("apis/stable.example.com/v1")
    );
}

#[test]
fn gv_paths_split_into_group_and_version() {
    assert_eq!(split_gv_path("api/v1"), Some(("", "v1")));
    assert_eq!(split_gv_path("/apis/apps/v1"), Some(("apps", "v1")));
    assert_eq!(split_gv_path("apis/apps"), None);
    assert_eq!(gv_path("", "v1"), "api/v1");
    assert_eq!(gv_path("apps", "v1"), "apis/apps/v1");
}

#[test]
fn every_extension_in_the_table_lands_on_a_served_property() {
    let api = api();
    let docs: Vec<Value> = api.index()["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| doc(&api, p))
        .collect();
    for (schema, property) in crate::extensions::entries() {
        let found = docs
            .iter()
            .any(|d| d["components"]["schemas"][&schema]["properties"][property].is_object());
        assert!(found, "{schema}.{property} is in no document");
    }
}

#[test]
fn documents_stay_reasonably_small() {
    let api = api();
    let core = api.document("api/v1").unwrap();
    let apps = api.document("apis/apps/v1").unwrap();
    assert!(core.len() < 3_000_000, "core/v1 is {} bytes", core.len());
    assert!(apps.len() < 1_500_000, "apps/v1 is {} bytes", apps.len());
}

/// Follows `fields` from the kind's schema the way kubectl explain's template does
/// (properties, items, additionalProperties, allOf, `$ref`); returns the last field's schema.
fn explain<'a>(d: &'a Value, gvk: &Value, fields: &[&str]) -> Option<&'a Value> {
    let schemas = d["components"]["schemas"].as_object()?;
    let root = schemas.values().find(|s| {
        s["x-kubernetes-group-version-kind"]
            .as_array()
            .is_some_and(|l| l.contains(gvk))
    })?;
    fn find<'a>(d: &'a Value, s: &'a Value, name: &str) -> Option<&'a Value> {
        let resolved = match s.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve(d, r),
            None => s,
        };
        if let Some(p) = resolved.get("properties").and_then(|p| p.get(name)) {
            return Some(p);
        }
        if let Some(items) = resolved.get("items") {
            return find(d, items, name);
        }
        if let Some(add) = resolved
            .get("additionalProperties")
            .filter(|a| a.is_object())
        {
            return find(d, add, name);
        }
        resolved
            .get("allOf")?
            .as_array()?
            .iter()
            .find_map(|s| find(d, s, name))
    }
    fields.iter().try_fold(root, |s, f| find(d, s, f))
}

#[test]
fn explain_style_walks_reach_nested_fields_with_descriptions() {
    let api = api();
    let apps = doc(&api, "apis/apps/v1");
    let gvk = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"]["x-kubernetes-group-version-kind"].clone();
    let strategy = explain(&apps, &gvk, &["spec", "strategy"]).unwrap();
    assert!(
        strategy["description"]
            .as_str()
            .unwrap()
            .contains("strategy")
    );
    let surge = explain(
        &apps,
        &gvk,
        &["spec", "strategy", "rollingUpdate", "maxSurge"],
    )
    .unwrap();
    assert!(
        surge["description"]
            .as_str()
            .unwrap()
            .contains("maximum number of pods")
    );
    let image = explain(
        &apps,
        &gvk,
        &["spec", "template", "spec", "containers", "image"],
    )
    .unwrap();
    assert!(
        image["description"]
            .as_str()
            .unwrap()
            .contains("Container image name")
    );
    assert!(explain(&apps, &gvk, &["spec", "nope"]).is_none());
    let core = doc(&api, "api/v1");
    let pod_gvk = core["paths"]["/api/v1/pods"]["get"]["x-kubernetes-group-version-kind"].clone();
    assert!(explain(&core, &pod_gvk, &["metadata", "labels"]).is_some());
}

#[test]
fn builtin_patches_accept_strategic_merge_and_custom_ones_do_not() {
    let api = api();
    let d = doc(&api, "apis/apps/v1");
    let content = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]["requestBody"]
        ["content"];
    for t in [
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content[t]["schema"]["$ref"].is_string(), "{t}");
    }
}

/// What kube-openapi's `proto` parser (kubectl <= 1.28 explain and validation) demands of every
/// v2 schema: references to existing definitions with no type/properties beside them, arrays
/// with one items schema, single primitive types.
fn check_v2_schema(defs: &Map<String, Value>, path: &str, s: &Value) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("{path}: ref {r}"));
        assert!(defs.contains_key(name), "{path}: unknown definition {name}");
        assert!(
            s.get("type").is_none() && s.get("properties").is_none(),
            "{path}: {s}"
        );
        return;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = s
                .get("items")
                .unwrap_or_else(|| panic!("{path}: array without items"));
            check_v2_schema(defs, &format!("{path}[]"), items);
        }
        Some("object") | None => {
            for (k, p) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                check_v2_schema(defs, &format!("{path}.{k}"), p);
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                check_v2_schema(defs, &format!("{path}{{}}"), ap);
            }
        }
        Some(t) => assert!(
            ["string", "number", "integer", "boolean"].contains(&t),
            "{path}: type {t}"
        ),
    }
}

#[test]
fn v2_document_is_swagger_with_resolvable_definitions_and_protobuf() {
    let api = api();
    let v2 = api.v2("v1.33.0").expect("v2");
    let doc: Value = serde_json::from_slice(&v2.json).expect("json");
    assert_eq!(doc["swagger"], "2.0");
    let defs = doc["definitions"].as_object().expect("definitions");
    for (name, s) in defs {
        check_v2_schema(defs, name, s);
    }
    let dep = &defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"][0],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    assert_eq!(
        defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
        "name"
    );
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(
        patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    assert!(!String::from_utf8_lossy(&v2.json).contains("#/components/"));
    // Document{swagger: "2.0" (field 1), ...}
    assert!(v2.protobuf.starts_with(b"\x0a\x032.0\x12"));
    assert!(v2.protobuf.len() > 100_000);
    // Cached until resources change.
    assert!(Arc::ptr_eq(&v2, &api.v2("v1.33.0").expect("v2")));
}
