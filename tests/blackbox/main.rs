//! Black-box tests of the real `kubox` binary with real clients. One test binary (one link
//! step) holds every suite; each module is one area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_control;
mod certificates;
mod churn;
mod cli;
mod common;
mod controllers;
mod crate_graph;
mod cronjob;
mod dns;
mod durability_and_watch;
mod images;
mod jobs;
mod join;
mod kubectl;
mod lifecycle;
mod list_reads;
mod metrics;
mod netpol;
mod node;
mod node_agent;
mod pod_io;
mod python_client;
mod quota;
mod registry;
mod revisions;
mod scheduling;
mod security_and_errors;
mod service_proxy;
mod storage;
mod webhooks;
mod websocket;
mod workloads;
