//! Plain JSON LIST, GET and WATCH are written from the stored bytes when no conversion applies;
//! a Table with `includeObject=Object` still renders each object from the full decode. Both
//! must give the same objects, key order included.
use crate::common::{KUBECTL_NEW, Server};
use serde_json::{Value, json};

const JSON: &str = "application/json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

async fn request(
    client: &kube::Client,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<&Value>,
) -> String {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Accept", accept)
        .header("Content-Type", JSON)
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .expect("request");
    client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Objects compared as text, so that key order counts.
fn text(objects: &[Value]) -> Vec<String> {
    objects.iter().map(Value::to_string).collect()
}

/// Every item of a list, following continue tokens, plain or from a Table's rows.
async fn list_all(client: &kube::Client, path: &str, query: &str, table: bool) -> Vec<Value> {
    let (accept, extra) = if table {
        (TABLE, "&includeObject=Object")
    } else {
        (JSON, "")
    };
    let mut items = Vec::new();
    let mut cont = String::new();
    loop {
        let page = parse(
            &request(
                client,
                "GET",
                &format!("{path}?{query}{extra}{cont}"),
                accept,
                None,
            )
            .await,
        );
        if table {
            assert_eq!(page["kind"], "Table", "{page}");
            for row in page["rows"].as_array().expect("rows") {
                items.push(row["object"].clone());
            }
        } else {
            assert!(
                page["kind"].as_str().is_some_and(|k| k.ends_with("List")),
                "{page}"
            );
            assert!(
                page["metadata"]["resourceVersion"].as_str().is_some(),
                "{page}"
            );
            items.extend(page["items"].as_array().expect("items").iter().cloned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = format!("&continue={c}"),
            None => return items,
        }
    }
}

/// The objects of a watch's events (type, object), plain or from Tables.
async fn watch_objects(
    client: &kube::Client,
    path: &str,
    query: &str,
    table: bool,
) -> Vec<(String, Value)> {
    let accept = if table { TABLE } else { JSON };
    let extra = if table { "&includeObject=Object" } else { "" };
    let body = request(
        client,
        "GET",
        &format!("{path}?watch=true&timeoutSeconds=2&{query}{extra}"),
        accept,
        None,
    )
    .await;
    body.lines()
        .map(|l| {
            let ev = parse(l);
            let obj = if table {
                ev["object"]["rows"][0]["object"].clone()
            } else {
                ev["object"].clone()
            };
            (ev["type"].as_str().unwrap_or_default().to_string(), obj)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_json_reads_are_the_objects_of_the_full_decode() {
    let s = Server::start();
    let client = s.client().await;
    let ns = "/api/v1/namespaces";
    request(
        &client,
        "POST",
        ns,
        JSON,
        Some(&json!({"metadata": {"name": "reads"}})),
    )
    .await;
    let start = parse(
        &request(
            &client,
            "GET",
            &format!("{ns}/reads/configmaps"),
            JSON,
            None,
        )
        .await,
    )["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let cms = format!("{ns}/reads/configmaps");
    for i in 0..5 {
        let cm = json!({
            "metadata": {
                "name": format!("cm-{i}"),
                "labels": {"app": if i < 3 { "web" } else { "db" }, "i": i.to_string()},
                "annotations": {"tricky": "\"q\" \\ \t\u{1} é 日本 }{][,: \u{2028}"},
            },
            "data": {"json": "{\"a\":[1,{\"b\":\"}\"}]}", "n": i.to_string()},
        });
        request(&client, "POST", &cms, JSON, Some(&cm)).await;
    }
    let secrets = format!("{ns}/reads/secrets");
    for (name, ty) in [
        ("s1", "example.com/a"),
        ("s2", "example.com/b"),
        ("s3", "example.com/a"),
    ] {
        let secret = json!({"metadata": {"name": name}, "type": ty, "stringData": {"k": name}});
        request(&client, "POST", &secrets, JSON, Some(&secret)).await;
    }
    // Stored as autoscaling/v2, read through v1: converted on both paths.
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h", "labels": {"app": "web"}},
        "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "d", "apiVersion": "apps/v1"},
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
    request(
        &client,
        "POST",
        "/apis/autoscaling/v2/namespaces/reads/horizontalpodautoscalers",
        JSON,
        Some(&hpa),
    )
    .await;
    // The root CA ConfigMap the controllers add, so the lists below hold still.
    crate::common::eventually(std::time::Duration::from_secs(20), || {
        s.k(
            KUBECTL_NEW,
            &["get", "configmap", "-n", "reads", "-o", "name"],
        )
        .contains("kube-root-ca.crt")
        .then_some(())
    })
    .expect("kube-root-ca.crt");

    let cases = [
        (cms.as_str(), ""),
        (cms.as_str(), "limit=2"),
        (cms.as_str(), "labelSelector=app%3Dweb&limit=1"),
        (cms.as_str(), "labelSelector=app%20in%20(db),i!%3D4"),
        (cms.as_str(), "labelSelector=!app"),
        (cms.as_str(), "fieldSelector=metadata.name%3Dcm-2"),
        (secrets.as_str(), "fieldSelector=type%3Dexample.com/a"),
        (
            secrets.as_str(),
            "fieldSelector=type!%3Dexample.com/a&limit=1",
        ),
        ("/api/v1/configmaps", "labelSelector=app"),
        (
            "/apis/autoscaling/v1/namespaces/reads/horizontalpodautoscalers",
            "labelSelector=app%3Dweb",
        ),
        ("/apis/autoscaling/v2/horizontalpodautoscalers", ""),
    ];
    for (path, query) in cases {
        let plain = list_all(&client, path, query, false).await;
        let table = list_all(&client, path, query, true).await;
        assert!(
            !plain.is_empty() || query.contains("!app"),
            "{path}?{query}"
        );
        assert_eq!(text(&plain), text(&table), "{path}?{query}");
        for item in &plain {
            assert!(
                item["metadata"]["resourceVersion"].as_str().is_some(),
                "{item}"
            );
            let name = item["metadata"]["name"].as_str().expect("name");
            let one = format!(
                "{}/{name}",
                path.replace("/api/v1/configmaps", &cms).replace(
                    "/apis/autoscaling/v2/horizontalpodautoscalers",
                    "/apis/autoscaling/v2/namespaces/reads/horizontalpodautoscalers"
                )
            );
            let got = parse(&request(&client, "GET", &one, JSON, None).await);
            let rows = parse(
                &request(
                    &client,
                    "GET",
                    &format!("{one}?includeObject=Object"),
                    TABLE,
                    None,
                )
                .await,
            );
            assert_eq!(
                got.to_string(),
                rows["rows"][0]["object"].to_string(),
                "{one}"
            );
            if item["metadata"]["namespace"] == "reads" {
                assert_eq!(got.to_string(), item.to_string(), "{one}");
            }
        }
    }
    let hpa_v1 = parse(
        &request(
            &client,
            "GET",
            "/apis/autoscaling/v1/namespaces/reads/horizontalpodautoscalers/h",
            JSON,
            None,
        )
        .await,
    );
    assert_eq!(
        hpa_v1["spec"]["targetCPUUtilizationPercentage"], 50,
        "{hpa_v1}"
    );

    // A watch with a selector: cm-1 stops matching (DELETED for it), cm-0 is changed and deleted.
    let mut cm1 = parse(&request(&client, "GET", &format!("{cms}/cm-1"), JSON, None).await);
    cm1["metadata"]["labels"]["app"] = json!("other");
    request(&client, "PUT", &format!("{cms}/cm-1"), JSON, Some(&cm1)).await;
    let mut cm0 = parse(&request(&client, "GET", &format!("{cms}/cm-0"), JSON, None).await);
    cm0["data"]["n"] = json!("changed");
    request(&client, "PUT", &format!("{cms}/cm-0"), JSON, Some(&cm0)).await;
    request(&client, "DELETE", &format!("{cms}/cm-0"), JSON, None).await;
    for query in [
        format!("resourceVersion={start}&labelSelector=app%3Dweb"),
        "labelSelector=app%3Dweb".to_string(),
    ] {
        let plain = watch_objects(&client, &cms, &query, false).await;
        let table = watch_objects(&client, &cms, &query, true).await;
        let types: Vec<&str> = plain.iter().map(|(t, _)| t.as_str()).collect();
        if query.starts_with("resourceVersion") {
            assert_eq!(
                types,
                ["ADDED", "ADDED", "ADDED", "DELETED", "MODIFIED", "DELETED"],
                "{plain:?}"
            );
        } else {
            assert_eq!(types, ["ADDED"], "{plain:?}");
        }
        let strings = |evs: &[(String, Value)]| {
            evs.iter()
                .map(|(t, o)| format!("{t} {o}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(strings(&plain), strings(&table), "{query}");
    }

    // kubectl's -o json / -o yaml read plain JSON.
    let out = s.k(
        KUBECTL_NEW,
        &["get", "configmap", "cm-2", "-n", "reads", "-o", "json"],
    );
    let mut got = parse(&request(&client, "GET", &format!("{cms}/cm-2"), JSON, None).await);
    assert!(got["metadata"]["managedFields"].is_array(), "{got}");
    // kubectl hides managedFields unless --show-managed-fields.
    if let Some(m) = got["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    assert_eq!(parse(&out), got);
    let yaml = s.k(
        KUBECTL_NEW,
        &["get", "configmap", "cm-2", "-n", "reads", "-o", "yaml"],
    );
    let rv = got["metadata"]["resourceVersion"].as_str().expect("rv");
    assert!(
        yaml.contains(&format!("resourceVersion: \"{rv}\"")),
        "{yaml}"
    );
}
