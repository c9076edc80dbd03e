//! The officer console: one page, one script, one stylesheet, built into the binary (no
//! build step, nothing fetched from elsewhere). The page signs in with a bearer token and
//! uses only the API routes every other client uses, so the server's per-station checks
//! apply to it unchanged. The files themselves are public: they hold no data.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Only this origin's script and style, no inline code, no frames, no plugins: an injected
/// string could not run even if some bug put one into the page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

static PAGE: Asset = Asset::new(INDEX, "text/html; charset=utf-8");
static JS: Asset = Asset::new(SCRIPT, "text/javascript; charset=utf-8");
static CSS: Asset = Asset::new(STYLE, "text/css; charset=utf-8");

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A strong validator from the content, so a new binary's files replace cached ones.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = ring::digest::digest(&ring::digest::SHA256, self.body.as_bytes());
            let tag = format!("\"{}\"", hex::encode(&digest.as_ref()[..16]));
            HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag().clone();
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == etag.as_bytes()));
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.content_type),
                )],
                self.body,
            )
                .into_response()
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, etag);
        // Revalidate every time (cheap: 304), so an upgrade never runs an old script.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response
    }
}

/// `GET /`
pub async fn page(headers: HeaderMap) -> Response {
    PAGE.respond(&headers)
}

/// `GET /console.js`
pub async fn script(headers: HeaderMap) -> Response {
    JS.respond(&headers)
}

/// `GET /console.css`
pub async fn style(headers: HeaderMap) -> Response {
    CSS.respond(&headers)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() {
        let page = super::INDEX.to_ascii_lowercase();
        for tag in page.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(
                open.contains("src=\"/console.js\""),
                "inline script: {open}"
            );
        }
        assert!(!page.contains("<style"));
        assert!(!page.contains(" style="));
        // No inline event handlers (`onclick=` and the like).
        for (i, _) in page.match_indices(" on") {
            let name: String = page[i + 3..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            assert!(
                !page[i + 3 + name.len()..].starts_with('='),
                "inline handler on{name}"
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        let script = super::SCRIPT;
        // The page builds its DOM from text nodes only.
        assert!(!script.contains("innerHTML") && !script.contains("outerHTML"));
        assert!(!script.contains("insertAdjacentHTML") && !script.contains("document.write"));
        assert!(!script.contains("eval(") && !script.contains("new Function"));
    }
}
