//! The OpenAPI document, generated from the handlers' annotations and the document types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    certificates, config, credentials, delivery, error, events, history, live, nodes, objects,
    rollouts, series, snapshots,
};
use crate::config as doc;
use crate::rollout::{gates, policy, record};

/// The error answers every operation can give, documented on each: 401 without the admin
/// token; for operations with a body or parameters, 400 for a malformed one (the field
/// named); for operations with a body, 413 over the configuration size limit.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let has_body = op.request_body.is_some();
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                responses
                    .entry("401".into())
                    .or_insert_with(|| error("no or a wrong admin token"));
                responses
                    .entry("503".into())
                    .or_insert_with(|| error("the database cannot be reached; nothing changed"));
                if has_body || has_params {
                    responses.entry("400".into()).or_insert_with(|| {
                        error("malformed JSON, query or path; the field is named")
                    });
                }
                if has_body {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("over the configuration size limit"));
                }
            }
        }
        // `BackendView` and `FrontendView` are an object with read-only views: the
        // object's own schema refuses unknown fields (as writes do), so each view gets a
        // copy without that rule.
        let components = openapi.components.get_or_insert_with(Default::default);
        for (object, view_name) in [("Backend", "BackendView"), ("Frontend", "FrontendView")] {
            if let Some(RefOr::T(utoipa::openapi::Schema::Object(object))) =
                components.schemas.get(object).cloned()
            {
                let mut view = object;
                view.additional_properties = None;
                if let Some(RefOr::T(utoipa::openapi::Schema::AllOf(all))) =
                    components.schemas.get(view_name)
                {
                    for part in &all.items {
                        if let RefOr::T(utoipa::openapi::Schema::Object(o)) = part {
                            view.properties.extend(o.properties.clone());
                            view.required.extend(o.required.clone());
                        }
                    }
                }
                components.schemas.insert(
                    view_name.into(),
                    RefOr::T(utoipa::openapi::Schema::Object(view)),
                );
            }
        }
    }
}

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
        config::get_config, config::put_config, config::validate_config, config::import_config,
        objects::list_frontends, objects::get_frontend, objects::create_frontend,
        objects::put_frontend, objects::delete_frontend,
        objects::list_backends, objects::get_backend, objects::create_backend,
        objects::put_backend, objects::delete_backend, objects::put_server_state,
        certificates::list_certificates, certificates::get_certificate,
        certificates::create_certificate, certificates::put_certificate,
        certificates::delete_certificate,
        snapshots::list_snapshots, snapshots::get_snapshot, history::diff, history::rollback,
        delivery::version_nodes,
        nodes::list_nodes, events::list_events, live::live, series::get_series,
        rollouts::get_policy, rollouts::put_policy, rollouts::delete_policy,
        rollouts::policy_revisions, rollouts::list_rollouts, rollouts::get_rollout,
        rollouts::command,
        credentials::create_bootstrap_token, credentials::list_bootstrap_tokens,
        credentials::revoke_bootstrap_token, credentials::revoke_node,
    ),
    components(schemas(
        doc::ConfigDocument, doc::Defaults, doc::Timeouts, doc::Frontend, doc::Bind,
        doc::BindTls, doc::BindHttp2, doc::StickTable, doc::Acl, doc::HttpRule, doc::UseBackend, doc::Backend,
        doc::Cookie, doc::HealthCheck, doc::Server, doc::ServerCheck, doc::FieldError,
        error::ErrorBody, config::WriteResult, objects::BackendView, objects::ServerLive,
        objects::FrontendView, objects::Delivery,
        objects::ServerOnNode, objects::StateChange, certificates::CertificateUpload,
        certificates::CertificateView, events::EventView, history::DiffView, history::Change,
        delivery::VersionNodes, delivery::RejectedBy,
        live::TickView, series::SeriesView, series::SeriesColumn,
        snapshots::SnapshotSummary, snapshots::SnapshotDetail,
        rollouts::PolicyView, policy::RolloutPolicy, policy::Stage, policy::Select, policy::Gates,
        record::Rollout, record::StageRecord, record::RolloutState, gates::GateReading,
        credentials::BootstrapTokenRequest, credentials::BootstrapTokenView,
        credentials::BootstrapTokenCreated, credentials::NodeRevoked,
        crate::import::Imported, crate::import::Note, crate::import::NoteKind,
    )),
    modifiers(&BearerAuth, &CommonErrors),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
