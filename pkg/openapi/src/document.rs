//! The `paths` of one group-version document, shaped like upstream's.

use serde_json::{Map, Value, json};

use crate::Res;
use crate::schema::{Schemas, gvk, reference};
use crate::types;

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, `` → `Core`.
fn group_camel(group: &str) -> String {
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    if trimmed.is_empty() {
        return "Core".into();
    }
    trimmed
        .split(['.', '-'])
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

fn version_camel(version: &str) -> String {
    let mut c = version.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut c = camel.chars();
    let lower: String = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

fn query(name: &str, description: &str, ty: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty, "uniqueItems": true } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "description": description, "required": true, "schema": { "type": "string", "uniqueItems": true } })
}

fn pretty() -> Value {
    query(
        "pretty",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
        "string",
    )
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        "string",
    )
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        "string",
    )
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        "string",
    )
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![dry_run(), field_manager(), field_validation()];
    if patch {
        params.push(query("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.", "boolean"));
    }
    params
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.",
            "integer",
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.",
            "boolean",
        ),
        query(
            "orphanDependents",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.",
            "boolean",
        ),
        query(
            "propagationPolicy",
            "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background' and 'Foreground'.",
            "string",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
            "boolean",
        ),
        query(
            "continue",
            "The continue option should be set when retrieving more results from the server.",
            "string",
        ),
        query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
            "string",
        ),
        query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
            "string",
        ),
        query(
            "limit",
            "limit is a maximum number of responses to return for a list call.",
            "integer",
        ),
        query(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
            "string",
        ),
        query(
            "resourceVersionMatch",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
            "string",
        ),
        query(
            "sendInitialEvents",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
            "boolean",
        ),
        query(
            "timeoutSeconds",
            "Timeout for the list/watch call.",
            "integer",
        ),
        query(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
            "boolean",
        ),
    ]
}

fn content(schema: &str, types: &[&str]) -> Value {
    let mut map = Map::new();
    for t in types {
        map.insert((*t).into(), json!({ "schema": reference(schema) }));
    }
    Value::Object(map)
}

const RESPONSE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

fn response(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": content(schema, RESPONSE_TYPES) })
}

struct Op<'a> {
    action: &'a str,
    id: String,
    description: String,
    gvk: Value,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(&'a str, Value)>,
    tag: &'a str,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag]));
        op.insert("description".into(), self.description.into());
        op.insert("operationId".into(), self.id.into());
        if !self.params.is_empty() {
            op.insert("parameters".into(), Value::Array(self.params));
        }
        if let Some(body) = self.body {
            op.insert("requestBody".into(), body);
        }
        let mut responses = Map::new();
        for (code, r) in self.responses {
            responses.insert(code.into(), r);
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), self.action.into());
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk);
        Value::Object(op)
    }
}

fn body(schema: &str) -> Value {
    json!({ "content": content(schema, &["*/*"]), "required": true })
}

fn patch_body(custom: bool) -> Value {
    let mut types = vec![
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if !custom {
        types.push("application/strategic-merge-patch+json");
    }
    json!({ "content": content(types::PATCH, &types), "required": true })
}

/// Subresources that stream or proxy instead of returning an object.
const CONNECT: &[&str] = &["attach", "exec", "log", "portforward", "proxy"];

/// Builds the `paths` object of a group-version document.
pub(crate) fn paths(group: &str, version: &str, resources: &[Res], schemas: &Schemas) -> Value {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let gv_camel = format!("{}{}", group_camel(group), version_camel(version));
    let tag = tag(group, version);
    let mut paths = Map::new();
    let discovery = Op {
        action: "get",
        id: format!("get{gv_camel}APIResources"),
        description: "get available resources".into(),
        gvk: Value::Null,
        params: vec![],
        body: None,
        responses: vec![("200", response("OK", types::API_RESOURCE_LIST))],
        tag: &tag,
    };
    let mut discovery = discovery.into_value();
    if let Value::Object(m) = &mut discovery {
        m.remove("x-kubernetes-action");
        m.remove("x-kubernetes-group-version-kind");
    }
    paths.insert(format!("{prefix}/"), json!({ "get": discovery }));

    for r in resources {
        let key = (r.group.clone(), r.version.clone(), r.kind.clone());
        let Some(schema) = schemas.kinds.get(&key) else {
            continue;
        };
        let list_schema = format!("{schema}List");
        let has_list = schemas.schemas.contains_key(&list_schema);
        let the_gvk = gvk(&r.group, &r.version, &r.kind);
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let kind = &r.kind;
        let id = |verb: &str, suffix: &str| format!("{verb}{gv_camel}{ns}{kind}{suffix}");
        let mut common = vec![pretty()];
        if r.namespaced {
            common.insert(
                0,
                path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                ),
            );
        }
        let op = |action: &'static str, id: String, description: String, gvk: Value| Op {
            action,
            id,
            description,
            gvk,
            params: vec![],
            body: None,
            responses: vec![],
            tag: &tag,
        };

        // Collection.
        let mut collection = Map::new();
        if r.has("list") && has_list {
            let mut o = op(
                "list",
                id("list", ""),
                format!("list or watch objects of kind {kind}"),
                the_gvk.clone(),
            );
            o.params = list_params();
            o.responses.push(("200", response("OK", &list_schema)));
            collection.insert("get".into(), o.into_value());
        }
        if r.has("create") {
            let mut o = op(
                "post",
                id("create", ""),
                format!("create a {kind}"),
                the_gvk.clone(),
            );
            o.params = write_params(false);
            o.body = Some(body(schema));
            o.responses.extend([
                ("200", response("OK", schema)),
                ("201", response("Created", schema)),
                ("202", response("Accepted", schema)),
            ]);
            collection.insert("post".into(), o.into_value());
        }
        if r.has("deletecollection") {
            let mut o = op(
                "deletecollection",
                id("deleteCollection", ""),
                format!("delete collection of {kind}"),
                the_gvk.clone(),
            );
            o.params = delete_params();
            o.params.extend(list_params());
            o.body = Some(body(types::DELETE_OPTIONS));
            o.responses.push(("200", response("OK", types::STATUS)));
            collection.insert("delete".into(), o.into_value());
        }
        if !collection.is_empty() {
            collection.insert("parameters".into(), Value::Array(common.clone()));
            paths.insert(base.clone(), Value::Object(collection));
        }
        if r.namespaced && r.has("list") && has_list {
            let mut o = op(
                "list",
                format!("list{gv_camel}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                the_gvk.clone(),
            );
            o.params = list_params();
            o.responses.push(("200", response("OK", &list_schema)));
            paths.insert(
                format!("{prefix}/{}", r.plural),
                json!({ "get": o.into_value(), "parameters": [pretty()] }),
            );
        }

        // Item.
        let mut item_params = common.clone();
        item_params.insert(0, path_param("name", &format!("name of the {kind}")));
        let mut item = Map::new();
        if r.has("get") {
            let mut o = op(
                "get",
                id("read", ""),
                format!("read the specified {kind}"),
                the_gvk.clone(),
            );
            o.responses.push(("200", response("OK", schema)));
            item.insert("get".into(), o.into_value());
        }
        if r.has("update") {
            let mut o = op(
                "put",
                id("replace", ""),
                format!("replace the specified {kind}"),
                the_gvk.clone(),
            );
            o.params = write_params(false);
            o.body = Some(body(schema));
            o.responses.extend([
                ("200", response("OK", schema)),
                ("201", response("Created", schema)),
            ]);
            item.insert("put".into(), o.into_value());
        }
        if r.has("delete") {
            let mut o = op(
                "delete",
                id("delete", ""),
                format!("delete a {kind}"),
                the_gvk.clone(),
            );
            o.params = delete_params();
            o.body = Some(body(types::DELETE_OPTIONS));
            o.responses.extend([
                ("200", response("OK", types::STATUS)),
                ("202", response("Accepted", types::STATUS)),
            ]);
            item.insert("delete".into(), o.into_value());
        }
        if r.has("patch") {
            let mut o = op(
                "patch",
                id("patch", ""),
                format!("partially update the specified {kind}"),
                the_gvk.clone(),
            );
            o.params = write_params(true);
            o.body = Some(patch_body(r.custom.is_some()));
            o.responses.extend([
                ("200", response("OK", schema)),
                ("201", response("Created", schema)),
            ]);
            item.insert("patch".into(), o.into_value());
        }
        if !item.is_empty() {
            item.insert("parameters".into(), Value::Array(item_params.clone()));
            paths.insert(format!("{base}/{{name}}"), Value::Object(item));
        }

        // Subresources returning objects.
        for sub in &r.subresources {
            if CONNECT.contains(&sub.name.as_str()) {
                continue;
            }
            let (rg, rv, rk) = &sub.response;
            let Some(sub_schema) = schemas.kinds.get(&(rg.clone(), rv.clone(), rk.clone())) else {
                continue;
            };
            let sub_gvk = gvk(rg, rv, rk);
            let suffix = version_camel(&sub.name);
            let mut ops = Map::new();
            for verb in &sub.verbs {
                let (method, action, verb_id, o_params, body_schema) = match verb.as_str() {
                    "get" => ("get", "get", "read", vec![], None),
                    "update" => (
                        "put",
                        "put",
                        "replace",
                        write_params(false),
                        Some(body(sub_schema)),
                    ),
                    "patch" => (
                        "patch",
                        "patch",
                        "patch",
                        write_params(true),
                        Some(patch_body(r.custom.is_some())),
                    ),
                    "create" => (
                        "post",
                        "post",
                        "create",
                        write_params(false),
                        Some(body(sub_schema)),
                    ),
                    _ => continue,
                };
                let mut o = op(
                    action,
                    id(verb_id, &suffix),
                    format!("{verb} {} of the specified {kind}", sub.name),
                    sub_gvk.clone(),
                );
                o.params = o_params;
                o.body = body_schema;
                o.responses.push(("200", response("OK", sub_schema)));
                if method != "get" {
                    o.responses.push(("201", response("Created", sub_schema)));
                }
                ops.insert(method.into(), o.into_value());
            }
            if !ops.is_empty() {
                ops.insert("parameters".into(), Value::Array(item_params.clone()));
                paths.insert(format!("{base}/{{name}}/{}", sub.name), Value::Object(ops));
            }
        }
    }
    Value::Object(paths)
}
