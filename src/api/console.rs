//! The web console (`/console`), the embeddable widget script
//! (`/widget.js`) and the API reference's viewer (`/docs`): static files
//! compiled into the binary (`assets/`), so they work offline and with no
//! build step. The console is plain JavaScript over the public API, with a
//! Content-Security-Policy that allows nothing but this server.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::ApiState;

/// One embedded file: its name under its folder, type and bytes.
struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:expr, $path:literal) => {
        Asset {
            name: $name,
            mime: $mime,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static CONSOLE: &[Asset] = &[
    asset!("console.js", JS, "console/console.js"),
    asset!("pages.js", JS, "console/pages.js"),
    asset!("calls.js", JS, "console/calls.js"),
    asset!("talk.js", JS, "console/talk.js"),
    asset!("recorder-worklet.js", JS, "console/recorder-worklet.js"),
    asset!("console.css", CSS, "console/console.css"),
];

static DOCS: &[Asset] = &[
    asset!(
        "swagger-ui-bundle.js",
        JS,
        "vendor/swagger-ui/swagger-ui-bundle.js"
    ),
    asset!("swagger-ui.css", CSS, "vendor/swagger-ui/swagger-ui.css"),
    asset!("docs.js", JS, "docs/docs.js"),
];

const INDEX_HTML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/console/index.html"
));
const DOCS_HTML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/docs/index.html"
));
const WIDGET_JS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/widget/widget.js"
));

/// Scripts, styles, fetches and media from this server only (media also
/// from `blob:`: recordings and voice previews are fetched with the token
/// and played from memory). Inline styles are allowed for computed widths.
const CONSOLE_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// Swagger UI needs inline styles and data: images; nothing leaves the server.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/assets/{name}", get(console_asset))
        .route("/docs", get(docs))
        .route("/docs/assets/{name}", get(docs_asset))
        .route("/widget.js", get(widget))
}

fn page(html: &'static str, csp: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

async fn index() -> Response {
    page(INDEX_HTML, CONSOLE_CSP)
}

async fn docs() -> Response {
    page(DOCS_HTML, DOCS_CSP)
}

fn serve(list: &'static [Asset], name: &str) -> Result<Response, ApiError> {
    let asset = list
        .iter()
        .find(|a| a.name == name)
        .ok_or(ApiError::NotFound)?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.mime)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // Not versioned by name: revalidated, cheap on loopback/LAN.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.bytes,
    )
        .into_response())
}

async fn console_asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    serve(CONSOLE, &name)
}

async fn docs_asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    serve(DOCS, &name)
}

/// Pasted into other sites: any page may load it (the public key and the
/// widget's allowed domains decide what it can do).
async fn widget() -> Response {
    (
        [
            (header::CONTENT_TYPE, JS),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_typed() {
        for a in CONSOLE.iter().chain(DOCS) {
            assert!(!a.bytes.is_empty(), "{}", a.name);
            let want = if a.name.ends_with(".js") { JS } else { CSS };
            assert_eq!(a.mime, want, "{}", a.name);
        }
        for html in [INDEX_HTML, DOCS_HTML] {
            assert!(!html.contains("http://") && !html.contains("https://"));
        }
        assert!(serve(CONSOLE, "../Cargo.toml").is_err());
    }
}
