//! Create-only access-control endpoints that are answered, never stored: TokenRequest
//! (`serviceaccounts/<name>/token`), TokenReview, SelfSubjectReview, SubjectAccessReview,
//! SelfSubjectAccessReview, LocalSubjectAccessReview and SelfSubjectRulesReview.

use crate::authn::User;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{Ctx, object_response};
use crate::rbac::Attributes;
use crate::request::decode_body;
use crate::tokens::BoundObject;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Shortest lifetime a TokenRequest may ask for (upstream: 10 minutes).
const MIN_EXPIRATION: i64 = 600;

fn user_info(u: &User) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A review object echoed back with `status` (and the kind/apiVersion of the request path).
fn answer(ctx: &Ctx, mut obj: Value, status: Value) -> ApiResult<Response> {
    obj["apiVersion"] = json!(ctx.def.api_version());
    obj["kind"] = json!(ctx.def.kind);
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = status;
    object_response(ctx, StatusCode::CREATED, obj)
}

/// POST to a review resource.
pub async fn create(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let obj = decode_body(ctx.content_type(), &body)?;
    match ctx.def.plural.as_str() {
        "tokenreviews" => token_review(ctx, obj).await,
        "selfsubjectreviews" => answer(ctx, obj, json!({"userInfo": user_info(&ctx.user)})),
        "subjectaccessreviews" => {
            let spec = &obj["spec"];
            let user = User {
                name: spec["user"].as_str().unwrap_or_default().into(),
                groups: strings(&spec["groups"]),
                uid: spec["uid"].as_str().unwrap_or_default().into(),
                extra: serde_json::from_value::<BTreeMap<String, Vec<String>>>(
                    spec["extra"].clone(),
                )
                .unwrap_or_default(),
            };
            if user.name.is_empty() && user.groups.is_empty() {
                return Err(invalid(
                    ctx,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            access_review(ctx, obj, &user, None)
        }
        "selfsubjectaccessreviews" => {
            let user = ctx.user.clone();
            access_review(ctx, obj, &user, None)
        }
        "localsubjectaccessreviews" => {
            let spec = &obj["spec"];
            let user = User {
                name: spec["user"].as_str().unwrap_or_default().into(),
                groups: strings(&spec["groups"]),
                uid: spec["uid"].as_str().unwrap_or_default().into(),
                extra: Default::default(),
            };
            let ns = ctx.info.namespace.clone().unwrap_or_default();
            access_review(ctx, obj, &user, Some(&ns))
        }
        "selfsubjectrulesreviews" => rules_review(ctx, obj),
        _ => Err(ApiError::method_not_allowed("create is not supported here")),
    }
}

fn invalid(ctx: &Ctx, field: &str, msg: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!(
            "{} \"\" is invalid: {field}: Invalid value: {msg}",
            ctx.def.kind
        ),
    )
    .with_details(json!({"group": ctx.def.group, "kind": ctx.def.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field}]}))
}

async fn token_review(ctx: &Ctx, obj: Value) -> ApiResult<Response> {
    let token = obj["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let audiences = strings(&obj["spec"]["audiences"]);
    let aud = (!audiences.is_empty()).then_some(audiences.as_slice());
    let status = match crate::authn::service_account_claims(&ctx.state, &token, aud).await {
        Ok(c) => json!({
            "authenticated": true,
            "user": user_info(&crate::authn::claims_user(&c)),
            "audiences": c.audiences,
        }),
        Err(why) => match (
            aud.is_none(),
            crate::authn::authenticate_token(&ctx.state, &token).await,
        ) {
            // Bootstrap tokens have no audiences; they answer only for the API audience.
            (true, Some(u)) if u.name.starts_with("system:bootstrap:") => json!({
                "authenticated": true,
                "user": user_info(&u),
                "audiences": ctx.state.config.token_signer.as_ref().map(|s| s.api_audiences.clone()).unwrap_or_default(),
            }),
            _ => json!({"user": {}, "error": format!("[invalid bearer token, {why}]")}),
        },
    };
    answer(ctx, obj, status)
}

fn access_review(
    ctx: &Ctx,
    obj: Value,
    user: &User,
    local_ns: Option<&str>,
) -> ApiResult<Response> {
    let spec = &obj["spec"];
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let mut ns = s("namespace");
        if let Some(local) = local_ns {
            if !ns.is_empty() && ns != local {
                return Err(invalid(
                    ctx,
                    "spec.resourceAttributes.namespace",
                    "must match metadata.namespace",
                ));
            }
            ns = local.to_string();
        }
        Attributes::resource(
            &s("verb"),
            &s("group"),
            &s("resource"),
            &s("subresource"),
            &ns,
            &s("name"),
        )
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        Attributes::non_resource(
            n["verb"].as_str().unwrap_or_default(),
            n["path"].as_str().unwrap_or_default(),
        )
    } else {
        return Err(invalid(
            ctx,
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let d = crate::authz::decide(&ctx.state, user, &attrs);
    let mut status = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    answer(ctx, obj, status)
}

fn rules_review(ctx: &Ctx, obj: Value) -> ApiResult<Response> {
    let ns = obj["spec"]["namespace"].as_str().unwrap_or_default();
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if ctx.user.in_group("system:masters") {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    for (_, rules) in ctx.state.rbac.rules_for(&ctx.user, ns) {
        for r in rules.iter() {
            if !r.resources.is_empty() {
                let mut v =
                    json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                if !r.resource_names.is_empty() {
                    v["resourceNames"] = json!(r.resource_names);
                }
                resource_rules.push(v);
            }
            if !r.non_resource_urls.is_empty() {
                non_resource_rules
                    .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
            }
        }
    }
    // Nodes are also authorized by the Node authorizer, whose rules are not listed.
    let incomplete = ctx.user.as_node().is_some();
    answer(
        ctx,
        obj,
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete}),
    )
}

/// POST serviceaccounts/<name>/token: a TokenRequest, answered with a signed token.
pub async fn token_request(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let mut obj = decode_body(ctx.content_type(), &body)?;
    let state = &ctx.state;
    let signer = state
        .config
        .token_signer
        .clone()
        .ok_or_else(|| ApiError::internal("no service-account signing key is configured"))?;
    let ns = ctx.info.namespace.clone().unwrap_or_default();
    let sa_name = ctx.name().to_string();
    let sa = crate::storage::get_stored(state, "core/serviceaccounts", Some(&ns), &sa_name)
        .await?
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", &sa_name))?;
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut audiences = strings(&spec["audiences"]);
    if audiences.is_empty() {
        audiences = signer.api_audiences.clone();
    }
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            ctx,
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes",
        ));
    }
    let mut bound = None;
    let mut node = None;
    if let Some(r) = spec.get("boundObjectRef").filter(|r| r.is_object()) {
        let kind = r["kind"].as_str().unwrap_or_default();
        let name = r["name"].as_str().unwrap_or_default();
        let (storage, namespaced) = match kind {
            "Pod" => ("core/pods", true),
            "Secret" => ("core/secrets", true),
            "Node" => ("core/nodes", false),
            _ => {
                return Err(invalid(
                    ctx,
                    "spec.boundObjectRef.kind",
                    &format!("{kind:?}: supported values: \"Pod\", \"Secret\", \"Node\""),
                ));
            }
        };
        let target =
            crate::storage::get_stored(state, storage, namespaced.then_some(ns.as_str()), name)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(&format!("{}s", kind.to_lowercase()), "", name)
                })?;
        let uid = target
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                &format!("{}s", kind.to_lowercase()),
                "",
                name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        if kind == "Pod" {
            let pod_sa = target
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with serviceaccount {pod_sa:?}"
                )));
            }
            // Pod-bound tokens also name the node the pod runs on, as upstream's do.
            if let Some(n) = target.pointer("/spec/nodeName").and_then(Value::as_str)
                && let Ok(Some(node_obj)) =
                    crate::storage::get_stored(state, "core/nodes", None, n).await
            {
                node = Some(BoundObject {
                    kind: "Node".into(),
                    name: n.into(),
                    uid: node_obj
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                });
            }
            // NodeRestriction: a node asks only for tokens of pods bound to it.
            if let Some(me) = ctx.user.as_node()
                && target.pointer("/spec/nodeName").and_then(Value::as_str) != Some(me)
            {
                return Err(ApiError::forbidden(format!(
                    "node {me:?} can only create tokens for pods bound to it"
                )));
            }
        }
        bound = Some(BoundObject {
            kind: kind.into(),
            name: name.into(),
            uid,
        });
    }
    if ctx.user.as_node().is_some() && bound.as_ref().is_none_or(|b| b.kind != "Pod") {
        return Err(ApiError::forbidden(
            "nodes can only create tokens bound to pods running on them",
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let mut claims = crate::tokens::bound_claims(
        &signer.issuer,
        &audiences,
        &ns,
        &sa_name,
        &sa_uid,
        bound.as_ref(),
        node.as_ref(),
        now,
        expiration,
    );
    // Upstream extends only pod-bound tokens for the API server's own audiences; the answer
    // still gives the asked expiry, which is when kubelets refresh them.
    if state.config.extend_token_expiration
        && expiration == crate::tokens::WARN_ONLY_EXPIRATION_SECONDS
        && bound.as_ref().is_some_and(|b| b.kind == "Pod")
        && audiences.iter().all(|a| signer.api_audiences.contains(a))
    {
        crate::tokens::extend_expiration(&mut claims);
    }
    let token = signer.sign(&claims)?;
    let exp = jiff::Timestamp::from_second(now + expiration)
        .map(kubox_core::meta::format_time)
        .unwrap_or_default();
    obj["apiVersion"] = json!("authentication.k8s.io/v1");
    obj["kind"] = json!("TokenRequest");
    obj["metadata"] = json!({"name": sa_name, "namespace": ns, "creationTimestamp": kubox_core::meta::now_rfc3339()});
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    obj["spec"] = spec;
    obj["status"] = json!({"token": token, "expirationTimestamp": exp});
    tracing::debug!(namespace = %ns, serviceaccount = %sa_name, "issued a service-account token");
    Ok(crate::handlers::json_response(StatusCode::CREATED, &obj))
}
