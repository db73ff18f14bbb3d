//! The admin HTTP listener (hyper): `/metrics` (Prometheus text format),
//! `/live` (the process runs), `/ready` (listeners bound and at least one
//! backend up and not drained), and the token-protected [`/api/`](crate::admin).
//! Separate from IMAP, loopback by default.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::runtime::Current;

/// What the admin endpoints need from the rest of the process.
pub struct Admin {
    /// Set once every IMAP listener is bound.
    pub listeners_bound: AtomicBool,
    pub current: Arc<Current>,
}

impl Admin {
    pub fn new(current: Arc<Current>) -> Admin {
        Admin {
            listeners_bound: AtomicBool::new(false),
            current,
        }
    }

    /// Why the gateway is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.listeners_bound.load(Ordering::Relaxed) {
            return Some("listeners not bound");
        }
        if !self.current.load().router.any_usable() {
            return Some("no backend up and undrained");
        }
        None
    }
}

/// Serve the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "admin HTTP listening");
    }
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, admin.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection error");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    admin: Arc<Admin>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path().starts_with("/api/") {
        return Ok(crate::admin::handle(req, &admin.current).await);
    }
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(super::get().render()))),
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n".into()),
        (&Method::GET, "/ready") => match admin.not_ready() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"internal error\n")))))
}

fn text(status: StatusCode, body: String) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
}
