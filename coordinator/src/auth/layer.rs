//! The tower layer that authenticates every call and checks its role against the
//! service called; handlers then check ownership with the [`Caller`] it leaves in
//! the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atelier_proto::v1::admin_server::AdminServer;
use atelier_proto::v1::atelier_server::AtelierServer;
use atelier_proto::v1::worker_api_server::WorkerApiServer;
use tonic::server::NamedService;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::{Caller, Role, Tokens};
use crate::service::{AdminService, AtelierService, WorkerService};

/// In front of the gRPC server; with no [`Tokens`] (auth off) it lets every call through.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Arc<Tokens>>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(tokens) = self.tokens.clone() else {
            return Box::pin(self.inner.call(req));
        };
        // The instance polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Only the path and the header cross the await: the body need not be `Sync`.
        let path = req.uri().path().to_string();
        let header = req.headers().get(http::header::AUTHORIZATION).cloned();
        Box::pin(async move {
            match authorize(&tokens, &path, header).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The roles that may call a service (the first part of the path).
fn allowed(service: &str) -> &'static [Role] {
    if service == <AtelierServer<AtelierService> as NamedService>::NAME {
        &[Role::User, Role::Admin]
    } else if service == <WorkerApiServer<WorkerService> as NamedService>::NAME {
        &[Role::Worker, Role::Admin]
    } else if service == <AdminServer<AdminService> as NamedService>::NAME {
        &[Role::Admin]
    } else {
        // Anything else the server may answer: admins only.
        &[Role::Admin]
    }
}

async fn authorize(
    tokens: &Tokens,
    path: &str,
    header: Option<http::HeaderValue>,
) -> Result<Caller, Status> {
    let header = header.ok_or_else(|| {
        Status::unauthenticated(format!(
            "{path}: no token; send `authorization: Bearer <token>` \
                 (setting `token` or `token_file`)"
        ))
    })?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "{path}: the authorization header is not `Bearer <token>`"
            ))
        })?;
    let caller = match tokens.resolve(secret).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Status::unauthenticated(format!(
                "{path}: the token is unknown or revoked"
            )))
        }
        Err(e) => {
            tracing::error!("checking a token: {e}");
            return Err(Status::unavailable(format!(
                "{path}: cannot check the token: {e}"
            )));
        }
    };
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let roles = allowed(service);
    if !roles.contains(&caller.role) {
        let may: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "{path}: token `{}` has role {}; only {} may call {service}",
            caller.name,
            caller.role.as_str(),
            may.join(" or ")
        )));
    }
    Ok(caller)
}
