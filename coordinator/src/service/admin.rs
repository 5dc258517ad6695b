//! `Admin`: token management. The auth layer lets only admin tokens through; with
//! auth off it is open like every other service (tokens can be made before auth
//! is turned on).

use std::sync::Arc;

use atelier_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::scope::caller;
use super::Coordinator;
use crate::auth::{self, Role, Tokens};
use crate::store::TokenRef;

pub struct AdminService {
    c: Arc<Coordinator>,
    tokens: Arc<Tokens>,
}

impl AdminService {
    pub fn new(c: Arc<Coordinator>, tokens: Arc<Tokens>) -> AdminService {
        AdminService { c, tokens }
    }

    /// Admins only (the layer checks it too; this holds if the layer is bypassed).
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match caller(&self.c, req)? {
            Some(c) if c.role != Role::Admin => Err(Status::permission_denied(format!(
                "token `{}` has role {}; only admin may manage tokens",
                c.name,
                c.role.as_str()
            ))),
            _ => Ok(()),
        }
    }
}

/// Token names own experiments and appear in listings: short and plain, and
/// starting with a letter so that `atelier token revoke 12` can only mean an id.
fn check_name(name: &str) -> Result<(), Status> {
    let plain = |ch: char| ch.is_ascii_alphanumeric() || "._@-".contains(ch);
    let starts = name.starts_with(|ch: char| ch.is_ascii_alphabetic());
    if !starts || name.len() > 64 || !name.chars().all(plain) {
        return Err(Status::invalid_argument(format!(
            "token name `{name}`: a letter, then up to 63 letters, digits, `.`, `_`, `@` or `-`"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        check_name(&r.name)?;
        let role = Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "token role `{}`: expected admin, user or worker",
                r.role
            ))
        })?;
        let secret = auth::generate();
        let row = self
            .c
            .store
            .create_token(&r.name, role.as_str(), &auth::hash(&secret))
            .await?;
        tracing::info!(token = row.id, name = %row.name, role = %row.role, "token created");
        Ok(Response::new(v1::CreateTokenResponse {
            info: Some(row.to_proto()),
            token: secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.check(&req)?;
        let rows = self.c.store.list_tokens().await?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: rows.iter().map(|t| t.to_proto()).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.check(&req)?;
        let which = match req.into_inner().which {
            Some(v1::revoke_token_request::Which::Id(id)) => TokenRef::Id(id),
            Some(v1::revoke_token_request::Which::Name(n)) => TokenRef::Name(n),
            None => return Err(Status::invalid_argument("no token id or name given")),
        };
        let row = self.c.store.revoke_token(&which).await?;
        self.tokens.forget(row.id);
        tracing::info!(token = row.id, name = %row.name, "token revoked");
        Ok(Response::new(v1::RevokeTokenResponse {
            info: Some(row.to_proto()),
        }))
    }
}
