//! Reading image archives: the outer compression (found from magic bytes), a first pass that
//! hashes every file and keeps the small JSON documents, and a second pass that streams chosen
//! files to the content store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Problem;

/// Largest document kept in memory during the scan (manifests, configs, index.json).
const MAX_DOCUMENT: u64 = 16 << 20;
/// Size of the pieces files are read and sent in.
pub(crate) const CHUNK: usize = 1 << 20;
/// Symlinks followed when resolving one archive path.
const MAX_LINKS: usize = 16;

/// Where an archive's bytes come from.
#[derive(Clone)]
pub(crate) enum Source {
    /// A file on disk, read once per pass.
    File(PathBuf),
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
}

/// Compression recognized from the first bytes of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression that `magic` (a stream's first bytes) starts with.
    pub(crate) fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl Source {
    /// How errors name this archive.
    pub(crate) fn label(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Bytes(_) => "<archive in memory>".to_string(),
        }
    }

    /// The archive's tar stream, decompressed according to its magic bytes.
    fn open_tar(&self) -> Result<Box<dyn Read + Send>, Problem> {
        let raw: Box<dyn Read + Send> = match self {
            Source::File(path) => {
                Box::new(File::open(path).map_err(|e| Problem::io("opening the archive", e))?)
            }
            Source::Bytes(bytes) => Box::new(std::io::Cursor::new(Arc::clone(bytes))),
        };
        let mut reader = BufReader::with_capacity(CHUNK, raw);
        let magic = reader
            .fill_buf()
            .map_err(|e| Problem::io("reading the archive", e))?;
        if magic.starts_with(b"BZh") || magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            return Err(Problem::Unsupported(
                "bzip2 and xz compressed archives; use gzip, zstd or none".into(),
            ));
        }
        Ok(match Compression::detect(magic) {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(reader)
                    .map_err(|e| Problem::io("starting zstd decompression", e))?,
            ),
            Compression::None => Box::new(reader),
        })
    }
}

/// What the scan learned about one regular file of the archive.
#[derive(Debug)]
pub(crate) struct FileInfo {
    /// Position of the tar entry (the last one wins when a path repeats).
    pub index: usize,
    pub size: u64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Compression of the content itself (for layers).
    pub compression: Compression,
    /// The content, for small files that look like JSON documents.
    pub data: Option<Vec<u8>>,
}

/// Every file of an archive, hashed; links recorded to be followed on lookup.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    files: HashMap<String, FileInfo>,
    links: HashMap<String, String>,
}

impl Scan {
    /// The regular file at `path`, following symbolic and hard links.
    pub(crate) fn file(&self, path: &str) -> Option<&FileInfo> {
        let mut path = clean(path)?;
        for _ in 0..MAX_LINKS {
            if let Some(info) = self.files.get(&path) {
                return Some(info);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    /// The content of the JSON document at `path`, if the scan kept it.
    pub(crate) fn document(&self, path: &str) -> Option<&[u8]> {
        self.file(path)?.data.as_deref()
    }

    /// True when the archive has a file (or link) at `path`.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.file(path).is_some()
    }
}

/// The first pass: hashes every regular file and keeps JSON documents; blob files under
/// `blobs/sha256/` must hash to their name.
pub(crate) fn scan(source: &Source) -> Result<Scan, Problem> {
    let mut archive = tar::Archive::new(source.open_tar()?);
    let entries = archive
        .entries()
        .map_err(|e| Problem::malformed(format!("not a tar archive: {e}")))?;
    let mut scan = Scan::default();
    for (index, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| Problem::malformed(format!("bad tar entry #{index}: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| Problem::malformed(format!("bad path in tar entry #{index}: {e}")))?;
        let Some(path) = clean(&raw_path.to_string_lossy()) else {
            return Err(Problem::malformed(format!(
                "unsafe path {} in tar",
                raw_path.display()
            )));
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let joined = if kind.is_symlink() && !target.starts_with('/') {
                match path.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target,
                }
            } else {
                target
            };
            if let Some(target) = clean(&joined) {
                scan.files.remove(&path);
                scan.links.insert(path, target);
            }
            continue;
        }
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            continue;
        }
        let size = entry.size();
        let mut hasher = Sha256::new();
        let mut data = Vec::new();
        let mut keep = None;
        let mut compression = Compression::None;
        let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
        let mut total = 0u64;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| Problem::malformed(format!("reading {path} from the tar: {e}")))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if total == 0 {
                compression = Compression::detect(chunk);
                let first = chunk.iter().find(|b| !b.is_ascii_whitespace());
                keep = Some(size <= MAX_DOCUMENT && matches!(first, Some(b'{' | b'[')));
            }
            total += n as u64;
            hasher.update(chunk);
            if keep == Some(true) {
                data.extend_from_slice(chunk);
            }
        }
        if total != size {
            return Err(Problem::malformed(format!(
                "{path} is truncated: {total} of {size} bytes"
            )));
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(name) = path.strip_prefix("blobs/sha256/") {
            let expected = format!("sha256:{name}");
            if !name.contains('/') && expected != digest {
                return Err(Problem::DigestMismatch {
                    what: path,
                    expected,
                    actual: digest,
                });
            }
        }
        scan.links.remove(&path);
        let data = (keep == Some(true)).then_some(data);
        scan.files.insert(
            path,
            FileInfo {
                index,
                size,
                digest,
                compression,
                data,
            },
        );
    }
    Ok(scan)
}

/// One step of the second pass, sent from the reading thread to the writer.
#[derive(Debug)]
pub(crate) enum Piece {
    /// A wanted file starts: its expected digest.
    Begin(String),
    /// The next bytes of that file.
    Data(Vec<u8>),
    /// The file is complete.
    End,
    /// Reading failed; nothing follows.
    Failed(Problem),
}

/// The second pass: sends the files at the entry positions in `wanted` (position → digest)
/// through `tx`, stopping early once all were sent or when the receiver is gone.
pub(crate) fn stream(
    source: &Source,
    mut wanted: HashMap<usize, String>,
    tx: &tokio::sync::mpsc::Sender<Piece>,
) {
    if let Err(problem) = stream_inner(source, &mut wanted, tx) {
        let _ = tx.blocking_send(Piece::Failed(problem));
    } else if !wanted.is_empty() {
        let missing = wanted.into_values().collect::<Vec<_>>().join(", ");
        let _ = tx.blocking_send(Piece::Failed(Problem::malformed(format!(
            "the archive changed while importing: {missing} not found on the second read"
        ))));
    }
}

/// Body of [`stream`]; `Ok` also when the receiver hung up.
fn stream_inner(
    source: &Source,
    wanted: &mut HashMap<usize, String>,
    tx: &tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), Problem> {
    if wanted.is_empty() {
        return Ok(());
    }
    let mut archive = tar::Archive::new(source.open_tar()?);
    let entries = archive
        .entries()
        .map_err(|e| Problem::malformed(format!("not a tar archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| Problem::malformed(format!("bad tar entry #{index}: {e}")))?;
        let Some(digest) = wanted.remove(&index) else {
            continue;
        };
        if tx.blocking_send(Piece::Begin(digest)).is_err() {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(&mut entry, &mut buf)
                .map_err(|e| Problem::malformed(format!("reading tar entry #{index}: {e}")))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if tx.blocking_send(Piece::Data(buf)).is_err() {
                return Ok(());
            }
        }
        if tx.blocking_send(Piece::End).is_err() || wanted.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `path` relative to the archive root without `.` components, or `None` if it escapes it.
fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}
