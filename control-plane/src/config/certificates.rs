//! TLS certificates as the configuration holds them, and all their validation: an upload
//! is checked on its own ([`check_upload`]); a snapshot carries the certificates its binds
//! name, and a bind naming a missing one is an error on that bind's field ([`attach`]).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sluice_proto::v1 as pb;

use super::compile::valid_name;
use super::{FieldError, Invalid};

/// A TLS certificate chain and its key, as stored. The key never leaves the control plane
/// except in the snapshots of nodes that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub created_unix_ms: i64,
}

/// Checks an uploaded certificate: a valid name, a PEM chain, a usable key that belongs
/// to the leaf. Every problem is named by its field (`name`, `cert_pem`, `key_pem`).
pub fn check_upload(name: &str, cert_pem: &str, key_pem: &str) -> Result<(), Invalid> {
    let mut errors = Vec::new();
    let mut add = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.into(),
            message,
        })
    };
    if !valid_name(name) {
        add(
            "name",
            format!("{name:?} is not a valid name (1-128 of A-Z a-z 0-9 _ - . :)"),
        );
    }
    let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect();
    let chain = match chain {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            add("cert_pem", "no CERTIFICATE block found".into());
            None
        }
        Err(e) => {
            add("cert_pem", format!("not valid PEM: {e}"));
            None
        }
    };
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(k) => Some(k),
        Err(e) => {
            add("key_pem", format!("no usable private key: {e}"));
            None
        }
    };
    if let (Some(chain), Some(key)) = (chain, key) {
        match rustls::crypto::ring::sign::any_supported_type(&key) {
            Err(e) => add("key_pem", format!("unsupported key: {e}")),
            Ok(signing) => {
                let certified = rustls::sign::CertifiedKey::new(chain, signing);
                if let Err(e) = certified.keys_match() {
                    add(
                        "key_pem",
                        format!("the key does not belong to the certificate: {e}"),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(errors))
    }
}

/// Resolves the binds' certificate names and carries the certificates they use in the
/// snapshot (only those: a node gets no key it does not serve).
pub(super) fn attach(snap: &mut pb::Snapshot, certs: &[Certificate]) -> Result<(), Invalid> {
    let mut errors = Vec::new();
    let mut used: Vec<&Certificate> = Vec::new();
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
