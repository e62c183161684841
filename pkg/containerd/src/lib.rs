//! kubox-containerd: the containerd child process ([`supervisor`]), its CRI v1 API ([`cri`]),
//! image archives imported through the native API ([`import`]), kubox's own sandbox image
//! ([`pause`]) and k3s's `registries.yaml` as containerd registry configuration ([`registries`]).

pub mod cri;
pub mod import;
pub mod pause;
pub mod registries;
pub mod supervisor;
