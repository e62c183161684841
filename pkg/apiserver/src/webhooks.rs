//! Dynamic admission: MutatingWebhookConfigurations and ValidatingWebhookConfigurations (held
//! in memory, a [`crate::mirror`]), called as upstream calls them: `admission.k8s.io/v1`
//! AdmissionReviews over HTTPS to a URL or a Service (resolved to a ready endpoint of its
//! EndpointSlices, the certificate verified as `<service>.<namespace>.svc` against the
//! configured `caBundle`), rules matched by operation/group/version/resource/scope,
//! namespace and object selectors, `timeoutSeconds` (default 10), `failurePolicy` (default
//! Fail), `sideEffects` on dry runs, JSONPatch responses from mutating webhooks, warnings.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kubox_core::selectors::LabelSelector;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const PREFIX: &str = "/registry/admissionregistration.k8s.io/";
const MUTATING: &str = "mutatingwebhookconfigurations/";
const VALIDATING: &str = "validatingwebhookconfigurations/";

/// The webhook configurations of the cluster.
#[derive(Default)]
pub struct Webhooks {
    /// (mutating?, configuration name) -> configuration.
    configs: RwLock<BTreeMap<(bool, String), Arc<Value>>>,
}

impl crate::mirror::Mirror for Webhooks {
    const PREFIXES: &'static [&'static str] = &[PREFIX];
    const WHAT: &'static str = "admission webhooks";
    fn apply(&self, key: &str, obj: Option<&Value>) {
        let rest = key.strip_prefix(PREFIX).unwrap_or_default();
        let (mutating, name) = if let Some(n) = rest.strip_prefix(MUTATING) {
            (true, n)
        } else if let Some(n) = rest.strip_prefix(VALIDATING) {
            (false, n)
        } else {
            return;
        };
        if let Ok(mut m) = self.configs.write() {
            match obj {
                Some(o) => m.insert((mutating, name.to_string()), Arc::new(o.clone())),
                None => m.remove(&(mutating, name.to_string())),
            };
        }
    }
    fn clear(&self) {
        if let Ok(mut m) = self.configs.write() {
            m.clear();
        }
    }
}

impl Webhooks {
    /// The webhooks of one type, in configuration-name order.
    fn of(&self, mutating: bool) -> Vec<Value> {
        let Ok(m) = self.configs.read() else {
            return Vec::new();
        };
        m.iter()
            .filter(|((mu, _), _)| *mu == mutating)
            .flat_map(|(_, c)| c["webhooks"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn list_has(list: &Value, v: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|x| x == "*" || x == v))
}

/// Whether one of `hook`'s rules covers this request.
fn rules_match(hook: &Value, ctx: &Ctx, operation: &str) -> bool {
    let sub = ctx.info.subresource.as_deref().unwrap_or_default();
    let plural = &ctx.def.plural;
    hook["rules"].as_array().into_iter().flatten().any(|r| {
        let resource_ok = r["resources"].as_array().is_some_and(|res| {
            res.iter().filter_map(Value::as_str).any(|x| {
                if sub.is_empty() {
                    x == "*" || x == plural
                } else {
                    x == "*/*"
                        || x == format!("{plural}/{sub}")
                        || x == format!("*/{sub}")
                        || x == format!("{plural}/*")
                }
            })
        });
        let scope_ok = match r["scope"].as_str().unwrap_or("*") {
            "Cluster" => !ctx.def.namespaced,
            "Namespaced" => ctx.def.namespaced,
            _ => true,
        };
        list_has(&r["operations"], operation)
            && list_has(&r["apiGroups"], &ctx.def.group)
            && list_has(&r["apiVersions"], &ctx.def.version)
            && resource_ok
            && scope_ok
    })
}

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if !sel.is_object() {
        return true;
    }
    let Ok(s) = LabelSelector::from_object(sel) else {
        return false;
    };
    s.matches_object(&json!({"metadata": {"labels": labels}}))
}

/// Namespace and object selectors (upstream: the namespace's labels for namespaced objects,
/// the object's own for Namespaces; the new object's labels, or the old one's).
async fn selectors_match(hook: &Value, ctx: &Ctx, obj: &Value, old: Option<&Value>) -> bool {
    let labels = |o: Option<&Value>| {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .cloned()
            .unwrap_or(json!({}))
    };
    let obj_sel = &hook["objectSelector"];
    if !selector_matches(obj_sel, &labels(Some(obj)))
        && !old.is_some_and(|o| selector_matches(obj_sel, &labels(Some(o))))
    {
        return false;
    }
    let ns_sel = &hook["namespaceSelector"];
    if !ns_sel.is_object() {
        return true;
    }
    if ctx.def.group.is_empty() && ctx.def.plural == "namespaces" {
        return selector_matches(ns_sel, &labels(Some(obj)));
    }
    let Some(ns) = ctx.namespace() else {
        return true;
    };
    let ns_obj = crate::storage::get_stored(&ctx.state, "core/namespaces", None, ns)
        .await
        .ok()
        .flatten();
    selector_matches(ns_sel, &labels(ns_obj.as_ref()))
}

/// Where to send a webhook's review: (host to connect to, port, name to verify, path).
async fn target(ctx: &Ctx, client: &Value) -> Result<(String, u16, String, String), String> {
    if let Some(url) = client["url"].as_str() {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("webhook URL {url:?} is not https"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in {url:?}"))?,
            ),
            _ => (authority.to_string(), 443),
        };
        return Ok((host.clone(), port, host, path.to_string()));
    }
    let svc = &client["service"];
    let (ns, name) = (
        svc["namespace"].as_str().unwrap_or_default(),
        svc["name"].as_str().unwrap_or_default(),
    );
    let port = svc["port"].as_u64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/").to_string();
    let service = crate::storage::get_stored(&ctx.state, "core/services", Some(ns), name)
        .await
        .map_err(|e| e.message)?
        .ok_or_else(|| format!("service \"{ns}/{name}\" not found"))?;
    let sp = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(port))
        .cloned()
        .ok_or_else(|| format!("service \"{ns}/{name}\" has no port {port}"))?;
    let port_name = sp["name"].as_str().unwrap_or_default();
    let slices = ctx
        .state
        .store
        .list(
            &format!(
                "{}discovery.k8s.io/endpointslices/{ns}/",
                crate::storage::PREFIX
            ),
            None,
            None,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    for kv in &slices.items {
        let Ok(slice) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if slice.pointer("/metadata/labels/kubernetes.io~1service-name") != Some(&json!(name)) {
            continue;
        }
        let Some(target_port) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false));
        if let Some(addr) = ready.and_then(|e| e["addresses"][0].as_str()) {
            return Ok((
                addr.to_string(),
                target_port,
                format!("{name}.{ns}.svc"),
                path,
            ));
        }
    }
    Err(format!(
        "no endpoints available for service \"{ns}/{name}\""
    ))
}

/// Sends one review; returns the webhook's `response`.
async fn call(ctx: &Ctx, hook: &Value, review: &Value) -> Result<Value, String> {
    let client = &hook["clientConfig"];
    let ca = client["caBundle"]
        .as_str()
        .and_then(|b| B64.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .ok_or("the webhook has no caBundle")?;
    let tls = kubox_pki::client::tls_config(Some(&ca)).map_err(|e| e.to_string())?;
    let (host, port, server_name, path) = target(ctx, client).await?;
    let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
    let req = http::Request::post(&path)
        .header(http::header::HOST, format!("{server_name}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(review.to_string().into_bytes())
        .map_err(|e| e.to_string())?;
    let (status, body) =
        kubox_pki::client::request(&host, port, &server_name, Arc::new(tls), req, timeout)
            .await
            .map_err(|e| format!("Post \"https://{server_name}:{port}{path}\": {e}"))?;
    if status != 200 {
        return Err(format!("the server responded with status {status}"));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the response is not an AdmissionReview: {e}"))?;
    let response = answer
        .get("response")
        .cloned()
        .ok_or("the AdmissionReview has no response")?;
    if response["uid"] != review["request"]["uid"] {
        return Err("the response uid does not match the request".into());
    }
    Ok(response)
}

fn user_info(ctx: &Ctx) -> Value {
    let u = &ctx.user;
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// Runs the matching webhooks of one type for a write of `obj` (CREATE, UPDATE, DELETE with
/// `old`); mutating ones may change `obj`. Returns whether anything was patched.
pub async fn admit(
    ctx: &Ctx,
    mutating: bool,
    operation: &str,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<bool> {
    let hooks = ctx.state.webhooks.of(mutating);
    if hooks.is_empty() {
        return Ok(false);
    }
    let mut patched = false;
    for hook in hooks {
        let hook_name = hook["name"].as_str().unwrap_or_default().to_string();
        if !rules_match(&hook, ctx, operation) || !selectors_match(&hook, ctx, obj, old).await {
            continue;
        }
        if !list_has(&hook["admissionReviewVersions"], "v1") {
            return Err(ApiError::internal(format!(
                "failed calling webhook {hook_name:?}: none of the admissionReviewVersions is v1"
            )));
        }
        let side_effects = hook["sideEffects"].as_str().unwrap_or("Unknown");
        if dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(ApiError::bad_request(format!(
                "admission webhook {hook_name:?} does not support dry run"
            )));
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let sub = ctx.info.subresource.clone().unwrap_or_default();
        let mut request = json!({
            "uid": uid,
            "kind": {"group": ctx.def.group, "version": ctx.def.version, "kind": ctx.def.kind},
            "resource": {"group": ctx.def.group, "version": ctx.def.version, "resource": ctx.def.plural},
            "requestKind": {"group": ctx.def.group, "version": ctx.def.version, "kind": ctx.def.kind},
            "requestResource": {"group": ctx.def.group, "version": ctx.def.version, "resource": ctx.def.plural},
            "name": kubox_core::meta::name(obj).or_else(|| old.and_then(kubox_core::meta::name)).unwrap_or_default(),
            "operation": operation,
            "userInfo": user_info(ctx),
            "object": if operation == "DELETE" { Value::Null } else { obj.clone() },
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": dry_run,
        });
        if !sub.is_empty() {
            request["subResource"] = json!(sub);
            request["requestSubResource"] = json!(sub);
        }
        if let Some(ns) = ctx.namespace() {
            request["namespace"] = json!(ns);
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let response = match call(ctx, &hook, &review).await {
            Ok(r) => r,
            Err(e) => {
                if hook["failurePolicy"] == "Ignore" {
                    tracing::warn!(webhook = %hook_name, error = %e, "calling an admission webhook failed; ignored by its failurePolicy");
                    continue;
                }
                return Err(ApiError::internal(format!(
                    "Internal error occurred: failed calling webhook {hook_name:?}: failed to call webhook: {e}"
                )));
            }
        };
        if let (Some(w), Ok(mut all)) = (response["warnings"].as_array(), ctx.warnings.lock()) {
            all.extend(w.iter().filter_map(|x| x.as_str().map(String::from)));
        }
        if response["allowed"] != true {
            let status = &response["status"];
            let code = status["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(403);
            let msg = status["message"].as_str().unwrap_or_default();
            let reason = match code {
                400 => "BadRequest",
                401 => "Unauthorized",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                429 => "TooManyRequests",
                500..=599 => "InternalError",
                _ => "Forbidden",
            };
            let text = if msg.is_empty() {
                format!("admission webhook {hook_name:?} denied the request without explanation")
            } else {
                format!("admission webhook {hook_name:?} denied the request: {msg}")
            };
            return Err(ApiError::new(code, reason, text));
        }
        if mutating && let Some(p) = response["patch"].as_str() {
            if response["patchType"] != "JSONPatch" {
                return Err(ApiError::internal(format!(
                    "failed calling webhook {hook_name:?}: unsupported patchType {}",
                    response["patchType"]
                )));
            }
            let patch = B64.decode(p).map_err(|_| {
                ApiError::internal(format!(
                    "failed calling webhook {hook_name:?}: the patch is not base64"
                ))
            })?;
            *obj = kubox_patch::json_patch(obj, &patch).map_err(|e| {
                ApiError::internal(format!(
                    "failed calling webhook {hook_name:?}: applying its patch: {e}"
                ))
            })?;
            patched = true;
        }
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_default_to_everything() {
        assert!(selector_matches(&Value::Null, &json!({})));
        let sel = json!({"matchLabels": {"team": "a"}});
        assert!(selector_matches(&sel, &json!({"team": "a"})));
        assert!(!selector_matches(&sel, &json!({"team": "b"})));
        let expr = json!({"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&expr, &json!({})));
        assert!(!selector_matches(&expr, &json!({"skip": "1"})));
    }
}
