//! The admin HTTP listener (hyper): `/metrics` (Prometheus text format),
//! `/live` (the process runs), `/ready` (listeners bound, a backend usable).
//! Separate from IMAP, loopback by default.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// What `/ready` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    pub listeners_bound: AtomicBool,
}

/// Serve the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>) {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "admin HTTP listening");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, readiness.clone(), peer));
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
    readiness: Arc<Readiness>,
    _peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(super::get().render()))),
        ("GET", "/live") => text(StatusCode::OK, "live\n"),
        ("GET", "/ready") => {
            if readiness.listeners_bound.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"internal error\n")))))
}

fn text(
    status: StatusCode,
    body: &'static str,
) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
}
