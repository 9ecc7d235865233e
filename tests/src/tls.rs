//! TLS for the tests' clients: a self-signed certificate for the names the tests use,
//! and a client connection that trusts only it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `chat.example` and `localhost`.
pub fn self_signed() -> rcgen::CertifiedKey {
    rcgen::generate_simple_self_signed(vec!["chat.example".into(), "localhost".into()]).unwrap()
}

/// A TLS connection to `addr` for `sni`, trusting only `trusted`, offering `alpn`.
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    trusted: &rcgen::CertifiedKey,
    alpn: &[&str],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, tcp).await.expect("a TLS handshake")
}
