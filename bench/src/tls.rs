//! TLS for the load side: a client that offers one protocol version and one cipher suite
//! (the same against every proxy), trusts only the benchmark's certificate, and resumes
//! sessions or not; the [`Stream`] every workload reads and writes, plain or TLS; and the
//! self-signed certificate both proxies serve (`sluice-bench cert`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The TLS the load side speaks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// TLS 1.3, TLS_AES_128_GCM_SHA256.
    #[value(name = "1.3")]
    V13,
    /// TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256.
    #[value(name = "1.2")]
    V12,
}

/// A TLS client configuration, shared by every connection of a workload (so a resumed
/// session made by one is offered by the next).
#[derive(Clone)]
pub struct Client {
    connector: tokio_rustls::TlsConnector,
}

impl Client {
    /// Trusting the PEM certificate in `ca`; resuming sessions when `resume`.
    pub fn new(version: Version, ca: &std::path::Path, resume: bool) -> anyhow::Result<Client> {
        use rustls::crypto::ring as provider;
        let suite = match version {
            Version::V13 => provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
            Version::V12 => provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        };
        let crypto = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..provider::default_provider()
        };
        let versions: &[&rustls::SupportedProtocolVersion] = match version {
            Version::V13 => &[&rustls::version::TLS13],
            Version::V12 => &[&rustls::version::TLS12],
        };
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.context("a certificate in the CA file")?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Client {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// A TLS connection to `addr` (the certificate's name is `bench.local`).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("bench.local").expect("a DNS name");
        let tls = self.connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A connection to the target, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection, when plain (the latency workload splits it).
    pub fn into_plain(self) -> Option<TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Writes a self-signed ECDSA P-256 certificate for `bench.local` into `dir`:
/// `bench.crt`, `bench.pem` (certificate and key, as HAProxy's `crt` takes them), and
/// `bench-upload.json` (the body of Sluice's `POST /api/v1/certificates`, name `bench`).
pub fn write_certificate(dir: &std::path::Path) -> anyhow::Result<()> {
    let key = rcgen::generate_simple_self_signed(vec!["bench.local".into()])?;
    let (cert, private) = (key.cert.pem(), key.key_pair.serialize_pem());
    std::fs::write(dir.join("bench.crt"), &cert)?;
    std::fs::write(dir.join("bench.pem"), format!("{cert}{private}"))?;
    let upload = serde_json::json!({ "name": "bench", "cert_pem": cert, "key_pem": private });
    std::fs::write(dir.join("bench-upload.json"), upload.to_string())?;
    Ok(())
}
