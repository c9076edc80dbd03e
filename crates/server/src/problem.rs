//! Errors as RFC 9457 problem details (`application/problem+json`). A problem says what was
//! wrong and what to do; it never carries a token, an identifier, a value of a sealed
//! column, or anything of a resource the caller may not see.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (relative: `/problems/<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For gate and policy refusals: the rule that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Seconds to wait before trying again (rate limits, a busy server); also sent as
    /// `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            rule: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    /// A request body that did not arrive within the body deadline (`blindwatch-net`).
    pub fn body_timeout() -> Problem {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "the request body did not arrive in time: check the network and send it again",
        )
    }

    /// The refusal for a body read that failed with `err` (and `status`, axum's) when a
    /// limit stopped it: too slow (408) or too large (413).
    pub fn from_body_error(
        err: &(dyn std::error::Error + 'static),
        status: StatusCode,
    ) -> Option<Problem> {
        if blindwatch_net::is_body_timeout(err) {
            return Some(Problem::body_timeout());
        }
        (status == StatusCode::PAYLOAD_TOO_LARGE).then(|| {
            Problem::new(
                status,
                "body-too-large",
                "the request body is larger than this server accepts (see `blindwatch serve --help`): send a smaller one",
            )
        })
    }

    pub fn with_rule(mut self, rule: impl Into<String>) -> Problem {
        self.rule = Some(rule.into());
        self
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with a token issued by `blindwatch users add`",
        )
    }

    /// Deliberately the same for "exists but not yours" and "not allowed": the body tells
    /// nothing about the resource.
    pub fn forbidden() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the access policies do not allow this for your role and station",
        )
        .with_rule("access-policy")
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such {what}"),
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// A failure of the server itself; the cause goes to the log (it holds no personal data:
    /// our errors never do), the caller gets a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Problem {
        tracing::error!(error = %cause, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; it was logged, try again later",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
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
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON request body whose refusal is a problem document like every other refusal. The
/// detail names a missing field but never quotes the body: serde's messages can carry the
/// offending value or key.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let detail = match &rejection {
                    JsonRejection::MissingJsonContentType(_) => {
                        "send the body as JSON with `Content-Type: application/json`".to_owned()
                    }
                    JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_owned(),
                    JsonRejection::JsonDataError(_) => {
                        // Only a missing field is named: its name is ours (the route's
                        // type); an unknown field's name is the caller's text.
                        let text = rejection.body_text();
                        let missing = text
                            .split_once("missing field `")
                            .and_then(|(_, rest)| rest.split('`').next());
                        match missing {
                            Some(name) => format!(
                                "the JSON body lacks the field `{name}`; see this route in /v1/openapi.json"
                            ),
                            None => "the JSON body does not have the shape this route expects; see /v1/openapi.json".to_owned(),
                        }
                    }
                    JsonRejection::BytesRejection(e) => {
                        if let Some(p) = Problem::from_body_error(e, rejection.status()) {
                            return Err(p);
                        }
                        "the request body could not be read".to_owned()
                    }
                    _ => "the request body could not be read".to_owned(),
                };
                Err(Problem::new(rejection.status(), "invalid-body", detail))
            }
        }
    }
}
