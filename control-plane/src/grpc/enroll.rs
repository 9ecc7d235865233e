//! Who may open a node stream: `Fleet.Enroll` exchanges a bootstrap token (one made
//! through the REST API, with an expiry and a use count, or the fleet-wide node token)
//! for the node's own credential, and [`FleetService::authenticate`] tells a stream's
//! bearer token apart — a node credential, bound to its node id, or the fleet token.
//! A revoked node id is refused either way.

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{check_hello, FleetService};
use crate::auth::{random_token, TokenDigest};
use crate::clock::unix_ms;
use crate::events;
use crate::store::EnrollRefusal;

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
        match self.store.credential(&digest).await.map_err(internal)? {
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
        if self
            .store
            .node_revoked(node_id)
            .await
            .map_err(internal)?
            .is_some()
        {
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
            Ok(()) => {}
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
