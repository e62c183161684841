//! Access control with real clients: service-account tokens from `kubectl create token`,
//! RBAC (403 for what is not granted, 401 for a bad token), `kubectl auth can-i/whoami`,
//! impersonation, escalation prevention, and aggregated ClusterRoles.
use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually, kubectl_path};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

/// kubectl authenticated only by `token` (no client certificate).
pub(crate) fn kubectl_token(s: &Server, version: &str, token: &str, args: &[&str]) -> Output {
    let cfg = s
        .dir
        .path()
        .join(format!("token-{}.kubeconfig", &token[token.len() - 8..]));
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            s.url(),
            ca.display()
        ),
    )
    .unwrap();
    s.command(kubectl_path(version))
        .args(args)
        .env("KUBECONFIG", &cfg)
        .env("HOME", s.dir.path())
        .output()
        .expect("run kubectl")
}

fn ok(out: &Output) -> Option<String> {
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn new_token(s: &Server, ns: &str, sa: &str) -> String {
    s.k(KUBECTL_NEW, &["-n", ns, "create", "token", sa])
        .trim()
        .to_string()
}

#[test]
fn a_service_account_token_gets_exactly_what_rbac_grants() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "dev"]);
    s.k(
        KUBECTL_NEW,
        &["-n", "dev", "create", "serviceaccount", "builder"],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "dev",
            "create",
            "configmap",
            "c1",
            "--from-literal=a=b",
        ],
    );
    let token = new_token(&s, "dev", "builder");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let out = kubectl_token(&s, v, &token, &["-n", "dev", "get", "configmaps"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(
                "configmaps is forbidden: User \"system:serviceaccount:dev:builder\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"dev\""
            ),
            "{v}: {}",
            stderr(&out)
        );
    }
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "dev",
            "create",
            "role",
            "cm-reader",
            "--verb=get,list,watch",
            "--resource=configmaps",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "dev",
            "create",
            "rolebinding",
            "builder-reads",
            "--role=cm-reader",
            "--serviceaccount=dev:builder",
        ],
    );
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let listed = eventually(Duration::from_secs(10), || {
            ok(&kubectl_token(
                &s,
                v,
                &token,
                &["-n", "dev", "get", "configmaps", "-o", "name"],
            ))
        })
        .expect("the binding grants list");
        assert!(listed.contains("configmap/c1"), "{listed}");
        // Only what the Role grants, only in its namespace.
        let e = stderr(&kubectl_token(
            &s,
            v,
            &token,
            &["-n", "default", "get", "configmaps"],
        ));
        assert!(e.contains("in the namespace \"default\""), "{e}");
        let e = stderr(&kubectl_token(
            &s,
            v,
            &token,
            &["-n", "dev", "delete", "configmap", "c1"],
        ));
        assert!(e.contains("cannot delete resource \"configmaps\""), "{e}");
        let e = stderr(&kubectl_token(
            &s,
            v,
            &token,
            &["-n", "dev", "get", "secrets"],
        ));
        assert!(e.contains("cannot list resource \"secrets\""), "{e}");
        let e = stderr(&kubectl_token(&s, v, &token, &["get", "nodes"]));
        assert!(e.contains("at the cluster scope"), "{e}");
        // Discovery works for every authenticated user.
        ok(&kubectl_token(
            &s,
            v,
            &token,
            &["api-resources", "--api-group=apps"],
        ))
        .expect("discovery is allowed");
        // auth can-i, as the token and by impersonation.
        let yes = kubectl_token(
            &s,
            v,
            &token,
            &["auth", "can-i", "list", "configmaps", "-n", "dev"],
        );
        assert_eq!(
            ok(&yes).as_deref().map(str::trim),
            Some("yes"),
            "{}",
            stderr(&yes)
        );
        let no = kubectl_token(
            &s,
            v,
            &token,
            &["auth", "can-i", "delete", "configmaps", "-n", "dev"],
        );
        assert!(!no.status.success());
        assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
        let admin_yes = s.k(
            v,
            &[
                "auth",
                "can-i",
                "get",
                "configmaps",
                "-n",
                "dev",
                "--as=system:serviceaccount:dev:builder",
            ],
        );
        assert_eq!(admin_yes.trim(), "yes");
        let admin_no = s.kubectl(
            v,
            &[
                "auth",
                "can-i",
                "get",
                "configmaps",
                "-n",
                "prod",
                "--as=system:serviceaccount:dev:builder",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&admin_no.stdout).trim(), "no");
        let list = ok(&kubectl_token(
            &s,
            v,
            &token,
            &["auth", "can-i", "--list", "-n", "dev"],
        ))
        .expect("can-i --list");
        assert!(list.contains("configmaps"), "{list}");
        assert!(
            list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
            "{list}"
        );
    }
    // whoami (SelfSubjectReview) names the service account and its groups.
    let who = ok(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &["auth", "whoami", "-o", "json"],
    ))
    .expect("whoami");
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:dev:builder"
    );
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts:dev"), "{groups}");
    assert!(groups.contains("system:authenticated"), "{groups}");

    // A token that is not ours is refused with 401; so is one of a deleted service account.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let e = stderr(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &forged,
        &["get", "configmaps", "-n", "dev"],
    ));
    assert!(e.contains("Unauthorized"), "{e}");
    s.k(
        KUBECTL_NEW,
        &["-n", "dev", "delete", "serviceaccount", "builder"],
    );
    let refused = eventually(Duration::from_secs(30), || {
        let out = kubectl_token(&s, KUBECTL_NEW, &token, &["-n", "dev", "get", "configmaps"]);
        stderr(&out).contains("Unauthorized").then_some(())
    });
    assert!(
        refused.is_some(),
        "the token of a deleted service account still works"
    );
}

#[test]
fn token_review_and_subject_access_review_answer_for_others() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "serviceaccount", "robot"]);
    let token = new_token(&s, "default", "robot");
    let review = s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        &format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
        ),
    );
    let review: Value = serde_json::from_str(&review).unwrap();
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let bad = s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"nope"}}"#,
    );
    let bad: Value = serde_json::from_str(&bad).unwrap();
    assert_ne!(bad["status"]["authenticated"], true, "{bad}");
    // Audience-scoped tokens are valid only for their audience.
    let scoped = s
        .k(
            KUBECTL_NEW,
            &["create", "token", "robot", "--audience=vault"],
        )
        .trim()
        .to_string();
    let e = stderr(&kubectl_token(&s, KUBECTL_NEW, &scoped, &["get", "pods"]));
    assert!(e.contains("Unauthorized"), "{e}");
    let review = s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        &format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{scoped}","audiences":["vault"]}}}}"#
        ),
    );
    let review: Value = serde_json::from_str(&review).unwrap();
    assert_eq!(review["status"]["audiences"][0], "vault", "{review}");

    let sar = |user: &str, verb: &str| -> Value {
        let out = s.k_in(
            KUBECTL_NEW,
            &["create", "-f", "-", "-o", "json"],
            &format!(
                r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{{"user":"{user}","groups":["system:authenticated"],"resourceAttributes":{{"namespace":"default","verb":"{verb}","resource":"pods"}}}}}}"#
            ),
        );
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(sar("carol", "list")["status"]["allowed"], false);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "clusterrolebinding",
            "carol-view",
            "--clusterrole=view",
            "--user=carol",
        ],
    );
    let allowed = eventually(Duration::from_secs(20), || {
        let r = sar("carol", "list");
        (r["status"]["allowed"] == true).then_some(r)
    })
    .expect("carol may list pods through view");
    assert!(
        allowed["status"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("carol-view"),
        "{allowed}"
    );
    assert_eq!(sar("carol", "delete")["status"]["allowed"], false);
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let s = Server::start();
    // The admin may impersonate; alice has no grants.
    let e = s.k_err(KUBECTL_NEW, &["get", "pods", "--as=alice"]);
    assert!(
        e.contains("User \"alice\" cannot list resource \"pods\""),
        "{e}"
    );
    s.k(KUBECTL_NEW, &["create", "serviceaccount", "agent"]);
    let token = new_token(&s, "default", "agent");
    let e = stderr(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &["get", "pods", "--as=alice"],
    ));
    assert!(
        e.contains("users \"alice\" is forbidden: User \"system:serviceaccount:default:agent\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{e}"
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "clusterrole",
            "impersonate-alice",
            "--verb=impersonate",
            "--resource=users",
            "--resource-name=alice",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "clusterrolebinding",
            "agent-as-alice",
            "--clusterrole=impersonate-alice",
            "--serviceaccount=default:agent",
        ],
    );
    let as_alice = eventually(Duration::from_secs(20), || {
        let out = kubectl_token(
            &s,
            KUBECTL_NEW,
            &token,
            &[
                "auth",
                "whoami",
                "--as=alice",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        ok(&out)
    })
    .expect("impersonating alice");
    assert_eq!(as_alice.trim(), "alice");
    let e = stderr(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &["get", "pods", "--as=bob"],
    ));
    assert!(e.contains("cannot impersonate resource \"users\""), "{e}");
}

#[test]
fn nobody_grants_permissions_they_do_not_hold() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "team"]);
    s.k(
        KUBECTL_NEW,
        &["-n", "team", "create", "serviceaccount", "lead"],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "team",
            "create",
            "role",
            "role-maker",
            "--verb=create,get,list",
            "--resource=roles,rolebindings,configmaps",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "team",
            "create",
            "rolebinding",
            "lead-makes-roles",
            "--role=role-maker",
            "--serviceaccount=team:lead",
        ],
    );
    let token = new_token(&s, "team", "lead");
    let attempt = |resource: &str| {
        kubectl_token(
            &s,
            KUBECTL_NEW,
            &token,
            &[
                "-n",
                "team",
                "create",
                "role",
                &format!("r-{resource}"),
                "--verb=get",
                &format!("--resource={resource}"),
            ],
        )
    };
    let held = eventually(Duration::from_secs(20), || ok(&attempt("configmaps")));
    assert!(held.is_some(), "granting a held permission is allowed");
    let e = stderr(&attempt("secrets"));
    assert!(
        e.contains("is attempting to grant RBAC permissions not currently held"),
        "{e}"
    );
    // Binding a ClusterRole with more than the lead holds is refused the same way.
    let e = stderr(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &[
            "-n",
            "team",
            "create",
            "rolebinding",
            "sneaky",
            "--clusterrole=admin",
            "--serviceaccount=team:lead",
        ],
    ));
    assert!(e.contains("forbidden"), "{e}");
}

#[test]
fn aggregated_cluster_roles_collect_labelled_roles() {
    let s = Server::start();
    let rules_of = |role: &str| -> String {
        s.k(
            KUBECTL_NEW,
            &["get", "clusterrole", role, "-o", "jsonpath={.rules}"],
        )
    };
    let view = eventually(Duration::from_secs(20), || {
        let r = rules_of("view");
        r.contains("pods").then_some(r)
    })
    .expect("view gets the aggregate-to-view rules");
    assert!(!view.contains("\"delete\""), "{view}");
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"widgets-view","labels":{"rbac.authorization.k8s.io/aggregate-to-view":"true"}},"rules":[{"apiGroups":["example.com"],"resources":["widgets"],"verbs":["get","list","watch"]}]}"#,
    );
    for role in ["view", "edit", "admin"] {
        let got = eventually(Duration::from_secs(20), || {
            let r = rules_of(role);
            r.contains("widgets").then_some(r)
        });
        assert!(
            got.is_some(),
            "{role} did not aggregate widgets: {}",
            rules_of(role)
        );
    }
}

#[test]
fn a_node_reads_only_what_pods_bound_to_it_use() {
    let s = Server::start();
    s.k(
        KUBECTL_NEW,
        &["create", "secret", "generic", "used", "--from-literal=a=b"],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "secret",
            "generic",
            "unused",
            "--from-literal=a=b",
        ],
    );
    // Pods need their service account (the ServiceAccount admission checks it).
    assert!(s.default_service_account_within("default", Duration::from_secs(20)));
    // A pod bound to node-a (no node runs it; the binding is what counts).
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"node-a","automountServiceAccountToken":false,
            "volumes":[{"name":"s","secret":{"secretName":"used"}}],"containers":[{"name":"c","image":"busybox"}]}}"#,
    );
    let as_node = |node: &str, args: &[&str]| {
        let mut a = vec!["--as", node, "--as-group", "system:nodes"];
        a.extend_from_slice(args);
        s.kubectl(KUBECTL_NEW, &a)
    };
    let read = eventually(Duration::from_secs(10), || {
        ok(&as_node(
            "system:node:node-a",
            &["get", "secret", "used", "-o", "name"],
        ))
    });
    assert_eq!(read.as_deref().map(str::trim), Some("secret/used"));
    let e = stderr(&as_node("system:node:node-a", &["get", "secret", "unused"]));
    assert!(e.contains("forbidden"), "{e}");
    let e = stderr(&as_node("system:node:node-b", &["get", "secret", "used"]));
    assert!(e.contains("forbidden"), "{e}");
    // NodeRestriction: a node changes only its own Node and its own pods.
    let e = stderr(&as_node("system:node:node-b", &["delete", "pod", "p"]));
    assert!(e.contains("forbidden"), "{e}");
    let e = stderr(&as_node(
        "system:node:node-b",
        &["label", "node", "node-a", "x=y"],
    ));
    assert!(
        e.contains("forbidden") || e.contains("NotFound") || e.contains("not found"),
        "{e}"
    );
}

#[test]
fn admission_sets_priority_and_default_tolerations_and_fills_token_secrets() {
    let s = Server::start();
    let classes = s.k(KUBECTL_NEW, &["get", "priorityclasses", "-o", "name"]);
    assert!(classes.contains("system-node-critical"), "{classes}");
    assert!(classes.contains("system-cluster-critical"), "{classes}");
    // Pods need their service account (the ServiceAccount admission checks it).
    assert!(s.default_service_account_within("default", Duration::from_secs(20)));
    let pod = |name: &str, extra: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{{extra}"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )
    };
    let plain: Value = serde_json::from_str(&s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        &pod("plain", ""),
    ))
    .unwrap();
    assert_eq!(plain["spec"]["priority"], 0);
    let tolerations = plain["spec"]["tolerations"].to_string();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(tolerations.contains(key), "{tolerations}");
    }
    assert!(tolerations.contains("300"), "{tolerations}");
    s.k(
        KUBECTL_NEW,
        &["create", "priorityclass", "high", "--value=1000"],
    );
    let high: Value = serde_json::from_str(&s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        &pod("urgent", r#""priorityClassName":"high","#),
    ))
    .unwrap();
    assert_eq!(high["spec"]["priority"], 1000);
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &pod("lost", r#""priorityClassName":"nope","#),
    );
    assert!(
        stderr(&out).contains("no PriorityClass with name nope was found"),
        "{}",
        stderr(&out)
    );
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &pod("cheat", r#""priority":5,"#),
    );
    assert!(
        stderr(&out).contains("must not be provided in pod spec"),
        "{}",
        stderr(&out)
    );
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &pod("ghost", r#""serviceAccountName":"ghost","#),
    );
    assert!(
        stderr(&out).contains("serviceaccount \"ghost\" not found"),
        "{}",
        stderr(&out)
    );

    // A service-account-token Secret is filled with a long-lived token that authenticates.
    s.k(KUBECTL_NEW, &["create", "serviceaccount", "legacy"]);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"legacy-token","annotations":{"kubernetes.io/service-account.name":"legacy"}},"type":"kubernetes.io/service-account-token"}"#,
    );
    let token = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "secret",
            "legacy-token",
            "-o",
            "jsonpath={.data.token}",
        ],
    );
    let token = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token.trim()).unwrap(),
    )
    .unwrap();
    let who = ok(&kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    ))
    .expect("the legacy token authenticates");
    assert_eq!(who.trim(), "system:serviceaccount:default:legacy");
    s.k(KUBECTL_NEW, &["delete", "secret", "legacy-token"]);
    let refused = eventually(Duration::from_secs(30), || {
        stderr(&kubectl_token(&s, KUBECTL_NEW, &token, &["auth", "whoami"]))
            .contains("Unauthorized")
            .then_some(())
    });
    assert!(refused.is_some(), "the token outlived its secret");
}

#[test]
fn pod_security_levels_enforce_and_warn() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "locked"]);
    s.k(
        KUBECTL_NEW,
        &[
            "label",
            "namespace",
            "locked",
            "pod-security.kubernetes.io/enforce=baseline",
            "pod-security.kubernetes.io/warn=restricted",
        ],
    );
    // Pods need their service account (the ServiceAccount admission checks it).
    assert!(s.default_service_account_within("locked", Duration::from_secs(20)));
    let privileged = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"root"},"spec":{"hostNetwork":true,
        "containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}"#;
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["-n", "locked", "create", "-f", "-"],
        privileged,
    );
    let e = stderr(&out);
    assert!(
        e.contains("violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{e}"
    );
    // Baseline-clean but not restricted: admitted with the warn level's warning.
    let plain = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"plain"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let out = s.kubectl_stdin(KUBECTL_NEW, &["-n", "locked", "create", "-f", "-"], plain);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{}",
        stderr(&out)
    );
    // A Deployment whose template the enforce level refuses is admitted with a warning.
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "-n",
            "locked",
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Unlabelled namespaces are privileged.
    let out = s.kubectl_stdin(KUBECTL_NEW, &["create", "-f", "-"], privileged);
    assert!(out.status.success(), "{}", stderr(&out));
}
