//! The admin API under `/api/` on the [admin HTTP listener](crate::metrics::http):
//! list sessions, kick a session or a user, reload the config, drain or
//! undrain a backend.  JSON in and out.
//!
//! Off unless `[admin] api_token` is set: without a token every `/api/`
//! path answers 404, as if it did not exist.  With one, every request needs
//! `Authorization: Bearer TOKEN` (compared in constant time) and gets 401
//! without it, before any routing, so an unauthenticated caller learns
//! nothing about which paths exist.  The token is read from the running
//! config per request, so a reload rotates it.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/sessions` | `{"sessions": [...]}` |
//! | POST | `/api/sessions/{id}/kick` | `{"kicked": 1}`; 404 if no such session |
//! | POST | `/api/users/{user}/kick` | `{"kicked": n}` (n may be 0) |
//! | POST | `/api/reload` | `{"result": "ok"}`; 500 `{"error": "..."}` |
//! | GET | `/api/backends` | `{"backends": [...]}` |
//! | POST | `/api/backends/{name}/drain`, `/undrain` | `{"backend", "up", "draining"}`; 404 if unknown |
//!
//! Kick bodies may carry `{"reason": "..."}`; the client reads it in its
//! `* BYE [UNAVAILABLE] reason`.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tracing::info;

use crate::registry::{self, SessionHandle};
use crate::runtime::Current;

/// Largest request body read (a kick reason).
const MAX_BODY: usize = 4096;

/// Answer one `/api/` request.
pub async fn handle(req: Request<Incoming>, current: &Current) -> Response<Full<Bytes>> {
    let runtime = current.load();
    let Some(token) = runtime
        .config
        .admin
        .as_ref()
        .and_then(|a| a.api_token.as_ref())
    else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    if !presented.is_some_and(|p| token.ct_eq(p.as_bytes())) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"imapgate\""),
        );
        return r;
    }
    drop(runtime);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path
        .trim_start_matches("/api/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["sessions"]) => sessions(),
        (&Method::POST, ["sessions", id, "kick"]) => {
            let reason = reason(req).await;
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::NOT_FOUND, "no such session");
            };
            match registry::get().find(id) {
                Some(h) => {
                    h.kick(&reason);
                    info!(
                        session = id,
                        reason = h.kick_reason(),
                        "admin: session kicked"
                    );
                    ok(json!({ "kicked": 1 }))
                }
                None => error(StatusCode::NOT_FOUND, "no such session"),
            }
        }
        (&Method::POST, ["users", user, "kick"]) => {
            let Some(user) = percent_decode(user) else {
                return error(StatusCode::BAD_REQUEST, "bad percent-encoding in user");
            };
            let reason = reason(req).await;
            let n = registry::get().kick_user(&user, &reason);
            info!(user = ?user, sessions = n, "admin: user kicked");
            ok(json!({ "kicked": n }))
        }
        (&Method::POST, ["reload"]) => match crate::server::reload(current) {
            Ok(()) => ok(json!({ "result": "ok" })),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        (&Method::GET, ["backends"]) => backends(current),
        (&Method::POST, ["backends", name, action @ ("drain" | "undrain")]) => {
            let Some(name) = percent_decode(name) else {
                return error(StatusCode::BAD_REQUEST, "bad percent-encoding in name");
            };
            let runtime = current.load();
            let health = runtime.router.health();
            if !health.set_draining(&name, *action == "drain") {
                return error(StatusCode::NOT_FOUND, "no such backend");
            }
            let s = health.status(&name).expect("set_draining found it");
            ok(json!({ "backend": name, "up": s.up, "draining": s.draining }))
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (RFC 6750 §2.1;
/// the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn sessions() -> Response<Full<Bytes>> {
    let list: Vec<Value> = registry::get().list().iter().map(|h| session(h)).collect();
    ok(json!({ "sessions": list }))
}

fn session(h: &SessionHandle) -> Value {
    json!({
        "id": h.id,
        "user": h.user(),
        "client_ip": h.peer.ip().to_string(),
        "client_port": h.peer.port(),
        "listener": &*h.listener,
        "state": h.state(),
        "backend": h.backend(),
        "started": h.started,
        "bytes_in": h.bytes_in(),
        "bytes_out": h.bytes_out(),
    })
}

fn backends(current: &Current) -> Response<Full<Bytes>> {
    let runtime = current.load();
    let health = runtime.router.health();
    let m = crate::metrics::get();
    let list: Vec<Value> = runtime
        .router
        .backends()
        .iter()
        .map(|b| {
            let s = health.status(&b.name);
            json!({
                "name": b.name,
                "address": format!("{}:{}", b.host, b.port),
                "weight": b.weight,
                "up": s.is_none_or(|s| s.up),
                "draining": s.is_some_and(|s| s.draining),
                "sessions": m.backend_sessions.with_label_values(&[&b.name]).get(),
            })
        })
        .collect();
    ok(json!({ "backends": list }))
}

/// The optional `{"reason": "..."}` of a kick; empty when absent or not
/// JSON (the registry substitutes the default).
async fn reason(req: Request<Incoming>) -> String {
    let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
        return String::new();
    };
    serde_json::from_slice::<Value>(&body.to_bytes())
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Decode `%XX` escapes in a path segment; None if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn ok(body: Value) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, &body)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, &json!({ "error": message }))
}

fn respond(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("alice%40example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
