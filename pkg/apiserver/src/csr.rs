//! CertificateSigningRequests (certificates.k8s.io/v1) as upstream's registry strategy and
//! certificate admission plugins treat them: the requester's identity is written into the
//! spec on create; the spec never changes afterwards; `/approval` changes only the
//! conditions, `/status` everything in status but the Approved/Denied conditions; the request,
//! usages, signer name, expiration and conditions are validated; approving needs `approve` and
//! issuing a certificate `sign` on `signers` (the signer name or `<domain>/*`), and the
//! `kube-apiserver-client` signer never issues certificates in `system:masters`.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::rbac::Attributes;
use base64::Engine;
use kubox_core::meta;
use serde_json::{Value, json};

/// The signer whose certificates authenticate to the API server.
const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The signer v1beta1 defaulted to; not accepted through v1.
const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// True for the CertificateSigningRequest resource.
pub fn is_csr(ctx: &Ctx) -> bool {
    ctx.def.group == "certificates.k8s.io" && ctx.def.plural == "certificatesigningrequests"
}

/// On create: the spec records who asked (whatever the client sent there).
pub fn prepare_create(ctx: &Ctx, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let u = &ctx.user;
    for f in ["username", "uid", "groups", "extra"] {
        spec.remove(f);
    }
    spec.insert("username".into(), json!(u.name));
    if !u.uid.is_empty() {
        spec.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        spec.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        spec.insert("extra".into(), json!(u.extra));
    }
}

/// On update: the spec is the stored one; `/approval` takes only the new conditions,
/// `/status` keeps the stored Approved/Denied conditions; condition timestamps are filled.
pub fn prepare_update(sub: Option<&str>, old: &Value, new: &mut Value) {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    match sub {
        Some("approval") => {
            let conditions = new.pointer("/status/conditions").cloned();
            let mut status = old.get("status").cloned().unwrap_or(json!({}));
            match conditions {
                Some(c) if !c.is_null() => status["conditions"] = c,
                _ => {
                    if let Some(m) = status.as_object_mut() {
                        m.remove("conditions");
                    }
                }
            }
            new["status"] = status;
        }
        Some("status") => {
            let mut conditions = conditions(new).to_vec();
            for t in ["Approved", "Denied"] {
                conditions.retain(|c| c["type"] != t);
                conditions.extend(conditions_of(old).filter(|c| c["type"] == t).cloned());
            }
            if !conditions.is_empty() || new.pointer("/status/conditions").is_some() {
                if !new.get("status").is_some_and(Value::is_object) {
                    new["status"] = json!({});
                }
                new["status"]["conditions"] = json!(conditions);
            }
        }
        _ => return,
    }
    // populateConditionTimestamps
    let now = meta::now_rfc3339();
    let olds: Vec<Value> = conditions(old).to_vec();
    if let Some(cs) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            if c.get("lastUpdateTime").is_none_or(Value::is_null) {
                c["lastUpdateTime"] = json!(now);
            }
            if c.get("lastTransitionTime").is_none_or(Value::is_null) {
                let same = olds
                    .iter()
                    .find(|o| o["type"] == c["type"] && o["status"] == c["status"]);
                c["lastTransitionTime"] = same
                    .and_then(|o| o.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(now));
            }
        }
    }
}

fn conditions(obj: &Value) -> &[Value] {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn conditions_of(obj: &Value) -> impl Iterator<Item = &Value> {
    conditions(obj).iter()
}

fn bytes_field(obj: &Value, ptr: &str) -> Result<Vec<u8>, String> {
    match obj.pointer(ptr).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("illegal base64 data: {e}")),
    }
}

/// Upstream's validation of a CSR (create, update and both subresources).
pub fn validate(obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs: Vec<(String, String, String)> = Vec::new();
    let mut push = |reason: &str, field: String, msg: String| {
        errs.push((reason.to_string(), field, msg));
    };
    match bytes_field(obj, "/spec/request") {
        Err(e) => push(
            "FieldValueInvalid",
            "spec.request".into(),
            format!("Invalid value: \"<request data>\": {e}"),
        ),
        Ok(req) => {
            if let Err(e) = kubox_pki::csr::parse_csr(&req) {
                push(
                    "FieldValueInvalid",
                    "spec.request".into(),
                    format!("Invalid value: \"<request data>\": {e}"),
                );
            }
        }
    }
    let usages: Vec<&Value> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().collect())
        .unwrap_or_default();
    if usages.is_empty() {
        push(
            "FieldValueRequired",
            "spec.usages".into(),
            "Required value".into(),
        );
    }
    let mut seen = Vec::new();
    for (i, u) in usages.iter().enumerate() {
        let s = u.as_str().unwrap_or_default();
        if !kubox_pki::csr::KEY_USAGES.contains(&s) {
            let supported = kubox_pki::csr::KEY_USAGES
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            push(
                "FieldValueNotSupported",
                format!("spec.usages[{i}]"),
                format!("Unsupported value: {u}: supported values: {supported}"),
            );
        } else if seen.contains(&s) {
            push(
                "FieldValueDuplicate",
                format!("spec.usages[{i}]"),
                format!("Duplicate value: {u}"),
            );
        }
        seen.push(s);
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if signer == LEGACY_UNKNOWN && old.is_none() {
        push(
            "FieldValueInvalid",
            "spec.signerName".into(),
            format!(
                "Invalid value: {signer:?}: the legacy signerName is not allowed via this API version"
            ),
        );
    } else if let Some(e) = signer_name_error(signer) {
        push(e.0, "spec.signerName".into(), e.1);
    }
    if let Some(secs) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && secs < 600
    {
        push(
            "FieldValueInvalid",
            "spec.expirationSeconds".into(),
            format!(
                "Invalid value: {secs}: may not specify a duration less than 600 seconds (10 minutes)"
            ),
        );
    }
    let (mut approved, mut denied) = (false, false);
    let mut types: Vec<&str> = Vec::new();
    for (i, c) in conditions(obj).iter().enumerate() {
        let t = c["type"].as_str().unwrap_or_default();
        let status = c["status"].as_str().unwrap_or_default();
        let path = format!("status.conditions[{i}]");
        if t.is_empty() {
            push(
                "FieldValueRequired",
                format!("{path}.type"),
                "Required value".into(),
            );
        }
        if !matches!(status, "True" | "False" | "Unknown") {
            push(
                "FieldValueNotSupported",
                format!("{path}.status"),
                format!(
                    "Unsupported value: {status:?}: supported values: \"False\", \"True\", \"Unknown\""
                ),
            );
        } else if matches!(t, "Approved" | "Denied" | "Failed") && status != "True" {
            push(
                "FieldValueNotSupported",
                format!("{path}.status"),
                format!("Unsupported value: {status:?}: supported values: \"True\""),
            );
        }
        let exclusive = (t == "Approved" && denied) || (t == "Denied" && approved);
        if exclusive {
            push(
                "FieldValueInvalid",
                format!("{path}.type"),
                format!(
                    "Invalid value: {t:?}: Approved and Denied conditions are mutually exclusive"
                ),
            );
        }
        approved |= t == "Approved";
        denied |= t == "Denied";
        if types.contains(&t) {
            push(
                "FieldValueDuplicate",
                format!("{path}.type"),
                format!("Duplicate value: {t:?}"),
            );
        }
        types.push(t);
    }
    let cert = bytes_field(obj, "/status/certificate");
    match &cert {
        Err(e) => push(
            "FieldValueInvalid",
            "status.certificate".into(),
            format!("Invalid value: \"<certificate data>\": {e}"),
        ),
        Ok(c) => {
            if let Err(e) = kubox_pki::csr::check_certificate_bundle(c) {
                push(
                    "FieldValueInvalid",
                    "status.certificate".into(),
                    format!("Invalid value: \"<certificate data>\": {e}"),
                );
            }
        }
    }
    if let Some(old) = old {
        for t in ["Approved", "Denied", "Failed"] {
            let n = |o: &Value| conditions(o).iter().filter(|c| c["type"] == t).count();
            if n(obj) < n(old) {
                push(
                    "FieldValueForbidden",
                    "status.conditions".into(),
                    format!("Forbidden: updates may not remove a condition of type {t:?}"),
                );
            }
        }
        let old_cert = bytes_field(old, "/status/certificate").unwrap_or_default();
        if let Ok(new_cert) = &cert
            && *new_cert != old_cert
        {
            if !old_cert.is_empty() {
                push(
                    "FieldValueForbidden",
                    "status.certificate".into(),
                    "Forbidden: updates may not modify existing certificate content".into(),
                );
            } else if !approved {
                push(
                    "FieldValueInvalid",
                    "status.certificate".into(),
                    "Invalid value: \"<certificate data>\": certificate issuance requires the Approved condition".into(),
                );
            } else if conditions(obj).iter().any(|c| c["type"] == "Failed") {
                push(
                    "FieldValueInvalid",
                    "status.certificate".into(),
                    "Invalid value: \"<certificate data>\": certificate issuance is not allowed for a Failed request".into(),
                );
            }
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        "CertificateSigningRequest",
        "certificates.k8s.io",
        meta::name(obj).unwrap_or_default(),
        errs,
    ))
}

/// Upstream's ValidateSignerName: `<domain>/<path>`, the domain a DNS subdomain.
fn signer_name_error(name: &str) -> Option<(&'static str, String)> {
    if name.is_empty() {
        return Some(("FieldValueRequired", "Required value".into()));
    }
    let invalid = |why: &str| {
        Some((
            "FieldValueInvalid",
            format!("Invalid value: {name:?}: {why}"),
        ))
    };
    let Some((domain, path)) = name.split_once('/') else {
        return invalid(
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
    };
    if !kubox_core::names::is_dns1123_subdomain(domain) || !domain.contains('.') {
        return invalid("should be a domain with at least two segments separated by dots");
    }
    if path.is_empty() || path.len() > 571 {
        return invalid("validating path: must be a non-empty path of at most 571 characters");
    }
    None
}

/// The certificate admission plugins: CertificateApproval (`/approval` needs `approve` on
/// the signer), CertificateSigning (a new `status.certificate` needs `sign`) and
/// CertificateSubjectRestriction (no `system:masters` through `kube-apiserver-client`).
pub fn admit(ctx: &Ctx, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = meta::name(obj).unwrap_or_default();
    match (ctx.info.subresource.as_deref(), old) {
        (None, None) if signer == KUBE_APISERVER_CLIENT => {
            let req = bytes_field(obj, "/spec/request").unwrap_or_default();
            if let Ok(subject) = kubox_pki::csr::parse_csr(&req)
                && subject.organizations.iter().any(|o| o == "system:masters")
            {
                return Err(forbidden(
                    ctx,
                    name,
                    &format!(
                        "use of {KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed"
                    ),
                ));
            }
            Ok(())
        }
        (Some("approval"), Some(_)) => authorized_for_signer(ctx, name, signer, "approve"),
        (Some("status"), Some(old)) => {
            if obj.pointer("/status/certificate") != old.pointer("/status/certificate") {
                authorized_for_signer(ctx, name, signer, "sign")
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// upstream's isAuthorizedForSignerName: the verb on `signers/<name>` or `signers/<domain>/*`.
fn authorized_for_signer(ctx: &Ctx, name: &str, signer: &str, verb: &str) -> ApiResult<()> {
    let attrs = |n: &str| Attributes::resource(verb, "certificates.k8s.io", "signers", "", "", n);
    let wildcard = signer
        .split_once('/')
        .map(|(d, _)| format!("{d}/*"))
        .unwrap_or_default();
    let allowed = crate::authz::decide(&ctx.state, &ctx.user, &attrs(signer)).allowed
        || crate::authz::decide(&ctx.state, &ctx.user, &attrs(&wildcard)).allowed;
    if allowed {
        return Ok(());
    }
    Err(forbidden(
        ctx,
        name,
        &format!("user not permitted to {verb} requests with signerName {signer:?}"),
    ))
}

/// Admission's 403: `certificatesigningrequests.certificates.k8s.io "x" is forbidden: why`.
fn forbidden(ctx: &Ctx, name: &str, why: &str) -> ApiError {
    let base = crate::admission::forbidden_on(ctx, name);
    ApiError::forbidden(format!("{}: {why}", base.message))
        .with_details(base.details.unwrap_or_default())
}
