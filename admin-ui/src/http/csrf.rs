//! The cross-site request guard in front of every state-changing request.
//!
//! A browser sends a "simple" request (GET, HEAD, or a POST whose body is a form or
//! `text/plain`) to any site without asking it first, with the user's cookies; a dashboard
//! behind a cookie-authenticating proxy would then act for any page the operator has open.
//! So a request that may change something (any method but GET, HEAD and OPTIONS) must be one
//! a browser only sends cross-site after a CORS preflight, which admin-ui never grants:
//!
//! - its method is not POST (DELETE, PUT, PATCH are never simple), or
//! - its body is JSON (`Content-Type: application/json`), or
//! - it carries [`ACTION_HEADER`] (the dashboard's htmx sends it on every request, from
//!   `hx-headers` on `<body>`).
//!
//! And when it carries an `Origin` (browsers send one on every cross-origin request and on
//! same-origin POSTs), that origin's host must be the request's `Host` (or, behind a proxy,
//! its `X-Forwarded-Host`); `Origin: null` (sandboxed frames, some redirects) is refused.
//! Refusals happen before any handler runs, so they change nothing.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::api::reply_error;

/// The custom header that makes an action request non-simple.
pub const ACTION_HEADER: &str = "x-ferry-action";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A POST a browser could send cross-site without a preflight (415).
    SimpleRequest,
    /// An `Origin` that is not this dashboard (403).
    ForeignOrigin,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::SimpleRequest => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::ForeignOrigin => StatusCode::FORBIDDEN,
        }
    }

    /// The NSQ-style error code.
    pub(super) fn code(self) -> &'static str {
        match self {
            Refusal::SimpleRequest => "JSON_OR_X_FERRY_ACTION_REQUIRED",
            Refusal::ForeignOrigin => "FOREIGN_ORIGIN",
        }
    }
}

/// The middleware: passes safe methods and checked requests, refuses the others.
pub(super) async fn guard(request: Request, next: Next) -> Response {
    if let Err(refusal) = check(request.method(), request.headers()) {
        tracing::warn!(
            method = %request.method(),
            uri = %request.uri(),
            origin = ?request.headers().get(header::ORIGIN),
            code = refusal.code(),
            "cross-site request refused"
        );
        return reply_error(request.headers(), refusal.status(), refusal.code());
    }
    next.run(request).await
}

/// The rule described in the module docs.
pub(super) fn check(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // An origin that is not text names no host of ours.
        let ours = origin.to_str().is_ok_and(|o| same_host(o, headers));
        if !ours {
            return Err(Refusal::ForeignOrigin);
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if *method != Method::POST || json || headers.contains_key(ACTION_HEADER) {
        Ok(())
    } else {
        Err(Refusal::SimpleRequest)
    }
}

/// Whether `origin` ("http://host:port") names the host the request was sent to.
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null", or nonsense
    };
    let origin = authority_key(scheme, authority);
    [header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        // A proxy may list several hosts; the first is the client's.
        .filter_map(|v| v.split(',').next())
        .any(|host| authority_key(scheme, host.trim()) == origin)
}

/// `authority` lowercased, without the scheme's default port.
fn authority_key(scheme: &str, authority: &str) -> String {
    let authority = authority.trim_end_matches('/').to_ascii_lowercase();
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return authority,
    };
    match authority.strip_suffix(default) {
        Some(bare) => bare.to_owned(),
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn simple_posts_are_refused() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:4171");
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                check(&post, &headers(&[host, ("content-type", ct)])),
                Err(Refusal::SimpleRequest),
                "{ct}"
            );
        }
        assert_eq!(check(&post, &headers(&[host])), Err(Refusal::SimpleRequest));
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(check(&post, &headers(&[host, json])), Ok(()));
        let form = ("content-type", "application/x-www-form-urlencoded");
        let marked = ("x-ferry-action", "1");
        assert_eq!(check(&post, &headers(&[host, form, marked])), Ok(()));
        assert_eq!(check(&Method::DELETE, &headers(&[host])), Ok(()));
        assert_eq!(check(&Method::GET, &headers(&[host])), Ok(()));
    }

    #[test]
    fn origins_must_match_the_host() {
        let post = Method::POST;
        let json = ("content-type", "application/json");
        let host = ("host", "admin.example:4171");
        let ok = |origin: &str, extra: Option<(&'static str, &str)>| {
            let mut h = vec![json, host, ("origin", origin)];
            h.extend(extra);
            check(&post, &headers(&h))
        };
        assert_eq!(ok("http://admin.example:4171", None), Ok(()));
        assert_eq!(ok("http://ADMIN.example:4171", None), Ok(()));
        assert_eq!(ok("http://evil.example", None), Err(Refusal::ForeignOrigin));
        assert_eq!(
            ok("http://admin.example:4172", None),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(ok("null", None), Err(Refusal::ForeignOrigin));
        // Behind a proxy: the public host.
        let fwd = Some(("x-forwarded-host", "ops.example"));
        assert_eq!(ok("https://ops.example", fwd), Ok(()));
        assert_eq!(ok("https://ops.example:443", fwd), Ok(()));
        // The header does not excuse a foreign origin, and DELETE is checked too.
        let marked = [("x-ferry-action", "1"), host, ("origin", "http://evil")];
        assert_eq!(check(&post, &headers(&marked)), Err(Refusal::ForeignOrigin));
        assert_eq!(
            check(&Method::DELETE, &headers(&marked)),
            Err(Refusal::ForeignOrigin)
        );
    }
}
