//! The containerd side of an import: content, leases, snapshots, the diff service and image
//! records, reached through containerd's native gRPC API with the namespace (and lease) in
//! every request's metadata.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, ApplyRequest, CreateImageRequest, CreateRequest,
    DeleteRequest, GetImageRequest, Image, InfoRequest, Resource, UpdateImageRequest,
    UpdateRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::Problem;
use super::plan::{Desc, Layer};

/// How long an interrupted import's lease keeps its content before containerd collects it.
const LEASE_SECONDS: u64 = 3600;
/// Label that makes containerd's CRI plugin treat an image as its own.
const CRI_MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");

/// Adds the namespace and, once taken, the lease to each request.
#[derive(Clone)]
pub(crate) struct Meta {
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
}

impl Interceptor for Meta {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let md = request.metadata_mut();
        md.insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = &self.lease {
            md.insert("containerd-lease", lease.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Meta>;

/// containerd reached for one import.
#[derive(Clone)]
pub(crate) struct Store {
    channel: Channel,
    meta: Meta,
    snapshotter: String,
    lease: Option<String>,
}

/// Maps a failed RPC into a [`Problem`] naming the operation.
fn rpc(op: impl Into<String>) -> impl FnOnce(Status) -> Problem {
    let op = op.into();
    move |status| Problem::Rpc {
        op,
        code: status.code(),
        message: status.message().to_string(),
    }
}

impl Store {
    /// A store for `namespace`; `None` if the namespace cannot be sent as metadata.
    pub(crate) fn new(channel: Channel, namespace: &str, snapshotter: &str) -> Option<Self> {
        let namespace = MetadataValue::try_from(namespace).ok()?;
        Some(Self {
            channel,
            meta: Meta {
                namespace,
                lease: None,
            },
            snapshotter: snapshotter.to_string(),
            lease: None,
        })
    }

    /// The snapshotter layers are unpacked for.
    pub(crate) fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    fn content(&self) -> ContentClient<Svc> {
        ContentClient::with_interceptor(self.channel.clone(), self.meta.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Svc> {
        SnapshotsClient::with_interceptor(self.channel.clone(), self.meta.clone())
    }

    fn images(&self) -> ImagesClient<Svc> {
        ImagesClient::with_interceptor(self.channel.clone(), self.meta.clone())
    }

    fn leases(&self) -> LeasesClient<Svc> {
        LeasesClient::with_interceptor(self.channel.clone(), self.meta.clone())
    }

    /// A copy of this store whose requests run under a new lease that expires on its own
    /// if the import is interrupted.
    pub(crate) async fn with_lease(&self) -> Result<Store, Problem> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("kubox-import-{}-{}", now.as_nanos(), std::process::id());
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            rfc3339(now.as_secs() + LEASE_SECONDS),
        )]);
        self.leases()
            .create(CreateRequest {
                id: id.clone(),
                labels,
            })
            .await
            .map_err(rpc("leases Create"))?;
        let mut leased = self.clone();
        leased.meta.lease = MetadataValue::try_from(id.as_str()).ok();
        leased.lease = Some(id);
        Ok(leased)
    }

    /// Ends the lease; what nothing else references becomes garbage.
    pub(crate) async fn release(&self) {
        let Some(id) = &self.lease else { return };
        if let Err(status) = self
            .leases()
            .delete(DeleteRequest {
                id: id.clone(),
                sync: false,
            })
            .await
        {
            tracing::warn!(lease = %id, %status, "deleting the import lease failed; it expires on its own");
        }
    }

    /// Holds existing `id` (of kind `content` or `snapshots/<snapshotter>`) under the lease.
    async fn hold(&self, kind: &str, id: &str) -> Result<(), Problem> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let resource = Resource {
            id: id.to_string(),
            r#type: kind.to_string(),
        };
        self.leases()
            .add_resource(AddResourceRequest {
                id: lease.clone(),
                resource: Some(resource),
            })
            .await
            .map_err(rpc(format!("leases AddResource {id}")))?;
        Ok(())
    }

    /// Makes sure blob `desc` is in the content store with `labels`; returns false if it is
    /// missing (nothing is written then).
    pub(crate) async fn ensure_labels(
        &self,
        desc: &Desc,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, Problem> {
        let info = match self
            .content()
            .info(InfoRequest {
                digest: desc.digest.clone(),
            })
            .await
        {
            Ok(response) => response.into_inner().info.unwrap_or_default(),
            Err(status) if status.code() == Code::NotFound => return Ok(false),
            Err(status) => return Err(rpc(format!("content Info {}", desc.digest))(status)),
        };
        self.hold("content", &desc.digest).await?;
        if info.size != desc.size {
            return Err(Problem::malformed(format!(
                "{} is {} bytes in containerd but {} in the archive",
                desc.digest, info.size, desc.size
            )));
        }
        let changed: Vec<String> = labels
            .iter()
            .filter(|(k, v)| info.labels.get(*k) != Some(*v))
            .map(|(k, _)| format!("labels.{k}"))
            .collect();
        if !changed.is_empty() {
            tracing::debug!(digest = %desc.digest, labels = ?changed, "updating content labels");
            let info = containerd_client::services::v1::Info {
                digest: desc.digest.clone(),
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            };
            let update_mask = Some(prost_types::FieldMask { paths: changed });
            self.content()
                .update(UpdateRequest {
                    info: Some(info),
                    update_mask,
                })
                .await
                .map_err(rpc(format!("content Update {}", desc.digest)))?;
        }
        Ok(true)
    }

    /// Starts writing blob `desc` into the content store.
    pub(crate) async fn writer(&self, desc: &Desc) -> Result<BlobWriter, Problem> {
        let reference = format!(
            "{}-{}",
            self.lease.as_deref().unwrap_or("kubox-import"),
            desc.digest
        );
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut writer = BlobWriter {
            store: self.clone(),
            desc: desc.clone(),
            reference,
            tx,
            responses: None,
            offset: 0,
            hasher: Sha256::new(),
        };
        writer.send(WriteAction::Stat, Vec::new(), HashMap::new())?;
        match self.content().write(rx).await {
            Ok(response) => writer.responses = Some(response.into_inner()),
            Err(status) if status.code() == Code::AlreadyExists => return Ok(writer.existing()),
            Err(status) => return Err(rpc(format!("content Write {}", desc.digest))(status)),
        }
        match writer.reply().await {
            Ok(_) => Ok(writer),
            Err(Problem::Rpc {
                code: Code::AlreadyExists,
                ..
            }) => Ok(writer.existing()),
            Err(problem) => Err(problem),
        }
    }

    /// True when snapshot `key` exists.
    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, Problem> {
        let request = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.to_string(),
        };
        match self.snapshots().stat(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(rpc(format!("snapshots Stat {key}"))(status)),
        }
    }

    /// Unpacks `layers` into committed snapshots named by their chainIDs, skipping those
    /// that exist; returns how many layers were applied.
    pub(crate) async fn unpack(&self, layers: &[Layer]) -> Result<usize, Problem> {
        let kind = format!("snapshots/{}", self.snapshotter);
        let mut parent = String::new();
        let mut applied = 0;
        for layer in layers {
            if self.snapshot_exists(&layer.chain_id).await? {
                self.hold(&kind, &layer.chain_id).await?;
            } else {
                self.apply_layer(layer, &parent).await?;
                applied += 1;
            }
            parent = layer.chain_id.clone();
        }
        Ok(applied)
    }

    /// Prepares a snapshot on `parent`, applies `layer` into it and commits it as its chainID.
    async fn apply_layer(&self, layer: &Layer, parent: &str) -> Result<(), Problem> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let key = format!("extract-{nanos}-{}", layer.chain_id);
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        };
        let mounts = self
            .snapshots()
            .prepare(prepare)
            .await
            .map_err(rpc(format!("snapshots Prepare {key}")))?
            .into_inner()
            .mounts;
        let result = self.apply_and_commit(layer, &key, mounts).await;
        if result.is_err() {
            let remove = RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
            };
            if let Err(status) = self.snapshots().remove(remove).await {
                tracing::warn!(%key, %status, "removing a failed extraction snapshot");
            }
        }
        result
    }

    /// The diff service's Apply of `layer` onto `mounts`, then the Commit of `key`.
    async fn apply_and_commit(
        &self,
        layer: &Layer,
        key: &str,
        mounts: Vec<containerd_client::types::Mount>,
    ) -> Result<(), Problem> {
        tracing::debug!(layer = %layer.desc.digest, chain_id = %layer.chain_id, "applying layer");
        let diff = Descriptor {
            media_type: layer.desc.media_type.clone(),
            digest: layer.desc.digest.clone(),
            size: layer.desc.size,
            annotations: HashMap::new(),
        };
        let request = ApplyRequest {
            diff: Some(diff),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        };
        let applied = DiffClient::with_interceptor(self.channel.clone(), self.meta.clone())
            .apply(request)
            .await
            .map_err(rpc(format!("diff Apply {}", layer.desc.digest)))?
            .into_inner()
            .applied
            .unwrap_or_default();
        if applied.digest != layer.diff_id {
            return Err(Problem::DigestMismatch {
                what: format!("uncompressed layer {}", layer.desc.digest),
                expected: layer.diff_id.clone(),
                actual: applied.digest,
            });
        }
        let commit = CommitSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            name: layer.chain_id.clone(),
            key: key.to_string(),
            labels: HashMap::new(),
        };
        match self.snapshots().commit(commit).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                // Someone else unpacked the same layer meanwhile: theirs is as good as ours.
                let remove = RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_string(),
                };
                self.snapshots()
                    .remove(remove)
                    .await
                    .map_err(rpc(format!("snapshots Remove {key}")))?;
                self.hold(&format!("snapshots/{}", self.snapshotter), &layer.chain_id)
                    .await
            }
            Err(status) => Err(rpc(format!("snapshots Commit {}", layer.chain_id))(status)),
        }
    }

    /// The target of image record `name`, if there is one.
    pub(crate) async fn image_target(&self, name: &str) -> Result<Option<Desc>, Problem> {
        match self
            .images()
            .get(GetImageRequest {
                name: name.to_string(),
            })
            .await
        {
            Ok(response) => Ok(response
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| Desc {
                    media_type: t.media_type,
                    digest: t.digest,
                    size: t.size,
                })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(rpc(format!("images Get {name}"))(status)),
        }
    }

    /// Creates image record `name` pointing at `target`, or points the existing one there.
    pub(crate) async fn put_image(&self, name: &str, target: &Desc) -> Result<(), Problem> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::from([(CRI_MANAGED.0.to_string(), CRI_MANAGED.1.to_string())]),
            target: Some(Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let create = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match self.images().create(create).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let paths = vec!["target".to_string(), format!("labels.{}", CRI_MANAGED.0)];
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    source_date_epoch: None,
                };
                self.images()
                    .update(update)
                    .await
                    .map_err(rpc(format!("images Update {name}")))?;
                Ok(())
            }
            Err(status) => Err(rpc(format!("images Create {name}"))(status)),
        }
    }
}

/// One blob being written with the content service's `Write` stream, sent in lock step:
/// every request waits for its response.
pub(crate) struct BlobWriter {
    store: Store,
    desc: Desc,
    reference: String,
    tx: futures::channel::mpsc::UnboundedSender<WriteContentRequest>,
    /// `None` once it turned out the blob already exists: writes are then ignored.
    responses: Option<tonic::Streaming<WriteContentResponse>>,
    offset: i64,
    hasher: Sha256,
}

impl BlobWriter {
    /// This writer, turned into one for a blob that someone else already wrote.
    fn existing(mut self) -> Self {
        self.responses = None;
        self
    }

    /// Queues one request of the stream.
    fn send(
        &self,
        action: WriteAction,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(), Problem> {
        let request = WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: self.desc.size,
            expected: self.desc.digest.clone(),
            offset: self.offset,
            data,
            labels,
        };
        self.tx.unbounded_send(request).map_err(|_| Problem::Rpc {
            op: format!("content Write {}", self.desc.digest),
            code: Code::Aborted,
            message: "the write stream closed".into(),
        })
    }

    /// The response to the last request.
    async fn reply(&mut self) -> Result<WriteContentResponse, Problem> {
        let op = format!("content Write {}", self.desc.digest);
        let Some(responses) = self.responses.as_mut() else {
            return Ok(WriteContentResponse::default());
        };
        match responses.message().await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(Problem::Rpc {
                op,
                code: Code::Aborted,
                message: "the stream ended early".into(),
            }),
            Err(status) => Err(rpc(op)(status)),
        }
    }

    /// Writes the next bytes of the blob.
    pub(crate) async fn write(&mut self, data: Vec<u8>) -> Result<(), Problem> {
        if self.responses.is_none() || data.is_empty() {
            return Ok(());
        }
        self.hasher.update(&data);
        let len = data.len() as i64;
        self.send(WriteAction::Write, data, HashMap::new())?;
        let response = self.reply().await?;
        self.offset += len;
        if response.offset != self.offset {
            return Err(Problem::Rpc {
                op: format!("content Write {}", self.desc.digest),
                code: Code::DataLoss,
                message: format!(
                    "containerd is at offset {}, expected {}",
                    response.offset, self.offset
                ),
            });
        }
        Ok(())
    }

    /// Checks size and digest, then commits the blob with `labels`.
    pub(crate) async fn commit(mut self, labels: &BTreeMap<String, String>) -> Result<(), Problem> {
        if self.responses.is_none() {
            return self
                .store
                .ensure_labels(&self.desc, labels)
                .await
                .map(|_| ());
        }
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.desc.digest || self.offset != self.desc.size {
            self.abort().await;
            return Err(Problem::DigestMismatch {
                what: format!("blob of {} bytes (read {})", self.desc.size, self.offset),
                expected: self.desc.digest.clone(),
                actual,
            });
        }
        self.send(
            WriteAction::Commit,
            Vec::new(),
            labels.clone().into_iter().collect(),
        )?;
        match self.reply().await {
            Ok(response) if response.digest == self.desc.digest => {}
            Ok(response) => {
                return Err(Problem::DigestMismatch {
                    what: "blob committed by containerd".into(),
                    expected: self.desc.digest.clone(),
                    actual: response.digest,
                });
            }
            Err(Problem::Rpc {
                code: Code::AlreadyExists,
                ..
            }) => {
                return self
                    .store
                    .ensure_labels(&self.desc, labels)
                    .await
                    .map(|_| ());
            }
            Err(problem) => return Err(problem),
        }
        self.tx.close_channel();
        // The server ends the call once the stream closes; wait for its status.
        while let Some(responses) = self.responses.as_mut() {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(status) => {
                    return Err(rpc(format!("content Write {}", self.desc.digest))(status));
                }
            }
        }
        tracing::debug!(digest = %self.desc.digest, size = self.desc.size, "wrote blob");
        Ok(())
    }

    /// Gives up on the blob and drops what was written of it.
    pub(crate) async fn abort(&mut self) {
        self.tx.close_channel();
        if self.responses.take().is_some() {
            let request = AbortRequest {
                r#ref: self.reference.clone(),
            };
            if let Err(status) = self.store.content().abort(request).await
                && status.code() != Code::NotFound
            {
                tracing::debug!(reference = %self.reference, %status, "aborting a content write");
            }
        }
    }
}

/// RFC 3339 UTC time of `secs` after the Unix epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
