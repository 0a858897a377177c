//! Errors as the API returns them: `ApiError` with its status and JSON
//! body `{"error": {"class", "message", "detail"}}`, the statuses of the
//! runtime's error classes, the layer that gives every other error
//! response the same body, and the bound on the text an error carries.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use resilite_actors::{Error, ErrorClass};

/// An error as the API returns it.
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) error: Error,
}

impl ApiError {
    /// 404: what the request names does not exist; `message` says what
    /// lists what does.
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: Error::bad_input(message),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match error.class {
            ErrorClass::BadInput | ErrorClass::Sql => StatusCode::BAD_REQUEST,
            ErrorClass::Constraint => StatusCode::CONFLICT,
            ErrorClass::Forbidden => StatusCode::FORBIDDEN,
            ErrorClass::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::Transient | ErrorClass::Unavailable | ErrorClass::Permission => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, error }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than http.max_body_bytes".to_string()
        } else {
            format!("the request body is not valid: {}", rejection.body_text())
        };
        ApiError {
            status,
            error: Error::new(ErrorClass::BadInput, message, rejection.body_text()),
        }
    }
}

/// The most bytes of an error's message, and of its detail, in a response.
const MAX_ERROR_TEXT: usize = 4096;

/// `text` cut to at most `max` bytes (at a character boundary), with a
/// marker saying how much was left out.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({more} bytes more)"));
    text
}

impl IntoResponse for ApiError {
    /// The JSON error body, its message and detail cut to
    /// [`MAX_ERROR_TEXT`] bytes each, so that a huge bad request never
    /// comes back as a huge answer.
    fn into_response(self) -> Response {
        let mut error = self.error;
        error.message = bounded(error.message, MAX_ERROR_TEXT);
        error.detail = bounded(error.detail, MAX_ERROR_TEXT);
        // A caller's error answered by the runtime was logged there (at
        // debug); a server-side one is logged here.
        if self.status.is_server_error() {
            error.log("request failed");
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

/// Give every error response that is not JSON yet (axum's 405, tower-http's
/// 413, ...) the API's JSON error body.
pub(super) async fn json_errors(method: Method, uri: Uri, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let (class, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorClass::BadInput,
            // axum adds the Allow header after this layer has run.
            format!(
                "{method} is not allowed on {}: the Allow header lists the methods it takes",
                uri.path()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorClass::BadInput,
            "the request body is larger than http.max_body_bytes".to_string(),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            ErrorClass::Timeout,
            "the request did not arrive in time".to_string(),
        ),
        StatusCode::UNAUTHORIZED => (
            ErrorClass::Unauthorized,
            ErrorClass::Unauthorized.user_message().to_string(),
        ),
        s if s.is_client_error() => (
            ErrorClass::BadInput,
            format!("the request is invalid: {reason}"),
        ),
        _ => (ErrorClass::Internal, format!("internal error: {reason}")),
    };
    ApiError {
        status,
        error: Error::new(class, message, format!("{} {reason}", status.as_u16())),
    }
    .into_response()
}
