//! Row structs as stored, and their conversion into API messages.

use std::collections::HashMap;

use atelier_proto::v1;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExperimentRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub experiment_id: i64,
    pub name: String,
    pub kind: String,
    pub params: String,
    pub sweep_point: String,
    pub state: String,
    pub priority: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    pub req_gpus: i64,
    pub req_gpu_mem_gb: f64,
    pub req_backend: String,
    pub req_labels: String,
    pub pending_needs: i64,
    pub dependents: i64,
    pub lease_token: i64,
    pub lease_deadline: Option<i64>,
    pub worker_id: Option<String>,
    pub gpu_indexes: String,
    pub progress: f64,
    pub progress_message: String,
    pub result: String,
    pub reason: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// See [`crate::spec::cache_key`]; empty for most jobs.
    pub cache_key: String,
}

pub(crate) const JOB_COLUMNS: &str = "id, experiment_id, name, kind, params, sweep_point, state, \
    priority, attempt, max_attempts, req_gpus, req_gpu_mem_gb, req_backend, req_labels, \
    pending_needs, dependents, lease_token, lease_deadline, worker_id, gpu_indexes, progress, \
    progress_message, result, reason, created_at, started_at, finished_at, cache_key";

impl JobRow {
    pub fn labels(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.req_labels).unwrap_or_default()
    }

    pub fn requirements(&self) -> crate::spec::Requirements {
        crate::spec::Requirements {
            gpus: self.req_gpus as u32,
            gpu_mem_gb: self.req_gpu_mem_gb,
            backend: self.req_backend.clone(),
            labels: self.labels().into_iter().collect(),
        }
    }

    pub fn gpu_index_list(&self) -> Vec<u32> {
        parse_index_list(&self.gpu_indexes)
    }

    pub fn to_proto(&self, experiment_name: &str, needs: Vec<i64>) -> v1::Job {
        v1::Job {
            id: self.id,
            experiment_id: self.experiment_id,
            experiment_name: experiment_name.to_string(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            state: self.state.clone(),
            priority: self.priority,
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            params_json: self.params.clone(),
            requires: Some(v1::Requirements {
                gpus: self.req_gpus as u32,
                gpu_mem_gb: self.req_gpu_mem_gb,
                backend: self.req_backend.clone(),
                labels: self.labels(),
            }),
            needs,
            pending_needs: self.pending_needs as u32,
            worker_id: self.worker_id.clone().unwrap_or_default(),
            lease_token: self.lease_token as u64,
            lease_deadline_ms: self.lease_deadline.unwrap_or(0),
            progress: self.progress,
            progress_message: self.progress_message.clone(),
            result_json: self.result.clone(),
            reason: self.reason.clone(),
            created_at_ms: self.created_at,
            started_at_ms: self.started_at.unwrap_or(0),
            finished_at_ms: self.finished_at.unwrap_or(0),
            sweep_point_json: self.sweep_point.clone(),
            gpu_indexes: self.gpu_index_list(),
        }
    }
}

pub(crate) fn parse_index_list(s: &str) -> Vec<u32> {
    s.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

pub(crate) fn format_index_list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub job_id: i64,
    pub lease_token: i64,
    pub attempt: i64,
    pub worker_id: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub reason: String,
}

impl AttemptRow {
    pub fn to_proto(&self) -> v1::Attempt {
        v1::Attempt {
            lease_token: self.lease_token as u64,
            attempt: self.attempt as u32,
            worker_id: self.worker_id.clone(),
            started_at_ms: self.started_at,
            ended_at_ms: self.ended_at.unwrap_or(0),
            outcome: self.outcome.clone(),
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub at: i64,
    pub line: String,
}

impl LogRow {
    pub fn to_proto(&self) -> v1::LogLine {
        v1::LogLine {
            seq: self.id,
            job_id: self.job_id,
            attempt: self.attempt as u32,
            at_ms: self.at,
            line: self.line.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub backend: String,
    pub gpus: String,
    pub labels: String,
    pub cpu_slots: i64,
    pub version: String,
    pub registered_at: i64,
    pub last_seen: i64,
    pub running: String,
}

/// A GPU as a worker reports it, stored as JSON in `workers.gpus`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_gb: f64,
}

impl WorkerRow {
    pub fn gpu_list(&self) -> Vec<GpuInfo> {
        serde_json::from_str(&self.gpus).unwrap_or_default()
    }

    pub fn label_map(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }

    pub fn running_jobs(&self) -> Vec<i64> {
        serde_json::from_str(&self.running).unwrap_or_default()
    }

    pub fn to_proto(&self, online: bool) -> v1::Worker {
        v1::Worker {
            id: self.id.clone(),
            name: self.name.clone(),
            backend: self.backend.clone(),
            gpus: self
                .gpu_list()
                .into_iter()
                .map(|g| v1::Gpu {
                    index: g.index,
                    name: g.name,
                    memory_gb: g.memory_gb,
                })
                .collect(),
            labels: self.label_map(),
            cpu_slots: self.cpu_slots as u32,
            online,
            last_seen_ms: self.last_seen,
            running_jobs: self.running_jobs(),
            version: self.version.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
}

impl ArtifactRow {
    pub fn to_proto(&self) -> v1::Artifact {
        v1::Artifact {
            id: self.id,
            job_id: self.job_id,
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            size: self.size as u64,
            created_at_ms: self.created_at,
            attempt: self.attempt as u32,
        }
    }
}

/// A name pushed for a trainset's content (`atelier trainset push`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrainsetRow {
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub files: i64,
    pub pushed_at: i64,
}

impl TrainsetRow {
    pub fn to_proto(&self) -> v1::Trainset {
        v1::Trainset {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            size: self.size as u64,
            files: self.files as u32,
            pushed_at_ms: self.pushed_at,
        }
    }

    /// The trainset as a downloadable blob (`Download` by sha256): not a job's
    /// artifact, so job 0 and id 0.
    pub fn to_artifact(&self) -> v1::Artifact {
        v1::Artifact {
            id: 0,
            job_id: 0,
            name: format!("trainset-{}.tar", self.name),
            sha256: self.sha256.clone(),
            size: self.size as u64,
            created_at_ms: self.pushed_at,
            attempt: 0,
        }
    }
}
