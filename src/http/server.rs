//! The accept loop of the HTTP API: connection bounds and graceful shutdown.
//!
//! Which setting does what:
//!
//! - `http.max_connections`: a connection holds a semaphore permit from
//!   accept to close. When all are taken the loop stops accepting, so
//!   further clients wait in the kernel's accept backlog instead of taking
//!   memory and file descriptors here.
//! - `http.header_timeout`: hyper's `header_read_timeout`. A connection
//!   whose request head is not complete within it is closed. Hyper starts
//!   this timer as soon as it waits for a request head: when the connection
//!   opens, and again as soon as the previous response is written (see
//!   `Conn::poll_read_head` and `State::idle` in hyper 1.x's
//!   `proto/h1/conn.rs`). So it also bounds how long a keep-alive
//!   connection may sit idle between requests.
//! - `http.idle_timeout`: a per-connection timer, restarted when a request
//!   finishes, that shuts the connection down gracefully once no request
//!   has been in flight for that long. Because hyper's header timer also
//!   runs while a connection waits for its next request, an idle
//!   connection is closed after the shorter of `idle_timeout` and
//!   `header_timeout`.
//! - `http.body_timeout` and `http.max_body_bytes` are request bounds; the
//!   router applies them (see `super::router`).
//!
//! Shutdown: the loop stops accepting, every connection is told to finish
//! its in-flight request and close (hyper's `graceful_shutdown`), and
//! `serve` returns when the last connection is closed. The per-connection
//! signal is a `watch` channel rather than hyper-util's `GracefulShutdown`
//! because a connection must also be shut down on its own idle timer.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::HttpConfig;

/// Serve `app` on `listener` with `config`'s connection bounds until
/// `shutdown` completes, then let in-flight requests finish.
pub(super) async fn serve(
    app: Router,
    listener: TcpListener,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let idle_timeout = config.idle_timeout;
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then retry
                    // rather than spin or stop serving.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let router = TowerToHyperService::new(app.clone());
        let tracker = activity.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let busy = tracker.begin();
            // The client's address, for the operation audit.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = router.call(req);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection closed with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|stop| *stop), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = activity.idle_for(idle_timeout), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Requests in flight on one connection, and when the last one finished.
struct Activity {
    state: Mutex<(usize, Instant)>,
    changed: Notify,
}

/// A request in flight; its drop marks the end of the request.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new((0, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.update(|state| state.0 += 1);
        Busy(self.clone())
    }

    fn update(&self, f: impl FnOnce(&mut (usize, Instant))) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_waiters();
    }

    /// Completes once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (in_flight, since) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight > 0 {
                changed.await;
                continue;
            }
            let deadline = since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|state| {
            state.0 -= 1;
            state.1 = Instant::now();
        });
    }
}
