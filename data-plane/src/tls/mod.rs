//! TLS termination for binds with `tls`: a rustls server configuration per bind, built
//! from the snapshot's certificates when the plan is compiled. A leaf: it knows the
//! snapshot's TLS messages and rustls, nothing of plans or the proxy.
//!
//! - Certificates are chosen by SNI: the first of the bind's certificates valid for the
//!   requested name, else the first one (clients without SNI get it too).
//! - ALPN: the protocols the bind lists that the node speaks (`h2` when the bind has
//!   HTTP/2, `http/1.1`), in the bind's order of preference; `http/1.1` alone when it
//!   lists none.
//! - `min_version` TLSv1.2 (default) or TLSv1.3; `ciphers` selects TLS 1.2 suites by their
//!   OpenSSL names (TLS 1.3 suites are always on); `session_tickets` turns on stateless
//!   resumption (stateful resumption is always on).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sluice_proto::v1 as pb;
use tokio_rustls::TlsAcceptor;

/// Why a bind's TLS settings cannot be served (the node nacks with it).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {0}: {1}")]
    Certificate(String, String),
    #[error("certificate {0}: key: {1}")]
    Key(String, String),
    #[error("no certificate named {0:?} in the snapshot")]
    MissingCertificate(String),
    #[error("a TLS bind needs a certificate")]
    NoCertificate,
    #[error("unknown cipher {0:?}")]
    Cipher(String),
    #[error("unsupported min_version {0:?}")]
    MinVersion(String),
    #[error("{0}")]
    Rustls(rustls::Error),
}

/// A bind's TLS acceptor.
#[derive(Clone)]
pub struct Tls(pub TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// Parses one stored certificate into what rustls serves.
fn certified(c: &pb::Certificate) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(c.name.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(
            c.name.clone(),
            "no certificate in the PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .map_err(|e| TlsError::Key(c.name.clone(), e.to_string()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key(c.name.clone(), e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// Picks a certificate by SNI.
#[derive(Debug)]
struct BySni {
    certs: Vec<Arc<CertifiedKey>>,
}

fn valid_for(ck: &CertifiedKey, name: &str) -> bool {
    let Some(leaf) = ck.cert.first() else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let [only] = &self.certs[..] {
            // Nothing to choose: no need to parse the certificate against the name.
            return Some(only.clone());
        }
        hello
            .server_name()
            .and_then(|sni| self.certs.iter().find(|ck| valid_for(ck, sni)))
            .or_else(|| self.certs.first())
            .cloned()
    }
}

/// The acceptor of a bind; errors say what cannot be served (the node nacks with it).
pub fn acceptor(
    tls: &pb::BindTls,
    certificates: &HashMap<&str, &pb::Certificate>,
    http2: bool,
) -> Result<Tls, TlsError> {
    let mut certs = Vec::new();
    for name in &tls.certificates {
        let c = certificates
            .get(name.as_str())
            .ok_or_else(|| TlsError::MissingCertificate(name.clone()))?;
        certs.push(certified(c)?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let base = default_provider();
    let mut suites: Vec<SupportedCipherSuite> = base
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    if tls.ciphers.is_empty() {
        suites.extend(
            base.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS12)
                .copied(),
        );
    } else {
        for name in &tls.ciphers {
            suites.push(tls12_suite(name).ok_or_else(|| TlsError::Cipher(name.clone()))?);
        }
    }
    let provider = CryptoProvider {
        cipher_suites: suites,
        ..base
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_str() {
        "TLSv1.3" => &[&rustls::version::TLS13],
        "" | "TLSv1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
        other => return Err(TlsError::MinVersion(other.to_string())),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { certs }));
    config.alpn_protocols = if tls.alpn.is_empty() {
        vec![b"http/1.1".to_vec()]
    } else {
        tls.alpn
            .iter()
            .filter(|p| p.as_str() == "http/1.1" || (http2 && p.as_str() == "h2"))
            .map(|p| p.as_bytes().to_vec())
            .collect()
    };
    if tls.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Rustls)?;
    }
    Ok(Tls(TlsAcceptor::from(Arc::new(config))))
}
