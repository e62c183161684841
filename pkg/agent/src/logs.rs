//! Container log rotation, as kubelet's container log manager does it: every `interval` the
//! log file of each running container that has reached `max_size` is renamed to
//! `<log>.<YYYYMMDD-HHMMSS>` and containerd is told to write a new one (CRI
//! `ReopenContainerLog`; if that fails the file is renamed back and tried again next round).
//! Before each rotation, leftovers of an interrupted compression go, the oldest rotated files
//! go until `max_files - 2` remain, and the remaining uncompressed ones are gzipped: a
//! container then has at most `max_files` log files, the current one included, and the newest
//! rotated one stays plain. `kubectl logs` reads the current file only, as upstream's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubox_containerd::cri::{Cri, api};

/// kubelet's `containerLogMaxSize`, `containerLogMaxFiles` and `containerLogMonitorInterval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Bytes a log file may reach before it is rotated.
    pub max_size: u64,
    /// Log files per container, the current one included (at least 2).
    pub max_files: u32,
    /// How often the sizes are checked.
    pub interval: Duration,
}

impl Default for LogRotation {
    /// kubelet's defaults: 10Mi, 5 files, every 10 s.
    fn default() -> LogRotation {
        LogRotation {
            max_size: 10 << 20,
            max_files: 5,
            interval: Duration::from_secs(10),
        }
    }
}

const COMPRESS_SUFFIX: &str = ".gz";
const TMP_SUFFIX: &str = ".tmp";

/// Rotates the logs of this node's running containers until aborted.
pub async fn run(cri: Cri, cfg: LogRotation) {
    let cfg = LogRotation {
        max_files: cfg.max_files.max(2),
        interval: cfg.interval.max(Duration::from_millis(100)),
        ..cfg
    };
    loop {
        tokio::time::sleep(cfg.interval).await;
        if let Err(e) = rotate_all(&cri, &cfg).await {
            tracing::debug!(error = %e.message(), "listing containers for log rotation failed");
        }
    }
}

async fn rotate_all(cri: &Cri, cfg: &LogRotation) -> Result<(), tonic::Status> {
    let mut rt = cri.runtime.clone();
    let running = cri.running_containers().await?;
    for c in running {
        let Ok(status) = rt
            .container_status(api::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
        else {
            continue;
        };
        let Some(status) = status.into_inner().status else {
            continue;
        };
        if status.log_path.is_empty() {
            continue;
        }
        let log = PathBuf::from(&status.log_path);
        let Ok(meta) = tokio::fs::metadata(&log).await else {
            continue;
        };
        if meta.len() < cfg.max_size {
            continue;
        }
        if let Err(e) = rotate(cri, &c.id, &log, cfg.max_files).await {
            tracing::warn!(container = %c.id, log = %log.display(), error = %e, "rotating a container log failed");
        }
    }
    Ok(())
}

/// One rotation of the log file `log` of container `id`.
async fn rotate(cri: &Cri, id: &str, log: &Path, max_files: u32) -> Result<(), String> {
    let dir_log = log.to_path_buf();
    let rotated = tokio::task::spawn_blocking(move || prepare(&dir_log, max_files))
        .await
        .map_err(|e| e.to_string())??;
    let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    let target = PathBuf::from(format!("{}.{stamp}", log.display()));
    let target_gz = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", target.display()));
    if rotated.contains(&target) || rotated.contains(&target_gz) {
        // Rotated already this second: next round.
        return Ok(());
    }
    std::fs::rename(log, &target).map_err(|e| format!("renaming to {}: {e}", target.display()))?;
    if let Err(e) = cri
        .runtime
        .clone()
        .reopen_container_log(api::ReopenContainerLogRequest {
            container_id: id.to_string(),
        })
        .await
    {
        // Put it back so that the next round tries again.
        let _ = std::fs::rename(&target, log);
        return Err(format!(
            "containerd did not reopen the log: {}",
            e.message()
        ));
    }
    tracing::debug!(container = %id, rotated = %target.display(), "rotated a container log");
    Ok(())
}

/// The rotated files of `log` (`<log>.*`), by name: oldest first.
fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Gets `log`'s rotated files ready for one more: drops temporary files and plain files whose
/// compressed copy exists, the oldest until `max_files - 2` remain, and compresses the rest.
/// Returns the rotated files left.
fn prepare(log: &Path, max_files: u32) -> Result<Vec<PathBuf>, String> {
    let mut kept = Vec::new();
    let all = rotated_files(log);
    for f in &all {
        let s = f.to_string_lossy();
        let superseded = !s.ends_with(COMPRESS_SUFFIX)
            && all
                .iter()
                .any(|o| o.to_string_lossy() == format!("{s}{COMPRESS_SUFFIX}"));
        if s.ends_with(TMP_SUFFIX) || superseded {
            let _ = std::fs::remove_file(f);
        } else {
            kept.push(f.clone());
        }
    }
    let keep = max_files.saturating_sub(2) as usize;
    while kept.len() > keep {
        let oldest = kept.remove(0);
        std::fs::remove_file(&oldest).map_err(|e| format!("removing {}: {e}", oldest.display()))?;
    }
    for f in kept.iter_mut() {
        if !f.to_string_lossy().ends_with(COMPRESS_SUFFIX) {
            *f = compress(f)?;
        }
    }
    Ok(kept)
}

/// Gzips `f` into `<f>.gz` (through `<f>.gz.tmp`) and removes `f`.
fn compress(f: &Path) -> Result<PathBuf, String> {
    let gz = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", f.display()));
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", gz.display()));
    let err = |e: std::io::Error| format!("compressing {}: {e}", f.display());
    let mut input = std::fs::File::open(f).map_err(err)?;
    let out = std::fs::File::create(&tmp).map_err(err)?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut enc).map_err(err)?;
    enc.finish().and_then(|mut o| o.flush()).map_err(err)?;
    std::fs::rename(&tmp, &gz).map_err(err)?;
    let _ = std::fs::remove_file(f);
    Ok(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_are_pruned_to_max_files_and_compressed_but_the_newest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("0.log");
        let write = |name: &str, data: &str| {
            std::fs::write(dir.path().join(name), data).unwrap_or_else(|e| panic!("{e}"));
        };
        write("0.log", "current\n");
        write("1.log", "another attempt\n");
        write("0.log.20260101-000001.gz", "old");
        write("0.log.20260101-000002", "plain, compressed copy exists");
        write("0.log.20260101-000002.gz", "gz");
        write("0.log.20260101-000003", "third\n");
        write("0.log.20260101-000004.gz.tmp", "partial");
        write("0.log.20260101-000005", "newest\n");
        let kept = prepare(&log, 4).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = kept
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["0.log.20260101-000003.gz", "0.log.20260101-000005.gz"],
            "max_files 4: two rotated files stay before the next rotation, compressed"
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "0.log",
                "0.log.20260101-000003.gz",
                "0.log.20260101-000005.gz",
                "1.log"
            ]
        );
        let gz = std::fs::File::open(dir.path().join("0.log.20260101-000005.gz"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "newest\n");
    }
}
