//! The last applied snapshot on disk (`--state-dir`), so that a node restarted while its
//! control plane is away boots from it and serves at once, then resyncs when the stream
//! comes back.
//!
//! One file, `snapshot.bin`: a magic line, the SHA-256 of the payload, and the snapshot
//! as protobuf. It is written after each applied version through a temporary file that
//! is synced and renamed over the old one (and the directory synced), so a crash leaves
//! the previous file or the new one, never a mix. It carries the keys of TLS binds, so it
//! is created readable by its owner only. A file that is missing, truncated, corrupt or
//! from another format is reported and ignored: the node then waits for its control
//! plane, as without a cache.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use sluice_proto::v1 as pb;

/// The first bytes of a cache file (format version 1).
const MAGIC: &[u8; 16] = b"sluice-snapshot1";
const FILE: &str = "snapshot.bin";

/// Why the cached snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: not a snapshot cache file (or a truncated one)")]
    Format(PathBuf),
    #[error("{0}: checksum mismatch")]
    Checksum(PathBuf),
    #[error("{path}: the snapshot does not decode: {error}")]
    Decode {
        path: PathBuf,
        error: prost::DecodeError,
    },
}

/// The snapshot cache in one directory.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    dir: PathBuf,
}

impl SnapshotCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The cached snapshot; `None` when there is none yet.
    pub fn load(&self) -> Result<Option<pb::Snapshot>, CacheError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(CacheError::Io { path, error }),
        };
        let (Some(magic), Some(sum)) = (
            bytes.get(..MAGIC.len()),
            bytes.get(MAGIC.len()..MAGIC.len() + 32),
        ) else {
            return Err(CacheError::Format(path));
        };
        if magic != MAGIC {
            return Err(CacheError::Format(path));
        }
        let payload = &bytes[MAGIC.len() + 32..];
        if Sha256::digest(payload).as_slice() != sum {
            return Err(CacheError::Checksum(path));
        }
        pb::Snapshot::decode(payload)
            .map(Some)
            .map_err(|error| CacheError::Decode { path, error })
    }

    /// Replaces the cached snapshot with `snap`, atomically.
    pub fn save(&self, snap: &pb::Snapshot) -> Result<(), CacheError> {
        let payload = snap.encode_to_vec();
        let parts: [&[u8]; 3] = [MAGIC, &Sha256::digest(&payload), &payload];
        write_private(&self.dir, FILE, &parts)
            .map_err(|(path, error)| CacheError::Io { path, error })
    }
}

/// Replaces `dir/name` with `parts`, atomically and durably (a temporary file synced and
/// renamed over it, then the directory synced), readable by its owner only; on failure,
/// the path that failed.
pub(crate) fn write_private(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
) -> Result<(), (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |error| (path, error)
    };
    fs::create_dir_all(dir).map_err(at(dir))?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = open_private(&tmp).map_err(at(&tmp))?;
        for part in parts {
            file.write_all(part).map_err(at(&tmp))?;
        }
        file.sync_all().map_err(at(&tmp))?;
    }
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(at(&path))?;
    // The rename itself is durable once the directory is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))?;
    Ok(())
}

/// A new file readable and writable by its owner only (it holds private keys).
fn open_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64) -> pb::Snapshot {
        pb::Snapshot {
            version,
            backends: vec![pb::Backend {
                name: "be".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path().join("state"));
        assert!(cache.load().unwrap().is_none(), "nothing cached yet");
        cache.save(&snapshot(3)).unwrap();
        cache.save(&snapshot(4)).unwrap();
        assert_eq!(cache.load().unwrap(), Some(snapshot(4)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cache.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "it holds private keys");
        }

        let good = fs::read(cache.path()).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(cache.path(), &flipped).unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Checksum(_))));
        fs::write(cache.path(), &good[..20]).unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Format(_))));
        fs::write(cache.path(), b"garbage").unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Format(_))));
    }
}
