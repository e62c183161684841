#![allow(clippy::unwrap_used, clippy::expect_used)]

mod boot;
mod kubeconfig;
mod tls;
mod token;

use std::net::IpAddr;
use std::path::Path;

use crate::ServerPkiConfig;

pub(crate) fn config(dir: &Path) -> ServerPkiConfig {
    ServerPkiConfig {
        data_dir: dir.to_path_buf(),
        cluster_domain: "cluster.local".into(),
        service_ip: "10.43.0.1".parse::<IpAddr>().unwrap(),
        hostname: "node-a".into(),
        node_ips: vec!["192.168.1.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        tls_sans: vec!["api.example.com".into(), "203.0.113.7".into()],
        token: None,
    }
}
