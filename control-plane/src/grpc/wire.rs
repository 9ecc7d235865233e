//! The `Fleet` service on the wire: the HTTP/2 routes of `Fleet.Session` (with its codec)
//! and `Fleet.Enroll`.
//!
//! Written out rather than generated so that what a node session sends is a
//! `ControlMessage` already encoded: each version is encoded once, when it is committed
//! ([`crate::snapshot::Published`]), and every node session sends the same shared bytes —
//! no copy of the snapshot (private keys included) per node and version. What nodes
//! receive is the ordinary `ControlMessage` of `proto/sluice/v1/fleet.proto`; what they
//! send is decoded with prost as usual.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use futures_util::Stream;
use sluice_proto::v1::{EnrollReply, EnrollRequest, NodeMessage};
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use super::FleetService;

/// What a node session streams: encoded `ControlMessage`s.
pub type ControlStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Writes messages that are already encoded.
struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Encoded `ControlMessage`s out, prost-decoded `NodeMessage`s in.
#[derive(Default)]
struct FleetCodec(ProstCodec<NodeMessage, NodeMessage>);

impl Codec for FleetCodec {
    type Encode = Bytes;
    type Decode = NodeMessage;
    type Encoder = PreEncoded;
    type Decoder = <ProstCodec<NodeMessage, NodeMessage> as Codec>::Decoder;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

/// The `sluice.v1.Fleet` service, to add to a tonic server.
#[derive(Clone)]
pub struct FleetServer(Arc<FleetService>);

impl FleetServer {
    pub fn new(service: FleetService) -> Self {
        Self(Arc::new(service))
    }
}

impl NamedService for FleetServer {
    const NAME: &'static str = "sluice.v1.Fleet";
}

struct Enroll(Arc<FleetService>);

impl UnaryService<EnrollRequest> for Enroll {
    type Response = EnrollReply;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<EnrollReply>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<EnrollRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.enroll(request).await })
    }
}

struct Session(Arc<FleetService>);

impl StreamingService<NodeMessage> for Session {
    type Response = Bytes;
    type ResponseStream = ControlStream;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<ControlStream>, Status>> + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Streaming<NodeMessage>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.session(request).await })
    }
}

impl tower_service::Service<http::Request<Body>> for FleetServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == "/sluice.v1.Fleet/Enroll" {
            let enroll = Enroll(self.0.clone());
            return Box::pin(async move {
                Ok(
                    Grpc::new(ProstCodec::<EnrollReply, EnrollRequest>::default())
                        .unary(enroll, req)
                        .await,
                )
            });
        }
        if req.uri().path() == "/sluice.v1.Fleet/Session" {
            let session = Session(self.0.clone());
            return Box::pin(async move {
                Ok(Grpc::new(FleetCodec::default())
                    .apply_max_message_size_config(
                        None,
                        Some(sluice_proto::MAX_CONFIG_BYTES + sluice_proto::STREAM_OVERHEAD),
                    )
                    .streaming(session, req)
                    .await)
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(Body::default());
            let headers = response.headers_mut();
            headers.insert(
                Status::GRPC_STATUS,
                (tonic::Code::Unimplemented as i32).into(),
            );
            headers.insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}
