//! The official Python `kubernetes` client (tests/python/client_test.py) against the server.
use std::process::Command;

#[test]
fn python_kubernetes_client_works_unmodified() {
    let s = crate::common::Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3 must be installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "python client test failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}
