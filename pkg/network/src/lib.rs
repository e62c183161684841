//! kubox-network: the pod network of a node. [`cni`] is kubox's own CNI plugin (bridge with
//! host-local style IPAM, and loopback), reached through links in a CNI bin dir.

pub mod cni;
