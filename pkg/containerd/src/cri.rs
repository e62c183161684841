//! The CRI v1 API of containerd (runtime and image services) over its socket. One channel
//! serves the CRI and the native API (image import).

use std::path::Path;

pub use k8s_cri::v1 as api;
use tonic::transport::Channel;

pub type RuntimeClient = api::runtime_service_client::RuntimeServiceClient<Channel>;
pub type ImageClient = api::image_service_client::ImageServiceClient<Channel>;

/// Clients of one containerd. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeClient,
    pub images: ImageClient,
    /// The underlying channel, for containerd's native services.
    pub channel: Channel,
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
        let channel = containerd_client::connect(socket).await?;
        Ok(Cri {
            runtime: RuntimeClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            channel,
        })
    }

    /// The containers that are running now.
    pub async fn running_containers(&self) -> Result<Vec<api::Container>, tonic::Status> {
        Ok(self
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    state: Some(api::ContainerStateValue {
                        state: api::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers)
    }

    /// Whether the runtime and its network are ready (CRI `Status` conditions).
    pub async fn ready(&self) -> Result<(bool, bool, String), tonic::Status> {
        let status = self
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let mut runtime = false;
        let mut network = false;
        let mut why = String::new();
        for c in status.conditions {
            match c.r#type.as_str() {
                "RuntimeReady" => runtime = c.status,
                "NetworkReady" => network = c.status,
                _ => {}
            }
            if !c.status {
                why = format!("{}: {} {}", c.r#type, c.reason, c.message);
            }
        }
        Ok((runtime, network, why))
    }
}
