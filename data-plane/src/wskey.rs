//! WebSocket handshake keys (RFC 6455 §4.2.2): a fresh `Sec-WebSocket-Key` and the
//! `Sec-WebSocket-Accept` a server must answer it with. Used where the node makes the
//! handshake itself: WebSocket health checks and WebSocket over HTTP/2 bridged to an
//! HTTP/1.1 server.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// A random 16-byte key, base64 as the header carries it.
pub fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` value for `key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(new_key().len(), 24);
        assert_ne!(new_key(), new_key());
    }
}
