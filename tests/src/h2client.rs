//! An HTTP/2 client for the end-to-end tests (hyper's): ordinary requests and WebSocket
//! streams by extended CONNECT (RFC 8441), over cleartext with prior knowledge (h2c) or
//! over any stream (TLS with ALPN `h2`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket carried by one HTTP/2 stream.
pub type H2Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One HTTP/2 connection.
#[derive(Clone)]
pub struct H2 {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

/// A response: status, headers, body.
#[derive(Debug)]
pub struct H2Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl H2Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl H2 {
    /// HTTP/2 with prior knowledge on a cleartext connection to `addr`.
    pub async fn h2c(addr: SocketAddr) -> H2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::over(tcp, &addr.to_string()).await
    }

    /// HTTP/2 over an established stream (e.g. TLS that negotiated `h2`); requests name
    /// `authority`.
    pub async fn over<S>(io: S, authority: &str) -> H2
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .expect("an HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 {
            sender,
            authority: authority.to_string(),
        }
    }

    /// Sends a request (`body` empty: none) and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<H2Response, hyper::Error> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(H2Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> H2Response {
        self.request("GET", path, headers, b"")
            .await
            .unwrap_or_else(|e| panic!("GET {path} over HTTP/2: {e}"))
    }

    /// Opens a WebSocket on a new stream of this connection (extended CONNECT,
    /// `:protocol websocket`). `Err` carries the answer when it is not a 200.
    pub async fn websocket(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(H2Ws, HeaderMap), H2Response> {
        // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) may still be on the way
        // right after the handshake.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let resp = loop {
            let mut req = Request::builder()
                .method(Method::CONNECT)
                .uri(format!("http://{}{path}", self.authority))
                .header("sec-websocket-version", "13")
                .extension(hyper::ext::Protocol::from_static("websocket"));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            match self
                .sender
                .send_request(req.body(Full::new(Bytes::new())).unwrap())
                .await
            {
                Ok(r) => break r,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("extended CONNECT {path}: {e}"),
            }
        };
        if resp.status() != StatusCode::OK {
            let (parts, body) = resp.into_parts();
            return Err(H2Response {
                status: parts.status,
                headers: parts.headers,
                body: body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default(),
            });
        }
        let headers = resp.headers().clone();
        let upgraded = hyper::upgrade::on(resp).await.expect("the stream upgraded");
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
        Ok((ws, headers))
    }
}

/// Sends `msg` and returns the next data message (5 s limit).
pub async fn h2_ws_roundtrip(ws: &mut H2Ws, msg: Message) -> Message {
    ws.send(msg).await.expect("sending on the stream");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return m,
                Some(Ok(_)) => continue,
                other => panic!("stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer within 5 s")
}
