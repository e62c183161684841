//! exec, attach and port-forward over websocket, which the API server translates to SPDY
//! towards the kubelet: through the `kube` crate and the Python client (websocket only, so
//! no SPDY fallback can hide a broken websocket path), and kubectl 1.33, whose request log
//! (`-v=6`) shows it used the websocket (a GET answered 101) and never fell back to SPDY (a
//! POST); kubectl 1.27 still speaks SPDY.
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually, free_port};
use crate::node::{http_get, json, ready_node};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: docker.io/library/busybox:test
    command: [httpd, -f, -p, "8080", -h, /www]
---
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: docker.io/library/busybox:test, stdin: true, stdinOnce: true, command: [cat]}
"#;

fn wait_running(s: &Server, pod: &str) {
    let ok = eventually(Duration::from_secs(90), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(())
    });
    assert!(ok.is_some(), "pod {pod} not running:\n{}", s.log());
}

/// The `-v=6` request lines kubectl printed for the pod subresource `sub`.
fn requests(stderr: &str, sub: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(&format!("/pods/web/{sub}")) || l.contains(&format!("/pods/echo/{sub}"))
        })
        .map(String::from)
        .collect()
}

/// kubectl at `-v=6` went through the websocket (a GET upgraded with 101) and never tried SPDY
/// (a POST), or the other way round for `websocket == false`.
fn assert_protocol(v: &str, stderr: &str, sub: &str, websocket: bool) {
    let lines = requests(stderr, sub);
    let upgraded = |verb: &str| {
        lines
            .iter()
            .any(|l| l.contains(verb) && l.contains("101 Switching Protocols"))
    };
    let posted = lines.iter().any(|l| l.contains("POST"));
    if websocket {
        assert!(
            upgraded("GET") && !posted && !stderr.contains("fallback"),
            "{v} {sub}: {stderr}"
        );
    } else {
        assert!(upgraded("POST"), "{v} {sub}: {lines:#?}");
    }
}

/// `f`'s output, or a panic naming `what` after 20 s.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not come within 20 s"))
}

#[test]
fn exec_attach_and_port_forward_over_websocket() {
    let s = ready_node();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], PODS);
    wait_running(&s, "web");
    wait_running(&s, "echo");

    // The kube crate: exec with stdin (closed through v5's close signal), stdout and stderr
    // apart, the exit code in the status; attach; port-forward.
    let (out, err, status, attached, page) = s.block_on_in_node(|| async {
        let pods: Api<Pod> = Api::default_namespaced(s.client().await);
        let mut at = within(
            "exec",
            pods.exec(
                "web",
                ["sh", "-c", "cat; echo to-err >&2; exit 5"],
                &AttachParams::default().stdin(true).stderr(true),
            ),
        )
        .await
        .expect("exec");
        let mut stdin = at.stdin().unwrap();
        stdin.write_all(b"from kube\n").await.unwrap();
        // The end of stdin goes to the command as v5's close signal.
        stdin.shutdown().await.unwrap();
        let (mut so, mut se) = (at.stdout().unwrap(), at.stderr().unwrap());
        let (mut out, mut err) = (String::new(), String::new());
        let (a, b) = within("the exec's output", async {
            tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err))
        })
        .await;
        a.unwrap();
        b.unwrap();
        let status = within("the exec's status", at.take_status().unwrap()).await;
        within("the exec's end", at.join()).await.unwrap();

        // Volume: 8 MiB of output through the bounded per-stream buffers, none lost.
        let started = std::time::Instant::now();
        let mut at = pods
            .exec(
                "web",
                ["busybox", "head", "-c", "8388608", "/dev/zero"],
                &AttachParams::default().stderr(false),
            )
            .await
            .expect("exec");
        let mut bulk = Vec::new();
        within(
            "8 MiB of output",
            at.stdout().unwrap().read_to_end(&mut bulk),
        )
        .await
        .unwrap();
        let bulk_status = within("the status", at.take_status().unwrap()).await;
        within("the exec's end", at.join()).await.unwrap();
        assert_eq!(bulk.len(), 8 << 20, "{bulk_status:?}");
        eprintln!(
            "8 MiB of exec output over websocket in {:?}",
            started.elapsed()
        );

        let mut at = pods
            .attach("echo", &AttachParams::default().stdin(true).stderr(false))
            .await
            .expect("attach");
        let mut stdin = at.stdin().unwrap();
        stdin.write_all(b"through attach\n").await.unwrap();
        let mut so = at.stdout().unwrap();
        let mut attached = Vec::new();
        let mut buf = [0u8; 256];
        while !attached.ends_with(b"\n") {
            let n = within("attach output", so.read(&mut buf)).await.unwrap();
            if n == 0 {
                break;
            }
            attached.extend_from_slice(&buf[..n]);
        }
        drop(stdin);

        let mut pf = pods.portforward("web", &[8080]).await.expect("portforward");
        let mut conn = pf.take_stream(8080).unwrap();
        conn.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            .await
            .unwrap();
        let mut page = String::new();
        within("the page", conn.read_to_string(&mut page))
            .await
            .unwrap();
        drop(conn);
        pf.abort();
        (out, err, status, String::from_utf8(attached).unwrap(), page)
    });
    assert_eq!(out, "from kube\n");
    assert_eq!(err, "to-err\n");
    let status = status.expect("a status on the error channel");
    assert_eq!(status.status.as_deref(), Some("Failure"), "{status:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
    let cause = &status.details.as_ref().unwrap().causes.as_ref().unwrap()[0];
    assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
    assert_eq!(cause.message.as_deref(), Some("5"));
    assert_eq!(attached, "through attach\n");
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with("hello from kubox\n"),
        "{page:?}"
    );

    // The Python client's stream API.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stream_test.py");
    let out = s
        .command("python3")
        .arg(script)
        .arg("web")
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python stream test failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );

    // kubectl: 1.33 over websocket, 1.27 over SPDY; stdin, its end, and the exit code.
    for (v, websocket) in [(KUBECTL_NEW, true), (KUBECTL_OLD, false)] {
        let out = s.kubectl_stdin(
            v,
            &[
                "-v=6",
                "exec",
                "-i",
                "web",
                "--",
                "sh",
                "-c",
                "cat; echo oops >&2; exit 3",
            ],
            "hello\nworld\n",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello\nworld\n",
            "{v}"
        );
        assert_eq!(out.status.code(), Some(3), "{v}: {stderr}");
        assert!(stderr.contains("oops"), "{v}: {stderr}");
        assert_protocol(v, &stderr, "exec", websocket);

        let port = free_port();
        let mut child = s
            .kubectl_command(v)
            .args(["-v=6", "port-forward", "pod/web", &format!("{port}:8080")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.contains("Forwarding from"), "{v}: {first:?}");
        for _ in 0..2 {
            let got = eventually(Duration::from_secs(10), || {
                http_get(&s, &format!("http://127.0.0.1:{port}/"))
            });
            assert_eq!(got.as_deref(), Some("hello from kubox\n"), "{v}");
        }
        let _ = child.kill();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        let _ = child.wait();
        assert_protocol(v, &stderr, "portforward", websocket);
    }
}
