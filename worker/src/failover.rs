//! The connection to the coordinator as one tower service over its addresses: every
//! call goes to one live replica. A call that fails to reach its replica marks it
//! down and the next call goes to the next one; a background task brings a down
//! replica back once it accepts connections again. With one address it is a plain
//! channel that adds the token.
//!
//! A failed call is not re-sent (its body may be a stream already consumed): callers
//! retry transient errors (`client::is_transient`), and their retry reaches a live
//! replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, TimeoutExpired};
use tower_service::Service;

use crate::socket::Connector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a reachability check waits for a replica to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often replicas marked down are checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// A clonable gRPC connection to the coordinator (one or several replicas).
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    targets: Vec<Target>,
    /// The replica calls go to while it is up.
    current: AtomicUsize,
    authorization: Option<HeaderValue>,
    /// With several replicas, the first call waits for one check of all of them,
    /// so that a fresh CLI process does not start on a dead one.
    checked: OnceCell<()>,
}

struct Target {
    url: String,
    /// `host:port`, for the reachability check.
    addr: String,
    plain: bool,
    channel: Channel,
    down: AtomicBool,
}

impl Conn {
    pub(crate) fn new(
        endpoints: Vec<(String, Endpoint)>,
        authorization: Option<HeaderValue>,
    ) -> Result<Conn, String> {
        let targets: Vec<Target> = endpoints
            .into_iter()
            .map(|(url, endpoint)| {
                let uri = endpoint.uri();
                let plain = uri.scheme_str() == Some("http");
                let port = uri.port_u16().unwrap_or(if plain { 80 } else { 443 });
                Target {
                    addr: format!("{}:{port}", uri.host().unwrap_or_default()),
                    plain,
                    channel: endpoint.connect_with_connector_lazy(Connector::new()),
                    down: AtomicBool::new(false),
                    url,
                }
            })
            .collect();
        let several = targets.len() > 1;
        let shared = Arc::new(Shared {
            targets,
            current: AtomicUsize::new(0),
            authorization,
            checked: OnceCell::new(),
        });
        if several {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| "a coordinator address list needs a tokio runtime".to_string())?;
            runtime.spawn(revive(Arc::downgrade(&shared)));
        }
        Ok(Conn { shared })
    }
}

impl Shared {
    /// The replica for the next call: the current one if up, else the next one up
    /// (which becomes current), else the current one anyway.
    async fn pick(&self) -> usize {
        let n = self.targets.len();
        if n == 1 {
            return 0;
        }
        self.checked.get_or_init(|| self.check_all()).await;
        let start = self.current.load(Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            if !self.targets[i].down.load(Ordering::Relaxed) {
                if k > 0 {
                    self.current.store(i, Ordering::Relaxed);
                }
                return i;
            }
        }
        start
    }

    async fn check_all(&self) {
        let checks = self.targets.iter().map(|t| reachable(&t.addr));
        for (t, up) in self
            .targets
            .iter()
            .zip(futures::future::join_all(checks).await)
        {
            t.down.store(!up, Ordering::Relaxed);
        }
    }

    /// A call to replica `i` did not get an answer: calls go elsewhere until it
    /// accepts connections again.
    fn failed(&self, i: usize) {
        let n = self.targets.len();
        if n == 1 {
            return;
        }
        if !self.targets[i].down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "coordinator {} unreachable; using the others",
                self.targets[i].url
            );
        }
        let _ = self
            .current
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Marks replicas up again once they accept connections; ends with the connection.
async fn revive(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        let Some(s) = shared.upgrade() else { return };
        for t in s.targets.iter().filter(|t| t.down.load(Ordering::Relaxed)) {
            if reachable(&t.addr).await {
                tracing::info!("coordinator {} reachable again", t.url);
                t.down.store(false, Ordering::Relaxed);
            }
        }
    }
}

async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Whether the server at `addr` answers a plain HTTP/2 preface with a TLS record
/// (an alert or a handshake): it wants `https://`.
async fn speaks_tls(addr: &str) -> bool {
    let answer = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.ok()?;
        Some(first[0])
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, answer).await,
        Ok(Some(0x15 | 0x16))
    )
}

/// The error and its sources on one line: the outermost says "transport error",
/// the innermost why (refused, unknown issuer, …).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Whether the call ran past a deadline the request set, rather than losing its
/// connection.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<TimeoutExpired>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl Service<http::Request<Body>> for Conn {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the chosen replica's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(value) = &self.shared.authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            let i = shared.pick().await;
            let target = &shared.targets[i];
            let mut channel = target.channel.clone();
            let result = async {
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            }
            .await;
            let error = match result {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let deadline = timed_out(&error);
            if !deadline {
                shared.failed(i);
            }
            let why = chain(&error);
            let message = if target.plain && speaks_tls(&target.addr).await {
                format!(
                    "coordinator {}: the port speaks TLS, use https:// (and tls_ca for a \
                     private CA): {why}",
                    target.url
                )
            } else {
                format!("coordinator {}: {why}", target.url)
            };
            // No gRPC answer came (refused, TLS refused, the connection broke or was
            // cancelled by its end): UNAVAILABLE, worth a retry elsewhere. Only a
            // request's own deadline stays what tonic makes of it.
            let code = if deadline {
                Code::Cancelled
            } else {
                Code::Unavailable
            };
            Err(Box::new(Status::new(code, message)) as BoxError)
        })
    }
}
