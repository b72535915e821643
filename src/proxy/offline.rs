//! The activation page's offline path, for installations that cannot reach the
//! license server: `POST /_licgate/activate/offline-request` gives the signed
//! activation request file to send to the vendor; `POST
//! /_licgate/activate/offline-response` takes the vendor's response file (a form
//! upload, or the file itself as JSON) and installs it.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use pingora::proxy::Session;

use super::activation::{
    activation_page, csrf_valid, new_csrf_nonce, parse_submission, status_json, PageState,
};
use crate::app::{App, Rules};
use crate::link::offline::Installation;
use crate::metrics::ActivationResult;
use crate::request_body::{media_type, read_body, BodyError};
use crate::response::LocalResponse;

/// Largest response file accepted (a token is at most 64 KiB).
const MAX_RESPONSE_FILE: usize = 160 * 1024;
/// The download's file name.
const REQUEST_FILE_NAME: &str = "licgate-activation-request.json";

/// What the offline endpoints need besides the session.
pub(crate) struct Offline<'a> {
    pub app: &'a App,
    pub rules: &'a Rules,
    pub tenant: Option<&'a str>,
    pub page: PageState<'a>,
    pub peer: Option<IpAddr>,
}

impl Offline<'_> {
    /// Refuses a client over the activation attempt limit.
    fn throttled(&self) -> Option<LocalResponse> {
        let ip = self.peer?;
        if self.app.activation_limiter.permit(ip) {
            return None;
        }
        self.app.metrics.activation(ActivationResult::Throttled);
        Some(
            LocalResponse::error(
                StatusCode::TOO_MANY_REQUESTS,
                "ACTIVATION_RATE_LIMITED",
                "Too many activation attempts from this address; wait a minute and try again.",
            )
            .with_header("Retry-After", "60"),
        )
    }

    /// The activation page again with `error` (forms) or a JSON error.
    fn refuse(&self, json: bool, status: StatusCode, code: &str, error: &str) -> LocalResponse {
        self.app.metrics.activation(ActivationResult::Rejected);
        if json {
            return LocalResponse::problem(
                status,
                code,
                "License not activated",
                error,
                serde_json::json!({ "reason": error }),
            );
        }
        activation_page(
            self.app,
            self.rules,
            self.page.summary,
            self.page.next,
            &self.page.csrf_nonce.clone().unwrap_or_else(new_csrf_nonce),
            Some(error),
            status,
        )
    }

    /// This installation, for an offline file.
    fn installation<'s>(
        &'s self,
        manager: &'s crate::license::LicenseManager,
        instance_id: &'s str,
        hostname: &'s str,
    ) -> Option<Installation<'s>> {
        Some(Installation {
            store: manager.store(),
            instance_id,
            instance_key: self.app.instance_key.as_deref()?,
            hostname,
        })
    }
}

/// `POST /_licgate/activate/offline-request`: the signed request file for the key
/// in the form (or JSON `{"license_key"}`), as a download.
pub(crate) async fn request_file(session: &mut Session, offline: Offline<'_>) -> LocalResponse {
    if let Some(refused) = offline.throttled() {
        return refused;
    }
    let kind = media_type(session.req_header());
    let json = kind.as_deref() == Some("application/json");
    if !json && kind.as_deref() != Some("application/x-www-form-urlencoded") {
        return offline.refuse(
            true,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send application/json {\"license_key\": ...} or the activation page's form.",
        );
    }
    let Ok(body) = read_body(session, super::activation::MAX_ACTIVATION_BODY).await else {
        return offline.refuse(
            json,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "The request body could not be read.",
        );
    };
    let Some(submission) = parse_submission(&body, json) else {
        return offline.refuse(
            json,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Expected a JSON object {\"license_key\": \"...\"}.",
        );
    };
    if !json && !csrf_valid(session, offline.app, submission.csrf_token.as_deref()) {
        return offline.refuse(json, StatusCode::FORBIDDEN, "CSRF_FAILED", "The form expired or was not sent from this page (CSRF check failed). Please try again.");
    }
    let Some(manager) = offline.app.licenses.as_ref().map(Arc::clone) else {
        return offline.refuse(
            json,
            StatusCode::CONFLICT,
            "LICENSING_NOT_CONFIGURED",
            "Licensing is not configured on this gateway.",
        );
    };
    let instance_id = offline.app.instance_id();
    let hostname = crate::link::hostname();
    let Some(installation) = offline.installation(&manager, &instance_id, &hostname) else {
        return offline.refuse(
            json,
            StatusCode::CONFLICT,
            "LICENSING_NOT_CONFIGURED",
            "This installation has no instance key.",
        );
    };
    let now = manager.now();
    match installation.activation_request(&submission.license_key, now) {
        Ok((file, key)) => {
            tracing::info!(key = %key.redacted(), "offline activation request downloaded");
            LocalResponse {
                status: StatusCode::OK,
                content_type: "application/json",
                headers: vec![
                    (
                        "Content-Disposition",
                        format!("attachment; filename=\"{REQUEST_FILE_NAME}\""),
                    ),
                    ("Cache-Control", "no-store".into()),
                ],
                body: Bytes::from(file),
            }
        }
        Err(e) => offline.refuse(
            json,
            StatusCode::BAD_REQUEST,
            "LICENSE_INVALID",
            &format!("No request was made: {e}."),
        ),
    }
}

/// `POST /_licgate/activate/offline-response`: installs the vendor's response file
/// (a `multipart/form-data` upload with the CSRF token, or the file as JSON).
pub(crate) async fn install_file(session: &mut Session, offline: Offline<'_>) -> LocalResponse {
    if let Some(refused) = offline.throttled() {
        return refused;
    }
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let json = media_type(session.req_header()).as_deref() == Some("application/json");
    let boundary = multer::parse_boundary(&content_type).ok();
    if !json && boundary.is_none() {
        return offline.refuse(
            true,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Upload the response file from the activation page, or send the file itself as application/json.",
        );
    }
    let body = match read_body(session, MAX_RESPONSE_FILE).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return offline.refuse(
                json,
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "The file is too large for a response file.",
            )
        }
        Err(BodyError::Read) => {
            return offline.refuse(
                json,
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "The request body could not be read.",
            )
        }
    };
    let file = match boundary {
        None => body,
        Some(boundary) => match upload(body, boundary).await {
            Some(upload) => {
                if !csrf_valid(session, offline.app, upload.csrf_token.as_deref()) {
                    return offline.refuse(json, StatusCode::FORBIDDEN, "CSRF_FAILED", "The form expired or was not sent from this page (CSRF check failed). Please upload the file again.");
                }
                upload.file
            }
            None => {
                return offline.refuse(
                    json,
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "The upload holds no response file: choose the file the vendor sent.",
                )
            }
        },
    };
    let (Some(manager), Some(tenant)) = (
        offline.app.licenses.as_ref().map(Arc::clone),
        offline.tenant,
    ) else {
        return offline.refuse(json, StatusCode::CONFLICT, "LICENSING_NOT_CONFIGURED", "Licensing is not configured on this gateway, or this site's tenant cannot be determined.");
    };
    let Some(key) = offline.app.instance_key.as_ref().map(Arc::clone) else {
        return offline.refuse(
            json,
            StatusCode::CONFLICT,
            "LICENSING_NOT_CONFIGURED",
            "This installation has no instance key.",
        );
    };
    let instance_id = offline.app.instance_id();
    let tenant = tenant.to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let hostname = crate::link::hostname();
        let installation = Installation {
            store: manager.store(),
            instance_id: &instance_id,
            instance_key: &key,
            hostname: &hostname,
        };
        let vendor_keys = manager.settings().verifier.keys().to_vec();
        installation
            .install_response(&manager, &vendor_keys, &file, Some(&tenant))
            .map(|(installed, response)| (installed.summary, response.license_id))
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("the installation failed unexpectedly".into()));
    match outcome {
        Ok((summary, license_id)) => {
            offline.app.metrics.activation(ActivationResult::Installed);
            tracing::info!(tenant = %summary.tenant, license_id, "offline response installed");
            if json {
                LocalResponse::json(
                    StatusCode::OK,
                    &serde_json::json!({"success": true, "license": status_json(Some(&summary))}),
                )
            } else {
                LocalResponse::redirect(&offline.rules.after_activation)
            }
        }
        Err(reason) => offline.refuse(
            json,
            StatusCode::BAD_REQUEST,
            "LICENSE_INVALID",
            &format!("The response file was not installed: {reason}."),
        ),
    }
}

/// The fields of an upload form.
struct Upload {
    file: Bytes,
    csrf_token: Option<String>,
}

/// Reads the `response` file and `csrf_token` of a multipart body; `None` when it
/// is not one or has no file.
async fn upload(body: Bytes, boundary: String) -> Option<Upload> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let (mut file, mut csrf_token) = (None, None);
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().map(str::to_string);
        let Ok(bytes) = field.bytes().await else {
            return None;
        };
        match name.as_deref() {
            Some("response") if file.is_none() => file = Some(bytes),
            Some("csrf_token") if csrf_token.is_none() => {
                csrf_token = String::from_utf8(bytes.to_vec()).ok()
            }
            _ => {}
        }
    }
    Some(Upload {
        file: file.filter(|f| !f.is_empty())?,
        csrf_token,
    })
}
