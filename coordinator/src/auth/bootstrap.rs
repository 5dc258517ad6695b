//! The first admin token: made when auth is on and no live admin token exists,
//! written to a file only its owner can read.

use std::io::Write;
use std::path::Path;

use super::secret;
use crate::error::{Error, Result};
use crate::store::Store;

/// The name of the token made here.
pub const ADMIN_NAME: &str = "admin";

/// Makes an admin token unless a live one exists, and writes it to `file` (mode
/// 0600). The file is written before the token is stored, so a token is never
/// stored that nobody can read; of coordinators starting together on one database
/// only one stores it (see [`Store::bootstrap_admin`]).
pub async fn ensure_admin(store: &Store, file: &Path) -> Result<()> {
    let secret = secret::generate();
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Invalid(format!(
            "cannot create `{}` for the admin token: {e}",
            dir.display()
        ))
    })?;
    let tmp = dir.join(format!(".admin.token.{:016x}", rand::random::<u64>()));
    write_private(&tmp, &secret).map_err(|e| {
        Error::Invalid(format!(
            "cannot write the admin token to `{}`: {e}",
            tmp.display()
        ))
    })?;
    let created = match store
        .bootstrap_admin(ADMIN_NAME, &secret::hash(&secret))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    match created {
        Some(row) => {
            std::fs::rename(&tmp, file).map_err(|e| {
                Error::Invalid(format!(
                    "admin token {} stored but not moved to `{}`: {e}; its secret is in `{}`",
                    row.id,
                    file.display(),
                    tmp.display()
                ))
            })?;
            tracing::warn!(
                "auth is on and no admin token existed: created token {} `{ADMIN_NAME}`, \
                 its secret is in {}",
                row.id,
                file.display()
            );
        }
        None => {
            let _ = std::fs::remove_file(&tmp);
            tracing::info!("auth is on; an admin token exists");
        }
    }
    Ok(())
}

fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}
