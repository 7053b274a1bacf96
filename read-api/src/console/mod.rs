//! The web console at `/console`: a page and its static assets (plain HTML, CSS and vanilla
//! JavaScript modules), embedded in the binary, that browse the read API's own JSON endpoints
//! from the browser: the event viewer (`/events`, `/events/{event_id}`), the projectors
//! (`/projections`) and every read model the OpenAPI document lists (`/openapi.json`).
//!
//! The console holds no data and never writes: the page and the assets are open (like
//! `/healthz`), the data they fetch is behind the read API's bearer keys when keys are set
//! (the page asks for one and keeps it in the tab's `sessionStorage`). Everything an event
//! carries is rendered as text, never as markup, and the content security policy allows
//! scripts and styles from this origin only.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;

/// Where the console is served.
pub const PATH: &str = "/console";

/// Where its assets are served (`{ASSETS}/{file}`).
pub const ASSETS: &str = "/console/assets";

/// The page.
const INDEX: &str = include_str!("assets/index.html");

/// Each asset: file name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    ("main.js", JS, include_str!("assets/main.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("dom.js", JS, include_str!("assets/dom.js")),
    ("events.js", JS, include_str!("assets/events.js")),
    ("projections.js", JS, include_str!("assets/projections.js")),
    ("models.js", JS, include_str!("assets/models.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Scripts, styles and requests from this origin only; no frames, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page))
        .route(&format!("{ASSETS}/{{file}}"), get(asset))
}

/// Whether `path` is the console's (open without a key: it holds no data).
pub fn is_console(path: &str) -> bool {
    path == PATH
        || path
            .strip_prefix(ASSETS)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The page.
async fn page(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    Ok(answer("text/html; charset=utf-8", INDEX))
}

/// One asset, or a `404` naming it.
async fn asset(
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let file = crate::routes::segment("file", path)?;
    Params::parse(query.as_deref(), &[])?;
    FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, kind, body)| answer(kind, body))
        .ok_or_else(|| ApiError::NotFound(format!("console asset {file}")))
}

fn answer(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_page_and_its_assets_are_open() {
        assert!(is_console("/console"));
        assert!(is_console("/console/assets/main.js"));
        assert!(!is_console("/console/"));
        assert!(!is_console("/consoles"));
        assert!(!is_console("/console/assetsx"));
        assert!(!is_console("/events"));
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, _, body) in FILES {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split('"').nth(1) else {
                    panic!("{name}: import without a quoted path: {line}");
                };
                let file = from.trim_start_matches("./");
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {from}, which is not served"
                );
            }
        }
        for (name, _, _) in FILES {
            assert!(
                INDEX.contains(&format!("assets/{name}"))
                    || FILES
                        .iter()
                        .any(|(_, _, b)| b.contains(&format!("./{name}"))),
                "{name} is served but never loaded"
            );
        }
    }

    #[test]
    fn no_asset_writes_markup_from_data() {
        for (name, _, body) in FILES {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(banned), "{name} uses {banned}");
            }
        }
    }
}
