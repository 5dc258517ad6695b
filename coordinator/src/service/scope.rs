//! What a caller of the `Atelier` service may see: everything (admins, or auth
//! off), or only the experiments its token's name submitted. Another user's job,
//! experiment or artifact answers NOT_FOUND with the words used for one that does
//! not exist, so ids cannot be probed for what others run.

use tonic::{Request, Status};

use super::Coordinator;
use crate::auth::{Caller, Role};
use crate::store::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    Owner(String),
}

/// The caller the auth layer resolved; `None` with auth off. With auth on and no
/// caller (the layer was bypassed) the call is refused rather than left open.
pub(crate) fn caller<T>(c: &Coordinator, req: &Request<T>) -> Result<Option<Caller>, Status> {
    match req.extensions().get::<Caller>() {
        Some(caller) => Ok(Some(caller.clone())),
        None if c.config.auth => Err(Status::unauthenticated("no authenticated caller")),
        None => Ok(None),
    }
}

impl Scope {
    pub fn of<T>(c: &Coordinator, req: &Request<T>) -> Result<Scope, Status> {
        Ok(match caller(c, req)? {
            Some(Caller {
                role: Role::User,
                name,
                ..
            }) => Scope::Owner(name),
            _ => Scope::All,
        })
    }

    /// `Some(owner)` when listings must be filtered.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Owner(o) => Some(o),
        }
    }

    pub async fn check_job(&self, c: &Coordinator, job_id: i64) -> Result<(), Status> {
        if let Scope::Owner(me) = self {
            if &c.store.job_owner(job_id).await? != me {
                return Err(Status::not_found(format!("job {job_id} does not exist")));
            }
        }
        Ok(())
    }

    pub async fn check_experiment(&self, c: &Coordinator, id: i64) -> Result<(), Status> {
        if let Scope::Owner(me) = self {
            if &c.store.experiment_owner(id).await? != me {
                return Err(Status::not_found(format!("experiment {id} does not exist")));
            }
        }
        Ok(())
    }

    pub async fn check_target(&self, c: &Coordinator, t: Target) -> Result<(), Status> {
        match t {
            Target::Job(id) => self.check_job(c, id).await,
            Target::Experiment(id) => self.check_experiment(c, id).await,
        }
    }
}
