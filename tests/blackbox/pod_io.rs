//! Talking to running pods through the API server and the node's kubelet API: `kubectl logs`
//! (options, follow, previous), `kubectl exec` with and without stdin, `kubectl port-forward`,
//! with the oldest and newest kubectl, and who may do it.
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::access_control::kubectl_token;
use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually, free_port};
use crate::node::{http_get, json, ready_node};
use serde_json::Value;

fn running(s: &Server, pod: &str) -> bool {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["state"]["running"].is_object()))
}

fn wait_running(s: &Server, pod: &str) {
    let ok = eventually(Duration::from_secs(90), || running(s, pod).then_some(()));
    assert!(
        ok.is_some(),
        "pod {pod} not running:\n{}\n{}",
        s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "yaml"]),
        s.log()
    );
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

const TALKER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: docker.io/library/busybox:test
    command: [sh, -c, 'for i in 1 2 3 4 5; do echo line-$i; done; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done']
  - name: b
    image: docker.io/library/busybox:test
    command: [sh, -c, 'echo b-out; echo b-err >&2; exec sleep 3600']
---
apiVersion: v1
kind: Pod
metadata: {name: again}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - name: c
    image: docker.io/library/busybox:test
    volumeMounts: [{name: d, mountPath: /d}]
    command: [sh, -c, 'n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; sleep 1; exit 1']
"#;

/// The number in `run-N` of a log.
fn run_number(log: &str) -> u32 {
    log.trim()
        .strip_prefix("run-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a run-N log: {log:?}"))
}

#[test]
fn kubectl_logs_reads_streams_and_follows_container_output() {
    let s = ready_node();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], TALKER);
    wait_running(&s, "talker");

    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let b = s.k(v, &["logs", "talker", "-c", "b"]);
        assert!(b.contains("b-out\n") && b.contains("b-err\n"), "{v}: {b:?}");
        let a = s.k(v, &["logs", "talker", "-c", "a"]);
        assert!(
            a.starts_with("line-1\nline-2\nline-3\nline-4\nline-5\ntick-0\n"),
            "{v}: {a:?}"
        );
        let tail = s.k(v, &["logs", "talker", "-c", "b", "--tail=1"]);
        assert_eq!(tail.lines().count(), 1, "{v}: {tail:?}");
        assert!(b.ends_with(&tail), "{v}: {tail:?} is not the end of {b:?}");
        let limited = s.k(v, &["logs", "talker", "-c", "a", "--limit-bytes=9"]);
        assert_eq!(limited, "line-1\nli", "{v}");
        let stamped = s.k(v, &["logs", "talker", "-c", "b", "--timestamps"]);
        for line in stamped.lines() {
            let (ts, rest) = line.split_once(' ').expect("timestamp and text");
            assert!(
                ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.ends_with('Z'),
                "{v}: {line:?}"
            );
            assert!(rest == "b-out" || rest == "b-err", "{v}: {line:?}");
        }
        // Nothing printed in the last hour is older than an hour; `b` said nothing lately.
        let recent = s.k(v, &["logs", "talker", "-c", "b", "--since=1h"]);
        assert_eq!(recent.lines().count(), 2, "{v}: {recent:?}");
        let e = s.k_err(v, &["logs", "talker", "-c", "nope"]);
        assert!(
            e.contains("container nope is not valid for pod talker"),
            "{v}: {e}"
        );
    }
    // Without a container, the server cannot choose (kubectl itself picks the first one).
    let out = s.kubectl(
        KUBECTL_NEW,
        &["get", "--raw", "/api/v1/namespaces/default/pods/talker/log"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("a container name must be specified for pod talker, choose one of: [a b]"),
        "{}",
        stderr(&out)
    );
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/talker/log?tailLines=-1&container=a",
        ],
    );
    assert!(
        stderr(&out).contains("tailLines"),
        "negative tailLines: {}",
        stderr(&out)
    );

    // -f streams what the container prints after kubectl started.
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let mut child = s
            .kubectl_command(v)
            .args(["logs", "-f", "talker", "-c", "a", "--tail=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let tick = |l: &str| -> u64 {
            l.strip_prefix("tick-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{v}: unexpected line {l:?}"))
        };
        let first = tick(&lines.next().unwrap().unwrap());
        let mut last = first;
        while last < first + 2 {
            let l = lines.next().expect("the stream goes on").unwrap();
            assert_eq!(tick(&l), last + 1, "{v}: lines in order, none lost");
            last += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // --previous: the output of the container's run before the current one.
    let restarted = eventually(Duration::from_secs(90), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "again", "-o", "json"]));
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(())
    });
    assert!(
        restarted.is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "pod", "again", "-o", "yaml"])
    );
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let previous = run_number(&s.k(v, &["logs", "again", "--previous"]));
        let current = run_number(&s.k(v, &["logs", "again"]));
        assert!(
            previous >= 1 && current > previous,
            "{v}: {previous} then {current}"
        );
    }
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: fresh}\nspec:\n  containers:\n  - {name: c, image: docker.io/library/busybox:test, command: [sleep, '3600']}\n",
    );
    wait_running(&s, "fresh");
    let e = s.k_err(KUBECTL_NEW, &["logs", "fresh", "--previous"]);
    assert!(
        e.contains("previous terminated container \"c\" in pod \"fresh\" not found"),
        "{e}"
    );
}

const SHELL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: docker.io/library/busybox:test
    command: [httpd, -f, -p, "8080", -h, /www]
"#;

#[test]
fn kubectl_exec_and_port_forward_reach_into_the_pod() {
    let s = ready_node();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], SHELL);
    wait_running(&s, "shell");

    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        assert_eq!(
            s.k(v, &["exec", "shell", "--", "cat", "/etc/hostname"]),
            "shell\n",
            "{v}"
        );
        assert_eq!(
            s.k_in(
                v,
                &["exec", "-i", "shell", "--", "sh", "-c", "cat"],
                "hello\nworld\n"
            ),
            "hello\nworld\n",
            "{v}: stdin reaches the command and its end closes it"
        );
        let out = s.kubectl(
            v,
            &["exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"],
        );
        assert_eq!(out.status.code(), Some(3), "{v}: the command's exit code");
        assert!(stderr(&out).contains("oops"), "{v}: {}", stderr(&out));
        let e = s.k_err(v, &["exec", "shell", "-c", "nope", "--", "true"]);
        assert!(
            e.contains("container nope is not valid for pod shell"),
            "{v}: {e}"
        );
    }

    // attach: stdin to the container's own process (`stdinOnce`: its end ends the process).
    for (v, pod) in [(KUBECTL_OLD, "echo-old"), (KUBECTL_NEW, "echo-new")] {
        s.k_in(
            KUBECTL_NEW,
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: docker.io/library/busybox:test, stdin: true, stdinOnce: true, command: [cat]}}\n"
            ),
        );
        wait_running(&s, pod);
        assert_eq!(
            s.k_in(v, &["attach", "-i", pod], "through attach\n"),
            "through attach\n",
            "{v}"
        );
    }

    // port-forward inside the node's network namespace, then a GET through it.
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let port = free_port();
        let mut child = s
            .kubectl_command(v)
            .args(["port-forward", "pod/shell", &format!("{port}:8080")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .map(|l| l.unwrap_or_default())
            .unwrap_or_default();
        assert!(first.contains("Forwarding from"), "{v}: {first:?}");
        let got = eventually(Duration::from_secs(10), || {
            http_get(&s, &format!("http://127.0.0.1:{port}/"))
        });
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.as_deref(), Some("hello from kubox\n"), "{v}");
    }

    // Only who may create pods/exec gets in.
    s.k(KUBECTL_NEW, &["create", "serviceaccount", "viewer"]);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "rolebinding",
            "viewer-reads",
            "--role=pod-reader",
            "--serviceaccount=default:viewer",
        ],
    );
    let token = s
        .k(KUBECTL_NEW, &["create", "token", "viewer"])
        .trim()
        .to_string();
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let got = eventually(Duration::from_secs(10), || {
            let out = kubectl_token(&s, v, &token, &["get", "pod", "shell", "-o", "name"]);
            out.status.success().then(|| stdout(&out))
        });
        assert_eq!(got.as_deref(), Some("pod/shell\n"), "{v}");
        let out = kubectl_token(&s, v, &token, &["exec", "shell", "--", "true"]);
        assert!(!out.status.success(), "{v}: exec without create pods/exec");
        assert!(
            stderr(&out).contains("cannot create resource \"pods/exec\"")
                || stderr(&out).contains("Forbidden")
                || stderr(&out).contains("forbidden"),
            "{v}: {}",
            stderr(&out)
        );
        let out = kubectl_token(&s, v, &token, &["logs", "shell"]);
        assert!(
            stderr(&out).contains("cannot get resource \"pods/log\""),
            "{v}: {}",
            stderr(&out)
        );
    }

    // The kubelet API itself serves only the API server's client identity.
    let kubelet = "https://127.0.0.1:10250/containerLogs/default/shell/web";
    let curl = |args: &[&str]| -> String {
        let out = s
            .command("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .arg(kubelet)
            .output()
            .unwrap();
        stdout(&out)
    };
    assert_eq!(curl(&[]), "401", "no client certificate");
    let tls = s.data_dir().join("server/tls");
    let cert = |name: &str| tls.join(name).display().to_string();
    assert_eq!(
        curl(&[
            "--cert",
            &cert("client-controller.crt"),
            "--key",
            &cert("client-controller.key")
        ]),
        "403",
        "a client certificate outside system:masters"
    );
    assert_eq!(
        curl(&[
            "--cert",
            &cert("client-kube-apiserver.crt"),
            "--key",
            &cert("client-kube-apiserver.key")
        ]),
        "200",
        "the API server's own identity"
    );
}

/// The ephemeral container `name` of `pod`'s status, once it runs.
fn ephemeral_running(s: &Server, pod: &str, name: &str) -> Option<Value> {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    p["status"]["ephemeralContainerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name && c["state"]["running"].is_object())
        .cloned()
}

#[test]
fn kubectl_debug_adds_ephemeral_containers_that_see_their_target() {
    let s = ready_node();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], SHELL);
    wait_running(&s, "shell");

    // A debug container sharing the web container's PID namespace: it sees httpd.
    let out = s.k(
        KUBECTL_NEW,
        &[
            "debug",
            "shell",
            "--image=docker.io/library/busybox:test",
            "--container=dbg",
            "--target=web",
            "--",
            "sh",
            "-c",
            "ps -o args; exec sleep 3600",
        ],
    );
    assert!(out.contains("Targeting container \"web\""), "{out}");
    let st = eventually(Duration::from_secs(60), || {
        ephemeral_running(&s, "shell", "dbg")
    })
    .unwrap_or_else(|| {
        panic!(
            "{}",
            s.k(KUBECTL_NEW, &["get", "pod", "shell", "-o", "yaml"])
        )
    });
    assert_eq!(st["ready"], false);
    assert!(
        st["containerID"]
            .as_str()
            .unwrap_or("")
            .starts_with("containerd://")
    );
    let logs = eventually(Duration::from_secs(20), || {
        let l = s.k(KUBECTL_NEW, &["logs", "shell", "-c", "dbg"]);
        l.contains("httpd").then_some(l)
    });
    assert!(logs.is_some(), "the target's processes are visible");
    assert_eq!(
        s.k(
            KUBECTL_NEW,
            &["exec", "shell", "-c", "dbg", "--", "cat", "/etc/hostname"]
        ),
        "shell\n"
    );
    // The pod itself is unaffected: still Running and Ready with its one container.
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "shell", "-o", "json"]));
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(
        p["status"]["containerStatuses"].as_array().map(Vec::len),
        Some(1)
    );

    // Interactive, as from a terminal: stdin stays open while the debug shell answers over
    // attach. (Closing stdin detaches a container without stdinOnce — containerd's and
    // docker's semantics — so output after a piped stdin's end is not shown, upstream too.)
    for (v, name) in [(KUBECTL_OLD, "dbg-old"), (KUBECTL_NEW, "dbg-new")] {
        let container = format!("--container={name}");
        let mut child = s
            .kubectl_command(v)
            .args([
                "debug",
                "-i",
                "shell",
                "--image=docker.io/library/busybox:test",
                &container,
                "--",
                "sh",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The shell may not be attached yet when the first line is written: repeat it.
        let mut answered = false;
        for _ in 0..30 {
            let _ = stdin.write_all(b"echo from-$((40+2))\n");
            if let Ok(line) = rx.recv_timeout(Duration::from_secs(2))
                && line.contains("from-42")
            {
                answered = true;
                break;
            }
        }
        let _ = stdin.write_all(b"exit\n");
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(
            answered,
            "{v}: the debug shell's answer came back over attach"
        );
        assert!(
            status.success(),
            "{v}: kubectl debug -i ended with {status}"
        );
    }

    // Ephemeral containers are only ever added: not on create, never changed or removed.
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "shell", "-o", "json"]));
    let mut changed = p["spec"]["ephemeralContainers"].clone();
    changed[0]["image"] = serde_json::json!("docker.io/library/busybox:other");
    let patch = serde_json::json!({"spec": {"ephemeralContainers": changed}}).to_string();
    let e = s.k_err(
        KUBECTL_NEW,
        &[
            "patch",
            "pod",
            "shell",
            "--subresource=ephemeralcontainers",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
    assert!(
        e.contains("existing ephemeral containers \"dbg\" may not be changed"),
        "{e}"
    );
    let e = s.k_err(
        KUBECTL_NEW,
        &[
            "patch", "pod", "shell", "--subresource=ephemeralcontainers", "--type=merge", "-p",
            r#"{"spec":{"ephemeralContainers":[{"name":"x","image":"docker.io/library/busybox:test","ports":[{"containerPort":80}],"targetContainerName":"nope"}]}}"#,
        ],
    );
    assert!(
        e.contains("cannot be set for an Ephemeral Container"),
        "{e}"
    );
    assert!(e.contains("targetContainerName"), "{e}");
    let e = s.k_err(
        KUBECTL_NEW,
        &["run", "eph", "--image=docker.io/library/busybox:test", "--overrides",
          r#"{"spec":{"ephemeralContainers":[{"name":"x","image":"docker.io/library/busybox:test"}]}}"#],
    );
    assert!(e.contains("cannot be set on create"), "{e}");
}
