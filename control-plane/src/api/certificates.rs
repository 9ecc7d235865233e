//! `/api/v1/certificates`: TLS certificates as their own resource, referenced by name from
//! frontend binds. PEM goes in; the private key never comes out (nor is it logged). A
//! change is a configuration change: versioned and pushed to the nodes that serve it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::config::write_response;
use super::snapshots::rfc3339;
use super::{etag, if_match, parse_json, ApiError, AppState};
use crate::clock::unix_ms;
use crate::config::certificates::{check_upload, Certificate};
use crate::snapshot::ChangeError;

/// A certificate upload: the chain (leaf first) and its private key, both PEM.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateUpload {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A stored certificate as the API shows it: never the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    pub name: String,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub sha256: String,
    /// Certificates in the chain.
    pub chain_length: usize,
    pub created: String,
}

fn view(c: &Certificate) -> CertificateView {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    let sha256 = chain
        .first()
        .map(|leaf| {
            Sha256::digest(leaf.as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default();
    CertificateView {
        name: c.name.clone(),
        sha256,
        chain_length: chain.len(),
        created: rfc3339(c.created_unix_ms),
    }
}

/// Checks an upload: a name, at least one certificate, one private key that belongs to
/// the leaf. Errors name the field.
/// Checks an upload; every problem names its field.
fn check(u: &CertificateUpload) -> Result<(), ApiError> {
    check_upload(&u.name, &u.cert_pem, &u.key_pem).map_err(ApiError::Invalid)
}

fn row(u: CertificateUpload) -> Certificate {
    Certificate {
        name: u.name,
        cert_pem: u.cert_pem,
        key_pem: u.key_pem,
        created_unix_ms: unix_ms(),
    }
}

/// Every certificate (without keys).
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates",
    responses((status = 200, body = Vec<CertificateView>)))]
pub async fn list_certificates(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (version, config) = s.config.read().await?;
    Ok((
        [etag(version)],
        Json(config.certificates.iter().map(view).collect::<Vec<_>>()),
    ))
}

/// One certificate (without its key).
#[utoipa::path(get, path = "/api/v1/certificates/{name}", tag = "certificates",
    params(("name" = String, Path)),
    responses((status = 200, body = CertificateView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_certificate(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (version, config) = s.config.read().await?;
    let c = config
        .certificates
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no certificate named {name:?}")))?;
    Ok(([etag(version)], Json(view(c))))
}

/// Uploads a certificate (409 if the name exists).
#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates",
    request_body = CertificateUpload,
    responses((status = 201, body = super::config::WriteResult),
              (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn create_certificate(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let upload: CertificateUpload = parse_json(&body)?;
    check(&upload)?;
    let what = format!("create certificate {}", upload.name);
    let new = row(upload);
    let applied = s
        .config
        .apply(expected, &what, &actor, move |config| {
            let certs = &mut config.certificates;
            if certs.iter().any(|c| c.name == new.name) {
                return Err(ChangeError::Conflict(format!(
                    "a certificate named {:?} already exists",
                    new.name
                )));
            }
            certs.push(new);
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::CREATED, applied))
}

/// Creates or replaces a certificate — a rotation: nodes serve the new one to new
/// connections; open ones keep theirs.
#[utoipa::path(put, path = "/api/v1/certificates/{name}", tag = "certificates",
    request_body = CertificateUpload, params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn put_certificate(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let upload: CertificateUpload = parse_json(&body)?;
    if upload.name != name {
        return Err(ApiError::BadRequest {
            code: "name_mismatch",
            field: "name".into(),
            message: format!("{:?} does not match the URL's {name:?}", upload.name),
        });
    }
    check(&upload)?;
    let what = format!("update certificate {name}");
    let new = row(upload);
    let applied = s
        .config
        .apply(expected, &what, &actor, move |config| {
            let certs = &mut config.certificates;
            match certs.iter_mut().find(|c| c.name == new.name) {
                // The same PEM again is not a change.
                Some(old) if old.cert_pem == new.cert_pem && old.key_pem == new.key_pem => {}
                Some(old) => *old = new,
                None => certs.push(new),
            }
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}

/// Removes a certificate; refused (422) while a bind still uses it.
#[utoipa::path(delete, path = "/api/v1/certificates/{name}", tag = "certificates",
    params(("name" = String, Path)),
    responses((status = 200, body = super::config::WriteResult),
              (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn delete_certificate(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let actor = super::actor(&headers)?;
    let what = format!("delete certificate {name}");
    let applied = s
        .config
        .apply(expected, &what, &actor, move |config| {
            let certs = &mut config.certificates;
            let before = certs.len();
            certs.retain(|c| c.name != name);
            if certs.len() == before {
                return Err(ChangeError::NotFound(format!(
                    "no certificate named {name:?}"
                )));
            }
            Ok(())
        })
        .await?;
    Ok(write_response(StatusCode::OK, applied))
}
