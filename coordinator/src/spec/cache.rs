//! The cache key of a job: jobs with equal keys give equal artifacts, so one runs
//! and the others reuse what it stored (`store::cached`).

use atelier_proto::kinds::PrepareParams;
use atelier_proto::trainset_ref::TrainsetRef;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::JobSpec;

/// sha256 (hex) of the job's kind and its params, for a job whose input content is
/// known at submit: a `prepare` job, needing no other job, on a pushed trainset
/// pinned to its sha256 (see [`TrainsetRef`]). `None` for every other job.
///
/// The params are read into [`PrepareParams`] and written back, so defaults spelt
/// out or left implicit give the same key, and `trainset` is reduced to the bare
/// sha256: the name it was pushed under does not matter, the bytes do.
pub fn cache_key(job: &JobSpec) -> Option<String> {
    if job.kind != "prepare" || !job.needs.is_empty() {
        return None;
    }
    let trainset = job.params.get("trainset")?.as_str()?;
    let sha = TrainsetRef::parse(trainset)?
        .ok()?
        .pinned_sha256()?
        .to_string();
    let mut params = PrepareParams::deserialize(&job.params).ok()?;
    params.trainset = format!("sha256:{sha}");
    let canonical = serde_json::to_string(&params).ok()?;
    let mut h = Sha256::new();
    h.update(b"prepare\n");
    h.update(canonical.as_bytes());
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(params: serde_json::Value) -> JobSpec {
        JobSpec {
            name: "p".into(),
            kind: "prepare".into(),
            params,
            priority: 0,
            max_attempts: 3,
            requires: Default::default(),
            needs: Vec::new(),
            sweep_point: None,
        }
    }

    #[test]
    fn equal_content_and_params_give_equal_keys() {
        let sha = "0f".repeat(32);
        let named = cache_key(&job(
            json!({"trainset": format!("pushed:monet@{sha}"), "resolution": 64}),
        ))
        .unwrap();
        let by_hash = cache_key(&job(json!({
            "trainset": format!("sha256:{sha}"), "resolution": 64, "dedupe": true
        })))
        .unwrap();
        assert_eq!(named, by_hash);
        let other = cache_key(&job(
            json!({"trainset": format!("sha256:{sha}"), "resolution": 32}),
        ));
        assert_ne!(other.as_deref(), Some(named.as_str()));
        // Not pinned, a folder, or needing another job: no key.
        assert_eq!(cache_key(&job(json!({"trainset": "pushed:monet"}))), None);
        assert_eq!(cache_key(&job(json!({"trainset": "/data/monet"}))), None);
        let mut needing = job(json!({"trainset": format!("sha256:{sha}")}));
        needing.needs.push("other".into());
        assert_eq!(cache_key(&needing), None);
    }
}
