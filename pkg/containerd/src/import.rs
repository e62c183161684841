//! Image archive import through containerd's native API, done on the client side like
//! `ctr images import` (containerd 1.6 has no import RPC).
//!
//! An archive (`.tar`, gzip or zstd compressed, found from its magic bytes) is either an OCI
//! image layout or a `docker save` archive. The import reads it twice: a first pass hashes
//! every file and checks it before anything is written, a second streams the blobs that
//! containerd lacks into its content store. All of it runs under a lease, with the labels
//! that keep the content from the garbage collector; the host platform's layers are then
//! unpacked into snapshots for the snapshotter and the image records created last, so a
//! failed import leaves no image behind.

mod archive;
mod plan;
mod reference;
pub use reference::normalize as normalize_reference;
mod store;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tonic::transport::Channel;

use archive::{Piece, Source};
use plan::{Blob, Content, Plan};
use store::Store;

/// What one archive held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Full references of the images, e.g. `docker.io/library/busybox:test`.
    pub images: Vec<String>,
    /// True when every image was already imported and unpacked: nothing was changed.
    pub skipped: bool,
}

/// Why an import failed; every message names the archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the archive failed.
    #[error("image archive {archive}: {what}: {source}")]
    Io {
        archive: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The archive is not a valid image archive.
    #[error("image archive {archive} is malformed: {reason}")]
    Malformed { archive: String, reason: String },
    /// The archive uses something this importer does not handle.
    #[error("image archive {archive}: unsupported {what}")]
    Unsupported { archive: String, what: String },
    /// A blob has a media type this importer does not handle.
    #[error("image archive {archive}: unsupported media type {media_type:?} of {what}")]
    UnsupportedMediaType {
        archive: String,
        media_type: String,
        what: String,
    },
    /// Content does not hash to the digest that names it.
    #[error(
        "image archive {archive}: digest mismatch for {what}: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        archive: String,
        what: String,
        expected: String,
        actual: String,
    },
    /// A containerd call failed.
    #[error("image archive {archive}: containerd {op} failed: {code:?}: {message}")]
    Rpc {
        archive: String,
        op: String,
        code: tonic::Code,
        message: String,
    },
    /// The namespace cannot be sent to containerd.
    #[error("image archive {archive}: invalid containerd namespace {namespace:?}")]
    Namespace { archive: String, namespace: String },
}

/// An import failure before the archive's name is attached (see [`Error`]).
#[derive(Debug)]
pub(crate) enum Problem {
    Io {
        what: String,
        source: std::io::Error,
    },
    Malformed(String),
    Unsupported(String),
    UnsupportedMediaType {
        media_type: String,
        what: String,
    },
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    Rpc {
        op: String,
        code: tonic::Code,
        message: String,
    },
}

impl Problem {
    /// Reading the archive failed while doing `what`.
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Problem::Io {
            what: what.to_string(),
            source,
        }
    }

    /// The archive is malformed.
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Problem::Malformed(reason.into())
    }

    /// The public error for archive `archive`.
    fn into_error(self, archive: String) -> Error {
        match self {
            Problem::Io { what, source } => Error::Io {
                archive,
                what,
                source,
            },
            Problem::Malformed(reason) => Error::Malformed { archive, reason },
            Problem::Unsupported(what) => Error::Unsupported { archive, what },
            Problem::UnsupportedMediaType { media_type, what } => Error::UnsupportedMediaType {
                archive,
                media_type,
                what,
            },
            Problem::DigestMismatch {
                what,
                expected,
                actual,
            } => Error::DigestMismatch {
                archive,
                what,
                expected,
                actual,
            },
            Problem::Rpc { op, code, message } => Error::Rpc {
                archive,
                op,
                code,
                message,
            },
        }
    }
}

/// Imports every image in the archive at `path` into containerd `namespace` and unpacks it
/// for `snapshotter`, so CRI can run it.
///
/// Content already present is not rewritten; an image whose record and unpacked snapshot
/// already exist is skipped ([`Imported::skipped`] if everything was).
pub async fn import_archive(
    channel: Channel,
    namespace: &str,
    snapshotter: &str,
    path: &Path,
) -> Result<Imported, Error> {
    import(
        channel,
        namespace,
        snapshotter,
        Source::File(path.to_path_buf()),
    )
    .await
}

/// Imports the archive held in memory (used for the embedded pause image); see
/// [`import_archive`].
pub async fn import_bytes(
    channel: Channel,
    namespace: &str,
    snapshotter: &str,
    archive: &[u8],
) -> Result<Imported, Error> {
    import(
        channel,
        namespace,
        snapshotter,
        Source::Bytes(Arc::from(archive)),
    )
    .await
}

/// Runs one import and logs its outcome.
async fn import(
    channel: Channel,
    namespace: &str,
    snapshotter: &str,
    source: Source,
) -> Result<Imported, Error> {
    let label = source.label();
    let started = Instant::now();
    let Some(store) = Store::new(channel, namespace, snapshotter) else {
        return Err(Error::Namespace {
            archive: label,
            namespace: namespace.to_string(),
        });
    };
    let imported = run(&store, &source)
        .await
        .map_err(|p| p.into_error(label.clone()))?;
    tracing::info!(
        archive = %label,
        images = ?imported.images,
        skipped = imported.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "imported image archive"
    );
    Ok(imported)
}

/// Scans and plans, then applies the plan under a lease.
async fn run(store: &Store, source: &Source) -> Result<Imported, Problem> {
    let scan_source = source.clone();
    let scan = tokio::task::spawn_blocking(move || archive::scan(&scan_source))
        .await
        .map_err(|e| Problem::malformed(format!("scanning the archive panicked: {e}")))??;
    let plan = plan::build(&scan, store.snapshotter())?;
    drop(scan);
    let leased = store.with_lease().await?;
    let result = apply(&leased, source, plan).await;
    leased.release().await;
    result
}

/// Writes missing content, unpacks, and creates the image records.
async fn apply(store: &Store, source: &Source, plan: Plan) -> Result<Imported, Problem> {
    // Which images are complete already: same record target and unpacked top snapshot.
    let mut complete = Vec::with_capacity(plan.images.len());
    let mut current = HashSet::new();
    for image in &plan.images {
        let mut done = match image.unpack.layers.last() {
            Some(top) => store.snapshot_exists(&top.chain_id).await?,
            None => true,
        };
        for name in &image.names {
            if store.image_target(name).await?.as_ref() == Some(&image.target) {
                current.insert(name.as_str());
            } else {
                done = false;
            }
        }
        complete.push(done);
    }

    // Content: present blobs get their labels, missing ones are written.
    let mut wanted = HashMap::new();
    let mut generated = Vec::new();
    let by_digest: HashMap<&str, &Blob> = plan
        .blobs
        .iter()
        .map(|b| (b.desc.digest.as_str(), b))
        .collect();
    for blob in &plan.blobs {
        if store.ensure_labels(&blob.desc, &blob.labels).await? {
            continue;
        }
        match &blob.content {
            Content::Archive(index) => {
                wanted.insert(*index, blob.desc.digest.clone());
            }
            Content::Memory(bytes) => generated.push((blob, bytes)),
            Content::Absent if blob.required => {
                return Err(Problem::malformed(format!(
                    "layer {} is neither in the archive nor in containerd's content store",
                    blob.desc.digest
                )));
            }
            Content::Absent => {}
        }
    }
    if !wanted.is_empty() {
        write_from_archive(store, source, wanted, &by_digest).await?;
    }
    for (blob, bytes) in generated {
        let mut writer = store.writer(&blob.desc).await?;
        writer.write(bytes.clone()).await?;
        writer.commit(&blob.labels).await?;
    }

    // Unpack, then point the names at the images.
    let mut unpacked = HashSet::new();
    for (image, done) in plan.images.iter().zip(&complete) {
        if *done {
            continue;
        }
        if let Some(top) = image.unpack.layers.last()
            && unpacked.insert(top.chain_id.clone())
        {
            let applied = store.unpack(&image.unpack.layers).await?;
            tracing::debug!(image = ?image.names, config = %image.unpack.config, applied, "unpacked");
        }
        for name in image.names.iter().filter(|n| !current.contains(n.as_str())) {
            store.put_image(name, &image.target).await?;
        }
    }

    let mut images = Vec::new();
    for name in plan.images.iter().flat_map(|i| &i.names) {
        if !images.contains(name) {
            images.push(name.clone());
        }
    }
    Ok(Imported {
        images,
        skipped: complete.iter().all(|done| *done),
    })
}

/// The second pass: streams the archive entries in `wanted` (tar position → digest) into
/// the content store.
async fn write_from_archive(
    store: &Store,
    source: &Source,
    wanted: HashMap<usize, String>,
    blobs: &HashMap<&str, &Blob>,
) -> Result<(), Problem> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reader_source = source.clone();
    let reader = tokio::task::spawn_blocking(move || archive::stream(&reader_source, wanted, &tx));
    let result = async {
        while let Some(piece) = rx.recv().await {
            let digest = match piece {
                Piece::Begin(digest) => digest,
                Piece::Failed(problem) => return Err(problem),
                Piece::Data(_) | Piece::End => {
                    return Err(Problem::malformed("archive stream out of order"));
                }
            };
            let blob = blobs
                .get(digest.as_str())
                .ok_or_else(|| Problem::malformed(format!("unexpected blob {digest}")))?;
            let mut writer = store.writer(&blob.desc).await?;
            loop {
                match rx.recv().await {
                    Some(Piece::Data(data)) => {
                        if let Err(problem) = writer.write(data).await {
                            writer.abort().await;
                            return Err(problem);
                        }
                    }
                    Some(Piece::End) => break,
                    Some(Piece::Failed(problem)) => {
                        writer.abort().await;
                        return Err(problem);
                    }
                    Some(Piece::Begin(_)) | None => {
                        writer.abort().await;
                        return Err(Problem::malformed(format!(
                            "the archive ended inside {digest}"
                        )));
                    }
                }
            }
            writer.commit(&blob.labels).await?;
        }
        Ok(())
    }
    .await;
    drop(rx);
    if let Err(e) = reader.await {
        tracing::warn!(error = %e, "the archive reader thread failed");
    }
    result
}
