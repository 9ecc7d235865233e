//! The OpenAPI document, generated from the handlers' annotations and the document types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{certificates, config, error, nodes, objects, snapshots};
use crate::config as doc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice control plane API", version = "1",
         description = "Configuration, snapshot history and fleet state of a Sluice deployment. \
                        Every endpoint requires `Authorization: Bearer <admin token>`."),
    paths(
        config::get_config, config::put_config, config::validate_config,
        objects::list_frontends, objects::get_frontend, objects::create_frontend,
        objects::put_frontend, objects::delete_frontend,
        objects::list_backends, objects::get_backend, objects::create_backend,
        objects::put_backend, objects::delete_backend, objects::put_server_state,
        certificates::list_certificates, certificates::get_certificate,
        certificates::create_certificate, certificates::put_certificate,
        certificates::delete_certificate,
        snapshots::list_snapshots, snapshots::get_snapshot,
        nodes::list_nodes,
    ),
    components(schemas(
        doc::ConfigDocument, doc::Defaults, doc::Timeouts, doc::Frontend, doc::Bind,
        doc::BindTls, doc::StickTable, doc::Acl, doc::HttpRule, doc::UseBackend, doc::Backend,
        doc::Cookie, doc::HealthCheck, doc::Server, doc::ServerCheck, doc::FieldError,
        error::ErrorBody, config::WriteResult, objects::BackendView, objects::ServerLive,
        objects::ServerOnNode, objects::StateChange, certificates::CertificateUpload,
        certificates::CertificateView,
    )),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
