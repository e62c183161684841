//! kubox-network: the pod network of a node. [`cni`] is kubox's own CNI plugin (bridge with
//! host-local style IPAM, and loopback), reached through links in a CNI bin dir; [`proxy`]
//! renders the Service proxy into an nftables table of its own, [`hostports`] pods' host ports
//! into another, [`netpol`] NetworkPolicies into a third.

pub mod cni;
pub mod hostports;
pub mod netpol;
pub mod proxy;
