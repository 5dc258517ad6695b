//! Authentication and authorization (`auth = true`): tokens sent as
//! `authorization: Bearer <token>`, each with a name and a role.
//!
//! - `secret`: making tokens and hashing them (only hashes are stored).
//! - `tokens`: a token to its caller, through the store, cached for seconds.
//! - `layer`: the tower layer in front of every service: no, unknown or revoked
//!   token is UNAUTHENTICATED, another role's service PERMISSION_DENIED; the caller
//!   goes into the request's extensions for the handlers' ownership checks.
//! - `bootstrap`: the first admin token, written to a file.
//!
//! With auth off no layer runs and no handler restricts anything.

mod bootstrap;
mod layer;
mod secret;
mod tokens;

pub use bootstrap::ensure_admin;
pub use layer::AuthLayer;
pub use secret::{generate, hash};
pub use tokens::Tokens;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, token management included.
    Admin,
    /// The `Atelier` service, on its own experiments only.
    User,
    /// The `WorkerApi` service only.
    Worker,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Worker => "worker",
        }
    }
}

/// Who made a request: put into its extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: i64,
    /// The token's name: the owner of the experiments it submits.
    pub name: String,
    pub role: Role,
}
