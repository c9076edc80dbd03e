//! RFC 9457 problem details (`application/problem+json`) for services that are not the
//! platform server (which has its own, with policy rules): what was wrong and what to do,
//! never a value of the request.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// `/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Seconds to wait before trying again (rate limits), also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code of `kind` (`/problems/<code>`).
    pub fn code(&self) -> &str {
        self.kind.strip_prefix("/problems/").unwrap_or(&self.kind)
    }

    /// A request body that could not be read: over the size limit (413), not complete
    /// within the body deadline (408), or cut off (400). `what` names the limit for 413.
    pub fn from_body_rejection(rejection: &BytesRejection, limit: &str) -> Problem {
        use std::error::Error as _;
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Problem::new(
                status,
                "body-too-large",
                format!("the request body is larger than {limit}: send smaller requests"),
            );
        }
        let mut source = rejection.source();
        while let Some(e) = source {
            if crate::is_body_timeout(e) {
                return Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    "the request body did not arrive in time: check the network and send it again",
                );
            }
            source = e.source();
        }
        Problem::new(
            StatusCode::BAD_REQUEST,
            "body-unreadable",
            "the request body could not be read (cut off?): send it again",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.retry_after;
        // Strings and numbers only: serialising cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a slow body is not worth reading: close the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A router fallback: unknown paths are problems too.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

/// A router fallback for a known path with another method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take this method",
    )
}
