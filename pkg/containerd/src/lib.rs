//! kubox-containerd: the containerd child process ([`supervisor`]), its CRI v1 API ([`cri`]),
//! image archives imported through the native API ([`import`]) and kubox's own sandbox image
//! ([`pause`]).

pub mod cri;
pub mod import;
pub mod pause;
pub mod supervisor;
