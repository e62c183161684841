//! CertificateSigningRequests: upstream's `csrapproving` and `csrsigning` controllers.
//!
//! Approving: a pending `kubernetes.io/kube-apiserver-client-kubelet` request that is a valid
//! node client request is approved (`AutoApproved`) when a SubjectAccessReview for its
//! requester allows `create` on `certificatesigningrequests/selfnodeclient` (a node renewing
//! its own certificate: the requester is the request's common name) or
//! `certificatesigningrequests/nodeclient` (any node client request, e.g. from a bootstrap
//! token), as upstream's sarapprove. Everything else waits for someone to approve or deny it.
//!
//! Signing: an approved, not failed, not yet issued request for `kube-apiserver-client`,
//! `kube-apiserver-client-kubelet` (client CA) or `kubelet-serving` (server CA, as k3s) gets
//! `status.certificate`, valid for `expirationSeconds` capped at the signing duration. A
//! request breaking the signer's rules (subject, SANs, usages) gets a `Failed` condition
//! (`SignerValidationFailure`). Other signers, `legacy-unknown` included, are left alone. The
//! CA files are read at each signing (the `--cluster-signing-*` files of kube-controller-manager).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubox_pki::csr::{CsrSigner, CsrSubject};
use serde_json::{Value, json};

use crate::Error;

/// A CA certificate and key file pair.
#[derive(Debug, Clone)]
pub struct SignerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The signers' CA files (k3s: client CA for both client signers, server CA for serving) and
/// the longest validity issued (`--cluster-signing-duration`, one year by default).
#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub kube_apiserver_client: SignerFiles,
    pub kube_apiserver_client_kubelet: SignerFiles,
    pub kubelet_serving: SignerFiles,
    pub duration: Duration,
}

const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

struct Ctx {
    client: Client,
    signing: SigningConfig,
}

pub async fn run(client: Client, signing: SigningConfig) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        signing,
    });
    Controller::new(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t))
}

fn issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if issued(&csr) || has_condition(&csr, "Denied") || has_condition(&csr, "Failed") {
        return Ok(Action::await_change());
    }
    let Ok(subject) = kubox_pki::csr::parse_csr(&csr.spec.request.0) else {
        // The API server validated it; nothing either controller can do with it.
        return Ok(Action::await_change());
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if !has_condition(&csr, "Approved") {
        approve(&ctx, &csr, &subject, &usages).await?;
        return Ok(Action::await_change());
    }
    sign(&ctx, &csr, &subject, &usages).await?;
    Ok(Action::await_change())
}

/// upstream's sarapprove recognizers, most specific first.
async fn approve(
    ctx: &Ctx,
    csr: &CertificateSigningRequest,
    subject: &CsrSubject,
    usages: &[String],
) -> Result<(), Error> {
    if csr.spec.signer_name != KUBELET_CLIENT || kubelet_client_error(subject, usages).is_some() {
        return Ok(());
    }
    let self_node = csr.spec.username.as_deref() == Some(subject.common_name.as_str());
    let recognizers = [
        (
            self_node,
            "selfnodeclient",
            "Auto approving self kubelet client certificate after SubjectAccessReview.",
        ),
        (
            true,
            "nodeclient",
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        ),
    ];
    for (applies, sub, message) in recognizers {
        if !applies || !authorized(ctx, csr, sub).await? {
            continue;
        }
        let mut conditions = current_conditions(csr)?;
        conditions.push(json!({
            "type": "Approved",
            "status": "True",
            "reason": "AutoApproved",
            "message": message,
        }));
        write_status(ctx, csr, "approval", json!({"conditions": conditions})).await?;
        tracing::info!(csr = %csr.name_any(), "{message}");
        return Ok(());
    }
    Ok(())
}

fn current_conditions(csr: &CertificateSigningRequest) -> Result<Vec<Value>, Error> {
    let conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(serde_json::to_value)
        .transpose()?;
    Ok(match conditions {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    })
}

/// A SubjectAccessReview for the requester: `create` on `certificatesigningrequests/<sub>`.
async fn authorized(ctx: &Ctx, csr: &CertificateSigningRequest, sub: &str) -> Result<bool, Error> {
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(sub.into()),
                verb: Some("create".into()),
                version: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn sign(
    ctx: &Ctx,
    csr: &CertificateSigningRequest,
    subject: &CsrSubject,
    usages: &[String],
) -> Result<(), Error> {
    let s = &ctx.signing;
    let (files, problem) = match csr.spec.signer_name.as_str() {
        KUBE_APISERVER_CLIENT => (&s.kube_apiserver_client, apiserver_client_error(usages)),
        KUBELET_CLIENT => (
            &s.kube_apiserver_client_kubelet,
            kubelet_client_error(subject, usages),
        ),
        KUBELET_SERVING => (&s.kubelet_serving, kubelet_serving_error(subject, usages)),
        _ => return Ok(()),
    };
    if let Some(why) = problem {
        return fail(ctx, csr, &why).await;
    }
    let mut ttl = s.duration;
    if let Some(secs) = csr.spec.expiration_seconds
        && let Ok(secs) = u64::try_from(secs)
    {
        ttl = ttl.min(Duration::from_secs(secs));
    }
    let signer =
        CsrSigner::load(&files.cert, &files.key).map_err(|e| Error::invalid("signing CA", e))?;
    let pem = match signer.sign(&csr.spec.request.0, usages, ttl) {
        Ok(pem) => pem,
        // The request itself cannot be signed (e.g. a key type the signer does not support):
        // retrying cannot help.
        Err(kubox_pki::Error::InvalidInput(why)) => return fail(ctx, csr, &why).await,
        Err(e) => return Err(Error::invalid("certificate signing request", e)),
    };
    let cert = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    write_status(ctx, csr, "status", json!({"certificate": cert})).await?;
    tracing::info!(csr = %csr.name_any(), signer = %csr.spec.signer_name, "certificate issued");
    Ok(())
}

/// Marks the request `Failed` (`SignerValidationFailure`, as upstream's signer): it is never
/// looked at again.
async fn fail(ctx: &Ctx, csr: &CertificateSigningRequest, why: &str) -> Result<(), Error> {
    let mut conditions = current_conditions(csr)?;
    conditions.push(json!({
        "type": "Failed",
        "status": "True",
        "reason": "SignerValidationFailure",
        "message": why,
        "lastUpdateTime": kubox_core::meta::now_rfc3339(),
    }));
    write_status(ctx, csr, "status", json!({"conditions": conditions})).await
}

/// Merges `status` into the request through `subresource` (`status` or `approval`),
/// conditioned on the version read, so a concurrent writer's change is never lost.
async fn write_status(
    ctx: &Ctx,
    csr: &CertificateSigningRequest,
    subresource: &str,
    status: Value,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {"resourceVersion": csr.resource_version()},
        "status": status,
    });
    Api::<CertificateSigningRequest>::all(ctx.client.clone())
        .patch_subresource(
            subresource,
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

/// Usage sets as upstream compares them (order and duplicates do not matter).
fn usage_set(usages: &[String]) -> std::collections::BTreeSet<&str> {
    usages.iter().map(String::as_str).collect()
}

/// `kube-apiserver-client`: client auth required; digital signature and key encipherment
/// optional; nothing else.
fn apiserver_client_error(usages: &[String]) -> Option<String> {
    for u in usages {
        if !matches!(
            u.as_str(),
            "digital signature" | "key encipherment" | "client auth"
        ) {
            return Some(format!("invalid usage for client certificate: {u}"));
        }
    }
    (!usages.iter().any(|u| u == "client auth"))
        .then(|| "missing required usage for client certificate: client auth".to_string())
}

/// The usages a kubelet certificate must have exactly: `extra` plus digital signature, with
/// or without key encipherment (only RSA keys need it).
fn kubelet_usages_error(usages: &[String], extra: &str) -> Option<String> {
    let have = usage_set(usages);
    let without: std::collections::BTreeSet<&str> = ["digital signature", extra].into();
    let mut with = without.clone();
    with.insert("key encipherment");
    (have != without && have != with).then(|| {
        format!(
            "usages did not match [{}]",
            with.into_iter().collect::<Vec<_>>().join(" ")
        )
    })
}

fn node_subject_error(subject: &CsrSubject) -> Option<String> {
    if subject.organizations != ["system:nodes"] {
        return Some("subject organization is not system:nodes".into());
    }
    None
}

fn node_cn_error(subject: &CsrSubject) -> Option<String> {
    (!subject.common_name.starts_with("system:node:"))
        .then(|| "subject common name does not begin with system:node:".to_string())
}

/// upstream's ValidateKubeletClientCSR.
fn kubelet_client_error(subject: &CsrSubject, usages: &[String]) -> Option<String> {
    node_subject_error(subject)
        .or_else(|| {
            [
                (!subject.dns_names.is_empty(), "DNS"),
                (!subject.emails.is_empty(), "Email"),
                (!subject.ip_addresses.is_empty(), "IP"),
                (!subject.uris.is_empty(), "URI"),
            ]
            .into_iter()
            .find(|(has, _)| *has)
            .map(|(_, what)| format!("{what} subjectAltNames are not allowed"))
        })
        .or_else(|| node_cn_error(subject))
        .or_else(|| kubelet_usages_error(usages, "client auth"))
}

/// upstream's ValidateKubeletServingCSR.
fn kubelet_serving_error(subject: &CsrSubject, usages: &[String]) -> Option<String> {
    node_subject_error(subject)
        .or_else(|| {
            (subject.dns_names.is_empty() && subject.ip_addresses.is_empty())
                .then(|| "DNS or IP subjectAltName is required".to_string())
        })
        .or_else(|| {
            (!subject.emails.is_empty()).then(|| "Email subjectAltNames are not allowed".into())
        })
        .or_else(|| {
            (!subject.uris.is_empty()).then(|| "URI subjectAltNames are not allowed".into())
        })
        .or_else(|| node_cn_error(subject))
        .or_else(|| kubelet_usages_error(usages, "server auth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cn: &str, orgs: &[&str]) -> CsrSubject {
        CsrSubject {
            common_name: cn.into(),
            organizations: orgs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn u(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_client_rules() {
        let ok = node("system:node:n1", &["system:nodes"]);
        let usages = u(&["digital signature", "client auth"]);
        assert_eq!(kubelet_client_error(&ok, &usages), None);
        assert_eq!(
            kubelet_client_error(
                &ok,
                &u(&["client auth", "key encipherment", "digital signature"])
            ),
            None
        );
        assert_eq!(
            kubelet_client_error(&node("system:node:n1", &[]), &usages).as_deref(),
            Some("subject organization is not system:nodes")
        );
        assert_eq!(
            kubelet_client_error(&node("n1", &["system:nodes"]), &usages).as_deref(),
            Some("subject common name does not begin with system:node:")
        );
        assert_eq!(
            kubelet_client_error(&ok, &u(&["client auth"])).as_deref(),
            Some("usages did not match [client auth digital signature key encipherment]")
        );
        let mut with_dns = ok.clone();
        with_dns.dns_names.push("n1".into());
        assert_eq!(
            kubelet_client_error(&with_dns, &usages).as_deref(),
            Some("DNS subjectAltNames are not allowed")
        );
    }

    #[test]
    fn kubelet_serving_needs_a_san_and_server_auth() {
        let mut s = node("system:node:n1", &["system:nodes"]);
        let usages = u(&["digital signature", "server auth"]);
        assert_eq!(
            kubelet_serving_error(&s, &usages).as_deref(),
            Some("DNS or IP subjectAltName is required")
        );
        s.ip_addresses.push("10.0.0.1".parse().unwrap());
        assert_eq!(kubelet_serving_error(&s, &usages), None);
    }

    #[test]
    fn apiserver_client_usages() {
        assert_eq!(apiserver_client_error(&u(&["client auth"])), None);
        assert_eq!(
            apiserver_client_error(&u(&["digital signature"])).as_deref(),
            Some("missing required usage for client certificate: client auth")
        );
        assert_eq!(
            apiserver_client_error(&u(&["client auth", "server auth"])).as_deref(),
            Some("invalid usage for client certificate: server auth")
        );
    }
}
