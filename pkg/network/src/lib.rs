//! kubox-network: the pod network of a node. [`cni`] is kubox's own CNI plugin (bridge with
//! host-local style IPAM, and loopback), reached through links in a CNI bin dir; [`proxy`]
//! renders the Service proxy into an nftables table of its own, [`hostports`] pods' host ports
//! into another, [`netpol`] NetworkPolicies into a third; [`overlay`] is the multi-node pod network
//! (flannel's VXLAN backend: `flannel.1` and an entry set per other node).

pub mod cni;
pub mod hostports;
pub mod netpol;
pub mod overlay;
pub mod proxy;
