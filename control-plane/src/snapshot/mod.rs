//! Turning committed configuration into versioned snapshots and publishing them.
//!
//! [`ConfigService::apply`] is the single write path for every versioned change: it
//! serializes writers, reads the current configuration (document and certificates, one
//! read), computes the next one, validates it as a whole ([`crate::config::snapshot`]),
//! stores it with its snapshot in one transaction ([`Store::commit`]) and only then
//! publishes the new version ([`Published`]: the snapshot and its stream message, encoded
//! once) on a `watch` channel. Node streams subscribe to that
//! channel; `watch` collapses versions, so a slow node jumps straight to the newest.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use sluice_proto::v1 as pb;
use tokio::sync::{watch, Mutex};

use crate::clock::unix_ms;
use crate::config::{self, ConfigDocument, Configuration, Invalid};
use crate::events;
use crate::store::{CommitInfo, Store, StoreError};

/// Why a change was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("the configuration is at version {current}, not the version in If-Match")]
    Precondition { current: u64 },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a successful write.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: u64,
    /// False when the resulting configuration equals the current one: no version is
    /// created.
    pub changed: bool,
    pub summary: String,
}

/// A committed version as it is published to node sessions.
#[derive(Debug, Default)]
pub struct Published {
    pub snapshot: pb::Snapshot,
    /// The `ControlMessage` that ships it, encoded once and shared by every session.
    pub message: Bytes,
    /// SHA-256 of the encoded snapshot: what a node that applied it reports.
    pub digest: Vec<u8>,
    /// The features a node needs to apply it ([`config::features`]).
    pub features: Vec<&'static str>,
}

/// SHA-256 of an encoded snapshot.
pub fn digest(encoded: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(encoded).to_vec()
}

/// A digest as the API and the store show it.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Published {
    /// A stored version, as it was published.
    pub async fn load(store: &Store, version: u64) -> Result<Arc<Self>, ChangeError> {
        let row = store.get_snapshot(version).await?;
        let bytes = row.snapshot.filter(|b| !b.is_empty()).ok_or_else(|| {
            ChangeError::NotFound(format!(
                "the snapshot of version {version} is no longer kept"
            ))
        })?;
        let snap = pb::Snapshot::decode(bytes.as_slice()).map_err(|e| {
            ChangeError::Conflict(format!("stored snapshot {version} does not decode: {e}"))
        })?;
        Ok(Self::new(snap, &bytes))
    }

    /// Whether two versions carry the same plan (their numbers and times aside).
    pub fn same_plan(&self, other: &Published) -> bool {
        let plain = |s: &pb::Snapshot| pb::Snapshot {
            version: 0,
            created_unix_ms: 0,
            ..s.clone()
        };
        plain(&self.snapshot) == plain(&other.snapshot)
    }

    /// `encoded`: the snapshot's own encoding, as committed (its digest is taken from it).
    fn new(snapshot: pb::Snapshot, encoded: &[u8]) -> Arc<Self> {
        let digest = digest(encoded);
        let features = config::features::used(&snapshot);
        let message = pb::ControlMessage {
            msg: Some(pb::control_message::Msg::Snapshot(snapshot)),
        };
        let bytes = Bytes::from(message.encode_to_vec());
        let Some(pb::control_message::Msg::Snapshot(snapshot)) = message.msg else {
            unreachable!("built with a snapshot just above");
        };
        Arc::new(Self {
            snapshot,
            message: bytes,
            digest,
            features,
        })
    }
}

pub struct ConfigService {
    store: Store,
    /// Versions whose documents and snapshots are kept; older ones keep their summary.
    history_keep: u64,
    /// Serializes writers within this process; the store's conditional version bump
    /// protects against writers elsewhere.
    write: Mutex<()>,
    tx: watch::Sender<Arc<Published>>,
}

impl ConfigService {
    /// Loads the newest snapshot; a fresh database gets version 1, the empty configuration.
    /// The bodies of versions older than the newest `history_keep` are dropped as new ones
    /// come.
    pub async fn start(store: Store, history_keep: u64) -> Result<Self, ChangeError> {
        let (version, config) = store.load().await?;
        let (tx, _) = watch::channel(Arc::new(Published::default()));
        let service = Self {
            history_keep: history_keep.max(1),
            store,
            write: Mutex::new(()),
            tx,
        };
        if version == 0 {
            service
                .commit(0, &config, false, "initial empty configuration".into(), "")
                .await?;
        } else {
            service
                .tx
                .send_replace(Published::load(&service.store, version).await?);
        }
        Ok(service)
    }

    /// Publishes `p` unless a newer version already is (a replica's own commit and one
    /// learned from the database can race).
    fn publish(&self, p: Arc<Published>) -> bool {
        self.tx.send_if_modified(|current| {
            let newer = p.snapshot.version > current.snapshot.version;
            if newer {
                *current = p.clone();
            }
            newer
        })
    }

    /// Learns the versions other replicas on the same database commit and publishes
    /// them like its own: at once from PostgreSQL's notifications, and by checking the
    /// stored version every second (the fallback, and the only way on SQLite). Runs
    /// until shutdown.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut listener = match self.store.version_listener().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no version notifications; checking every second");
                None
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let heard = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                r = heard => if let Err(e) = r {
                    tracing::warn!(error = %e, "version notifications lost; checking every second");
                    listener = None;
                },
                _ = shutdown.changed() => break,
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "checking for newer versions");
            }
        }
    }

    /// Publishes the stored version if it is newer than the published one.
    async fn catch_up(&self) -> Result<(), ChangeError> {
        let stored = self.store.version().await?;
        if stored > self.current().snapshot.version {
            let p = Published::load(&self.store, stored).await?;
            if self.publish(p) {
                tracing::info!(
                    version = stored,
                    "learned a version committed by another replica"
                );
            }
        }
        Ok(())
    }

    /// Every new version, as it is committed (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// The newest committed version.
    pub fn current(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }

    /// The current version and configuration (one committed version).
    pub async fn read(&self) -> Result<(u64, Configuration), ChangeError> {
        Ok(self.store.load().await?)
    }

    /// The single write path for every versioned change (documents, objects, server
    /// states, certificates): applies `change` to the current configuration and commits
    /// the result if it is valid. `expected`: the version the caller's change is based on
    /// (If-Match), if any; `who`: the actor recorded with the version and its event.
    pub async fn apply<F>(
        &self,
        expected: Option<u64>,
        what: &str,
        who: &str,
        change: F,
    ) -> Result<Applied, ChangeError>
    where
        F: FnOnce(&mut Configuration) -> Result<(), ChangeError>,
    {
        let _guard = self.write.lock().await;
        let (version, current) = self.store.load().await?;
        check_expected(expected, version)?;
        let mut next = current.clone();
        change(&mut next)?;
        next.certificates.sort_by(|a, b| a.name.cmp(&b.name));
        if next == current {
            // Nothing to store, but the answer is the same as for a write.
            config::snapshot(&next)?;
            return Ok(Applied {
                version,
                changed: false,
                summary: "no change".into(),
            });
        }
        let summary = if next.document == current.document {
            what.to_string()
        } else {
            format!(
                "{what}: {}",
                diff_summary(&current.document, &next.document)
            )
        };
        let certificates_changed = next.certificates != current.certificates;
        let version = self
            .commit(version, &next, certificates_changed, summary.clone(), who)
            .await?;
        Ok(Applied {
            version,
            changed: true,
            summary,
        })
    }

    /// Checks a document as a write would, against the stored certificates; stores
    /// nothing.
    pub async fn validate(&self, document: ConfigDocument) -> Result<(), ChangeError> {
        let (_, current) = self.store.load().await?;
        config::snapshot(&Configuration {
            document,
            certificates: current.certificates,
        })?;
        Ok(())
    }

    async fn commit(
        &self,
        from: u64,
        config: &Configuration,
        certificates_changed: bool,
        summary: String,
        who: &str,
    ) -> Result<u64, ChangeError> {
        let mut snap = config::snapshot(config)?;
        snap.version = from + 1;
        snap.created_unix_ms = unix_ms();
        let bytes = snap.encode_to_vec();
        let digest_hex = hex(&digest(&bytes));
        let version = self
            .store
            .commit(
                from,
                config,
                certificates_changed,
                &CommitInfo {
                    summary: &summary,
                    digest: &digest_hex,
                    actor: who,
                    created_unix_ms: snap.created_unix_ms,
                },
                &bytes,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict { current } => ChangeError::Precondition { current },
                e => e.into(),
            })?;
        tracing::info!(version, %summary, "committed configuration");
        self.publish(Published::new(snap, &bytes));
        let mut committed = events::event("version_committed", summary);
        committed.version = Some(version);
        committed.actor = (!who.is_empty()).then(|| who.to_string());
        events::record(&self.store, committed).await;
        // Retention is housekeeping: the commit stands whatever happens here.
        match self.store.prune_history(self.history_keep).await {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "dropped old history bodies"),
            Err(error) => tracing::warn!(%error, "could not apply the history retention"),
        }
        Ok(version)
    }
}

/// A write based on `expected` (If-Match) may only go ahead at that version.
fn check_expected(expected: Option<u64>, version: u64) -> Result<(), ChangeError> {
    match expected {
        Some(e) if e != version => Err(ChangeError::Precondition { current: version }),
        _ => Ok(()),
    }
}

/// A one-line account of what changed between two documents.
pub fn diff_summary(old: &ConfigDocument, new: &ConfigDocument) -> String {
    fn names<'a, T>(
        old: &'a [T],
        new: &'a [T],
        name: impl Fn(&T) -> &str,
        kind: &str,
        out: &mut Vec<String>,
    ) where
        T: PartialEq,
    {
        for n in new {
            match old.iter().find(|o| name(o) == name(n)) {
                None => out.push(format!("+{kind} {}", name(n))),
                Some(o) if o != n => out.push(format!("~{kind} {}", name(n))),
                Some(_) => {}
            }
        }
        for o in old {
            if !new.iter().any(|n| name(n) == name(o)) {
                out.push(format!("-{kind} {}", name(o)));
            }
        }
    }
    let mut out = Vec::new();
    if old.defaults != new.defaults {
        out.push("~defaults".to_string());
    }
    names(
        &old.frontends,
        &new.frontends,
        |f| &f.name,
        "frontend",
        &mut out,
    );
    names(
        &old.backends,
        &new.backends,
        |b| &b.name,
        "backend",
        &mut out,
    );
    if out.is_empty() {
        "reordered".into()
    } else {
        out.join(", ")
    }
}

#[cfg(test)]
mod tests;
