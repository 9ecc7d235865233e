//! Who may open a node stream: `Fleet.Enroll` exchanges a bootstrap token (one made
//! through the REST API, with an expiry and a use count, or the fleet-wide node token)
//! for the node's own credential, and [`FleetService::authenticate`] tells a stream's
//! bearer token apart — a node credential, bound to its node id, or the fleet token.
//! A revoked node id is refused either way. While the database cannot be reached, a
//! node already enrolled is let in on the credentials last read from it
//! ([`KnownCredentials`], refreshed every ten seconds), so nodes restarted or failing over
//! during an outage still get their configuration.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{check_hello, FleetService};
use crate::auth::{random_token, TokenDigest};
use crate::clock::unix_ms;
use crate::events;
use crate::store::{CredentialRow, EnrollRefusal, Store, StoreError};

/// How often the copy of the credentials is read again.
const REFRESH: Duration = Duration::from_secs(10);

/// The node credentials (by digest) and revoked node ids as last read from the store.
#[derive(Default)]
pub struct KnownCredentials {
    inner: Mutex<(HashMap<String, CredentialRow>, HashSet<String>)>,
}

impl KnownCredentials {
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let mut by_digest = HashMap::new();
        let mut revoked = HashSet::new();
        for c in store.all_credentials().await? {
            let row = CredentialRow {
                revoked: c.revoked_unix_ms.is_some(),
                node_id: c.node_id,
            };
            if row.revoked {
                revoked.insert(row.node_id.clone());
            }
            if let Some(d) = c.digest {
                by_digest.insert(d, row);
            }
        }
        *self.inner.lock().expect("credentials lock") = (by_digest, revoked);
        Ok(())
    }

    /// Adds what was just read or issued.
    fn remember(&self, digest: &str, row: &CredentialRow) {
        let mut inner = self.inner.lock().expect("credentials lock");
        if row.revoked {
            inner.1.insert(row.node_id.clone());
        }
        inner.0.insert(digest.to_string(), row.clone());
    }

    fn credential(&self, digest: &str) -> Option<CredentialRow> {
        self.inner
            .lock()
            .expect("credentials lock")
            .0
            .get(digest)
            .cloned()
    }

    fn is_revoked(&self, node_id: &str) -> bool {
        self.inner
            .lock()
            .expect("credentials lock")
            .1
            .contains(node_id)
    }
}

/// Keeps `known` current until shutdown (read at once, then every ten seconds).
pub async fn keep_known(
    store: Store,
    known: std::sync::Arc<KnownCredentials>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = known.refresh(&store).await {
            tracing::debug!(error = %e, "reading node credentials; keeping the last copy");
        }
    }
}

/// What a stream's bearer token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// The fleet-wide node token: any node id.
    FleetToken,
    /// The credential of this node.
    Node(String),
}

fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "node credentials");
    Status::internal("could not check the credential")
}

impl FleetService {
    /// What the stream's bearer token is.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Presented, Status> {
        let Some(token) = bearer(request) else {
            return Err(Status::unauthenticated("no node credential"));
        };
        if self.node_token.matches(token) {
            return Ok(Presented::FleetToken);
        }
        let digest = TokenDigest::of(token).to_hex();
        let found = match self.store.credential(&digest).await {
            Ok(found) => {
                if let Some(c) = &found {
                    self.known.remember(&digest, c);
                }
                found
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable: checking the credential against the last copy read");
                match self.known.credential(&digest) {
                    Some(c) => Some(c),
                    None => {
                        return Err(Status::unavailable(
                            "the control plane cannot check this credential now; retry",
                        ))
                    }
                }
            }
            Err(e) => return Err(internal(e)),
        };
        match found {
            Some(c) if c.revoked => Err(Status::permission_denied(format!(
                "node {} is revoked",
                c.node_id
            ))),
            Some(c) => Ok(Presented::Node(c.node_id)),
            None => Err(Status::unauthenticated("invalid node credential")),
        }
    }

    /// Whether `presented` may speak for `node_id`.
    pub async fn admit(&self, presented: &Presented, node_id: &str) -> Result<(), Status> {
        if let Presented::Node(id) = presented {
            if id != node_id {
                return Err(Status::unauthenticated(
                    "this credential belongs to another node",
                ));
            }
        }
        let revoked = match self.store.node_revoked(node_id).await {
            Ok(at) => at.is_some(),
            Err(e) if e.is_unavailable() => {
                self.known.is_revoked(node_id) || self.registry.is_revoked(node_id)
            }
            Err(e) => return Err(internal(e)),
        };
        if revoked {
            return Err(Status::permission_denied(format!(
                "node {node_id} is revoked"
            )));
        }
        Ok(())
    }

    /// `Fleet.Enroll`: a bootstrap token in, the node's own credential out.
    pub async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        let Some(token) = bearer(&request).map(str::to_string) else {
            return Err(Status::unauthenticated("no bootstrap token"));
        };
        let node_id = request.into_inner().node_id;
        check_hello(&pb::Hello {
            node_id: node_id.clone(),
            ..Default::default()
        })?;
        let bootstrap = if self.node_token.matches(&token) {
            None
        } else {
            Some(TokenDigest::of(&token).to_hex())
        };
        let credential = random_token();
        let digest = TokenDigest::of(&credential).to_hex();
        let now = unix_ms();
        match self
            .store
            .enroll_node(&node_id, bootstrap.as_deref(), &digest, now)
            .await
            .map_err(internal)?
        {
            Ok(()) => self.known.remember(
                &digest,
                &CredentialRow {
                    node_id: node_id.clone(),
                    revoked: false,
                },
            ),
            Err(EnrollRefusal::BadToken) => {
                tracing::warn!(node = %node_id, "enrollment refused: bad, expired, used-up or revoked bootstrap token");
                return Err(Status::unauthenticated(
                    "invalid, expired, used-up or revoked bootstrap token",
                ));
            }
            Err(EnrollRefusal::Revoked) => {
                tracing::warn!(node = %node_id, "enrollment refused: the node is revoked");
                return Err(Status::permission_denied(format!(
                    "node {node_id} is revoked"
                )));
            }
        }
        tracing::info!(node = %node_id, "node enrolled");
        let how = if bootstrap.is_some() {
            "with a bootstrap token"
        } else {
            "with the fleet node token"
        };
        let mut e = events::event("node_enrolled", format!("credential issued {how}"));
        e.node = Some(node_id);
        events::record(&self.store, e).await;
        Ok(Response::new(pb::EnrollReply { credential }))
    }
}
