//! Turning committed configuration into versioned snapshots and publishing them.
//!
//! [`ConfigService`] is the single write path: it serializes writers, computes the new
//! document from the current one, validates it as a whole ([`crate::config::compile`]),
//! stores document and snapshot in one transaction ([`Store::commit`]) and only then
//! publishes the new `Arc<Snapshot>` on a `watch` channel. Node streams subscribe to that
//! channel; `watch` collapses versions, so a slow node jumps straight to the newest.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use sluice_proto::v1 as pb;
use tokio::sync::{watch, Mutex};

use crate::config::{compile, ConfigDocument, FieldError, Invalid};
use crate::store::{CertificateRow, Store, StoreError};

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
    /// False when the resulting document equals the current one: no version is created.
    pub changed: bool,
    pub summary: String,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct ConfigService {
    store: Store,
    /// Serializes writers within this process; the store's conditional version bump
    /// protects against writers elsewhere.
    write: Mutex<()>,
    tx: watch::Sender<Arc<pb::Snapshot>>,
}

impl ConfigService {
    /// Loads the newest snapshot; a fresh database gets version 1, the empty configuration.
    pub async fn start(store: Store) -> Result<Self, ChangeError> {
        let (version, doc) = store.load().await?;
        let (tx, _) = watch::channel(Arc::new(pb::Snapshot::default()));
        let service = Self {
            store,
            write: Mutex::new(()),
            tx,
        };
        if version == 0 {
            service
                .commit(0, &doc, None, "initial empty configuration".into())
                .await?;
        } else {
            let row = service.store.get_snapshot(version).await?;
            let bytes = row.snapshot.unwrap_or_default();
            let snap = pb::Snapshot::decode(bytes.as_slice()).map_err(|e| {
                ChangeError::Conflict(format!("stored snapshot {version} does not decode: {e}"))
            })?;
            service.tx.send_replace(Arc::new(snap));
        }
        Ok(service)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<pb::Snapshot>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<pb::Snapshot> {
        self.tx.borrow().clone()
    }

    pub async fn document(&self) -> Result<(u64, ConfigDocument), ChangeError> {
        Ok(self.store.load().await?)
    }

    /// Applies `change` to the current document and commits the result if it is valid.
    /// `expected`: the version the caller's change is based on (If-Match), if any.
    pub async fn apply<F>(
        &self,
        expected: Option<u64>,
        what: &str,
        change: F,
    ) -> Result<Applied, ChangeError>
    where
        F: FnOnce(&mut ConfigDocument) -> Result<(), ChangeError>,
    {
        let _guard = self.write.lock().await;
        let (version, current) = self.store.load().await?;
        check_expected(expected, version)?;
        let mut next = current.clone();
        change(&mut next)?;
        if next == current {
            // Nothing to store, but the answer is the same as for a write.
            self.validate(&next).await?;
            return Ok(Applied {
                version,
                changed: false,
                summary: "no change".into(),
            });
        }
        let summary = format!("{what}: {}", diff_summary(&current, &next));
        let version = self.commit(version, &next, None, summary.clone()).await?;
        Ok(Applied {
            version,
            changed: true,
            summary,
        })
    }

    /// Checks a document as a write would, certificate references included; stores
    /// nothing.
    pub async fn validate(&self, doc: &ConfigDocument) -> Result<(), ChangeError> {
        let certs = self.store.list_certificates().await?;
        attach_certificates(&mut compile(doc)?, &certs)?;
        Ok(())
    }

    /// The stored certificates (keys included: for the node stream and validation only).
    pub async fn certificates(&self) -> Result<(u64, Vec<CertificateRow>), ChangeError> {
        let version = self.store.version().await?;
        Ok((version, self.store.list_certificates().await?))
    }

    /// Applies `change` to the certificate set and commits a new version if it changed
    /// and every bind still finds its certificates.
    pub async fn apply_certificates<F>(
        &self,
        expected: Option<u64>,
        what: &str,
        change: F,
    ) -> Result<Applied, ChangeError>
    where
        F: FnOnce(&mut Vec<CertificateRow>) -> Result<(), ChangeError>,
    {
        let _guard = self.write.lock().await;
        let (version, doc) = self.store.load().await?;
        check_expected(expected, version)?;
        let current = self.store.list_certificates().await?;
        let mut next = current.clone();
        change(&mut next)?;
        next.sort_by(|a, b| a.name.cmp(&b.name));
        if next == current {
            return Ok(Applied {
                version,
                changed: false,
                summary: "no change".into(),
            });
        }
        let summary = what.to_string();
        let version = self
            .commit(version, &doc, Some(&next), summary.clone())
            .await?;
        Ok(Applied {
            version,
            changed: true,
            summary,
        })
    }

    async fn commit(
        &self,
        from: u64,
        doc: &ConfigDocument,
        certs: Option<&[CertificateRow]>,
        summary: String,
    ) -> Result<u64, ChangeError> {
        let mut snap = compile(doc)?;
        let stored;
        let certs = match certs {
            Some(c) => c,
            None => {
                stored = self.store.list_certificates().await?;
                &stored
            }
        };
        attach_certificates(&mut snap, certs)?;
        snap.version = from + 1;
        snap.created_unix_ms = now_ms();
        let bytes = snap.encode_to_vec();
        let version = self
            .store
            .commit(
                from,
                doc,
                Some(certs),
                &summary,
                snap.created_unix_ms,
                &bytes,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict { current } => ChangeError::Precondition { current },
                e => e.into(),
            })?;
        tracing::info!(version, %summary, "committed configuration");
        self.tx.send_replace(Arc::new(snap));
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

/// Resolves the binds' certificate names and carries the certificates they use in the
/// snapshot (only those: a node gets no key it does not serve).
fn attach_certificates(snap: &mut pb::Snapshot, certs: &[CertificateRow]) -> Result<(), Invalid> {
    let mut errors = Vec::new();
    let mut used: Vec<&CertificateRow> = Vec::new();
    for (i, f) in snap.frontends.iter().enumerate() {
        for (j, b) in f.binds.iter().enumerate() {
            let Some(tls) = &b.tls else { continue };
            for (k, name) in tls.certificates.iter().enumerate() {
                match certs.iter().find(|c| &c.name == name) {
                    Some(c) if !used.iter().any(|u| u.name == c.name) => used.push(c),
                    Some(_) => {}
                    None => errors.push(FieldError {
                        field: format!("frontends[{i}].binds[{j}].tls.certificates[{k}]"),
                        message: format!(
                            "no certificate named {name:?} (upload it with POST /api/v1/certificates)"
                        ),
                    }),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(errors));
    }
    snap.certificates = used
        .into_iter()
        .map(|c| pb::Certificate {
            name: c.name.clone(),
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
        })
        .collect();
    Ok(())
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
