//! What a `prepare` job's `params.trainset` may name besides a folder: a trainset
//! pushed to the coordinator's artifact store (`atelier trainset push`).
//!
//! - `pushed:NAME`: the content last pushed as NAME;
//! - `pushed:NAME@HEX`: the content pushed as NAME whose sha256 starts with HEX (at
//!   least [`MIN_PREFIX`] digits);
//! - `sha256:HEX`: pushed content by its full sha256.
//!
//! At submit the coordinator pins every reference to its full sha256
//! (`pushed:NAME@<64 hex digits>`, or `sha256:HEX` as written), so all jobs of an
//! experiment read the same bytes even when NAME is pushed again later.

/// Fewest hex digits of a `pushed:NAME@HEX` prefix.
pub const MIN_PREFIX: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainsetRef {
    /// `pushed:NAME` or `pushed:NAME@HEX` (`prefix`: lower-case hex, maybe all 64).
    Pushed {
        name: String,
        prefix: Option<String>,
    },
    /// `sha256:HEX`, 64 lower-case hex digits.
    Sha256(String),
}

impl TrainsetRef {
    /// `None` when `s` names no pushed trainset (a folder); `Some(Err)` when it starts
    /// like a reference but is not a valid one.
    pub fn parse(s: &str) -> Option<Result<TrainsetRef, String>> {
        if let Some(rest) = s.strip_prefix("pushed:") {
            let (name, prefix) = match rest.split_once('@') {
                Some((n, p)) => (n, Some(p)),
                None => (rest, None),
            };
            return Some(check_name(name).and_then(|()| {
                let prefix = match prefix {
                    None => None,
                    Some(p) => {
                        let p = p.to_ascii_lowercase();
                        if p.len() < MIN_PREFIX || p.len() > 64 || !is_hex(&p) {
                            return Err(format!(
                                "`{s}`: after `@` come {MIN_PREFIX} to 64 hex digits of the \
                                 content's sha256"
                            ));
                        }
                        Some(p)
                    }
                };
                Ok(TrainsetRef::Pushed {
                    name: name.to_string(),
                    prefix,
                })
            }));
        }
        if let Some(hex) = s.strip_prefix("sha256:") {
            let hex = hex.to_ascii_lowercase();
            return Some(if hex.len() == 64 && is_hex(&hex) {
                Ok(TrainsetRef::Sha256(hex))
            } else {
                Err(format!(
                    "`{s}`: `sha256:` takes the 64 hex digits of a sha256"
                ))
            });
        }
        None
    }

    /// The full sha256, when the reference is pinned (`sha256:HEX` or
    /// `pushed:NAME@<64 hex digits>`).
    pub fn pinned_sha256(&self) -> Option<&str> {
        match self {
            TrainsetRef::Sha256(h) => Some(h),
            TrainsetRef::Pushed {
                prefix: Some(p), ..
            } if p.len() == 64 => Some(p),
            TrainsetRef::Pushed { .. } => None,
        }
    }

    /// The reference pinned to `sha256` (keeps the name where there is one).
    pub fn pinned(&self, sha256: &str) -> String {
        match self {
            TrainsetRef::Pushed { name, .. } => format!("pushed:{name}@{sha256}"),
            TrainsetRef::Sha256(_) => format!("sha256:{sha256}"),
        }
    }
}

/// A trainset name as pushed: `[A-Za-z0-9._-]+`, at most 128 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the trainset name is empty".into());
    }
    if name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "trainset name `{name}`: use letters, digits, `.`, `_` and `-` (at most 128)"
        ));
    }
    Ok(())
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_leaves_folders_alone() {
        let sha = "ab".repeat(32);
        assert_eq!(TrainsetRef::parse("./trainsets/demo"), None);
        assert_eq!(TrainsetRef::parse("/data/pushed"), None);
        assert_eq!(
            TrainsetRef::parse("pushed:monet"),
            Some(Ok(TrainsetRef::Pushed {
                name: "monet".into(),
                prefix: None
            }))
        );
        let r = TrainsetRef::parse("pushed:monet@ABCDABCD")
            .unwrap()
            .unwrap();
        assert_eq!(r.pinned_sha256(), None);
        assert_eq!(r.pinned(&sha), format!("pushed:monet@{sha}"));
        let r = TrainsetRef::parse(&format!("pushed:monet@{sha}"))
            .unwrap()
            .unwrap();
        assert_eq!(r.pinned_sha256(), Some(sha.as_str()));
        let r = TrainsetRef::parse(&format!("sha256:{sha}"))
            .unwrap()
            .unwrap();
        assert_eq!(r.pinned_sha256(), Some(sha.as_str()));
        for bad in [
            "pushed:",
            "pushed:a b",
            "pushed:monet@abc",
            "pushed:monet@zzzzzzzz",
            "sha256:abc",
        ] {
            assert!(
                matches!(TrainsetRef::parse(bad), Some(Err(_))),
                "{bad} should be refused"
            );
        }
    }
}
