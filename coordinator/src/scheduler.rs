//! Placement, pure: which queued jobs a worker takes, and why a queued job has not
//! started. No I/O here; the store feeds candidates in queue order.

use std::collections::BTreeMap;

use crate::spec::Requirements;

/// A GPU a worker has free now.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeGpu {
    pub index: u32,
    pub memory_gb: f64,
}

/// What a worker can take on right now.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub backend: String,
    pub free_gpus: Vec<FreeGpu>,
    pub free_cpu_slots: u32,
    pub labels: BTreeMap<String, String>,
}

/// A queued job offered to the worker, in queue order (priority, then age).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub requires: Requirements,
}

pub fn backend_fits(wanted: &str, offered: &str) -> bool {
    wanted == "any" || wanted == offered
}

pub fn labels_fit(wanted: &BTreeMap<String, String>, offered: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| offered.get(k) == Some(v))
}

/// Takes jobs in queue order while they fit what is still free; each GPU job gets
/// the smallest free GPUs that are large enough (one job per GPU), each CPU job a
/// CPU slot. Returns (job id, GPU indexes).
pub fn assign(candidates: &[Candidate], cap: &Capacity, max_jobs: usize) -> Vec<(i64, Vec<u32>)> {
    let mut gpus = cap.free_gpus.clone();
    gpus.sort_by(|a, b| {
        a.memory_gb
            .total_cmp(&b.memory_gb)
            .then(a.index.cmp(&b.index))
    });
    let mut cpu_slots = cap.free_cpu_slots;
    let mut out = Vec::new();
    for c in candidates {
        if out.len() >= max_jobs {
            break;
        }
        let r = &c.requires;
        if !backend_fits(&r.backend, &cap.backend) || !labels_fit(&r.labels, &cap.labels) {
            continue;
        }
        if r.gpus == 0 {
            if cpu_slots > 0 && r.gpu_mem_gb <= 0.0 {
                cpu_slots -= 1;
                out.push((c.id, Vec::new()));
            }
            continue;
        }
        let big_enough: Vec<usize> = gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| g.memory_gb >= r.gpu_mem_gb)
            .map(|(i, _)| i)
            .take(r.gpus as usize)
            .collect();
        if big_enough.len() < r.gpus as usize {
            continue;
        }
        let mut taken: Vec<u32> = big_enough.iter().map(|&i| gpus[i].index).collect();
        for &i in big_enough.iter().rev() {
            gpus.remove(i);
        }
        taken.sort_unstable();
        out.push((c.id, taken));
    }
    out
}

/// A worker as the explanation sees it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub name: String,
    pub online: bool,
    pub backend: String,
    /// Memory of each GPU, in GB.
    pub gpus: Vec<f64>,
    pub labels: BTreeMap<String, String>,
    pub cpu_slots: u32,
    pub running: usize,
}

/// Why a queued job whose needs are met has not started, in words for people.
pub fn explain_waiting(req: &Requirements, workers: &[WorkerView], ahead: i64) -> String {
    let online: Vec<&WorkerView> = workers.iter().filter(|w| w.online).collect();
    if online.is_empty() {
        return "no worker is connected; start one with `atelier worker --coordinator URL`".into();
    }
    let mut problems = Vec::new();
    if !online
        .iter()
        .any(|w| backend_fits(&req.backend, &w.backend))
    {
        let offered: Vec<&str> = dedup(online.iter().map(|w| w.backend.as_str()));
        problems.push(format!(
            "needs backend {}; connected workers offer {}",
            req.backend,
            offered.join(", ")
        ));
    }
    if req.gpus > 0 {
        let most = online.iter().map(|w| w.gpus.len()).max().unwrap_or(0);
        if most < req.gpus as usize {
            problems.push(format!(
                "needs {} GPU{}; the most any connected worker has is {most}",
                req.gpus,
                if req.gpus == 1 { "" } else { "s" }
            ));
        }
        let largest = online
            .iter()
            .flat_map(|w| w.gpus.iter().copied())
            .fold(0.0, f64::max);
        if req.gpu_mem_gb > largest {
            problems.push(format!(
                "needs {} GB GPU memory and the largest connected worker has {} GB",
                fmt_gb(req.gpu_mem_gb),
                fmt_gb(largest)
            ));
        }
    } else if req.gpu_mem_gb > 0.0 {
        problems.push(format!(
            "asks for {} GB GPU memory but no GPU (requires.gpus is 0)",
            fmt_gb(req.gpu_mem_gb)
        ));
    }
    for (k, v) in &req.labels {
        if !online.iter().any(|w| w.labels.get(k) == Some(v)) {
            problems.push(format!("needs label {k}={v}; no connected worker has it"));
        }
    }
    if !problems.is_empty() {
        return format!("no connected worker can run it: {}", problems.join("; "));
    }
    let fitting: Vec<&&WorkerView> = online
        .iter()
        .filter(|w| {
            backend_fits(&req.backend, &w.backend)
                && labels_fit(&req.labels, &w.labels)
                && w.gpus.iter().filter(|&&m| m >= req.gpu_mem_gb).count() >= req.gpus as usize
        })
        .collect();
    if fitting.is_empty() {
        return "no single connected worker meets all its requirements together".into();
    }
    let names: Vec<&str> = fitting.iter().map(|w| w.name.as_str()).collect();
    format!(
        "waiting for a free slot: {} worker{} can run it ({}), all busy; {ahead} job{} ahead in the queue",
        fitting.len(),
        if fitting.len() == 1 { "" } else { "s" },
        names.join(", "),
        if ahead == 1 { "" } else { "s" }
    )
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn fmt_gb(gb: f64) -> String {
    if gb.fract() == 0.0 {
        format!("{gb:.0}")
    } else {
        format!("{gb:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(gpus: u32, mem: f64, backend: &str, labels: &[(&str, &str)]) -> Requirements {
        Requirements {
            gpus,
            gpu_mem_gb: mem,
            backend: backend.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn cap(gpus: &[(u32, f64)], cpu: u32, labels: &[(&str, &str)]) -> Capacity {
        Capacity {
            backend: "cuda".into(),
            free_gpus: gpus
                .iter()
                .map(|&(index, memory_gb)| FreeGpu { index, memory_gb })
                .collect(),
            free_cpu_slots: cpu,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn one_job_per_gpu_smallest_sufficient_first() {
        let cands = vec![
            Candidate {
                id: 1,
                requires: req(1, 40.0, "cuda", &[]),
            },
            Candidate {
                id: 2,
                requires: req(1, 10.0, "any", &[]),
            },
            Candidate {
                id: 3,
                requires: req(1, 10.0, "any", &[]),
            },
        ];
        let got = assign(&cands, &cap(&[(0, 80.0), (1, 24.0)], 0, &[]), 8);
        // job 1 needs the 80 GB card; job 2 takes the 24 GB one; nothing left for 3
        assert_eq!(got, vec![(1, vec![0]), (2, vec![1])]);
    }

    #[test]
    fn skips_what_does_not_fit_and_keeps_queue_order() {
        let cands = vec![
            Candidate {
                id: 1,
                requires: req(2, 0.0, "any", &[]),
            },
            Candidate {
                id: 2,
                requires: req(0, 0.0, "cpu", &[]),
            },
            Candidate {
                id: 3,
                requires: req(0, 0.0, "any", &[("zone", "eu")]),
            },
            Candidate {
                id: 4,
                requires: req(0, 0.0, "any", &[("zone", "us")]),
            },
            Candidate {
                id: 5,
                requires: req(0, 0.0, "any", &[]),
            },
        ];
        let got = assign(&cands, &cap(&[(0, 24.0)], 2, &[("zone", "us")]), 8);
        assert_eq!(got, vec![(4, vec![]), (5, vec![])]);
        let got = assign(&cands, &cap(&[(0, 24.0)], 2, &[("zone", "us")]), 1);
        assert_eq!(got, vec![(4, vec![])]);
    }

    #[test]
    fn explains_gpu_memory_backend_and_labels() {
        let w = WorkerView {
            name: "box1".into(),
            online: true,
            backend: "cuda".into(),
            gpus: vec![24.0, 24.0],
            labels: BTreeMap::new(),
            cpu_slots: 1,
            running: 0,
        };
        let why = explain_waiting(&req(1, 80.0, "cuda", &[]), std::slice::from_ref(&w), 0);
        assert_eq!(
            why,
            "no connected worker can run it: needs 80 GB GPU memory and the largest connected worker has 24 GB"
        );
        let why = explain_waiting(
            &req(0, 0.0, "cpu", &[("zone", "eu")]),
            std::slice::from_ref(&w),
            0,
        );
        assert!(
            why.contains("needs backend cpu; connected workers offer cuda"),
            "{why}"
        );
        assert!(why.contains("needs label zone=eu"), "{why}");
        let why = explain_waiting(&req(1, 20.0, "any", &[]), std::slice::from_ref(&w), 3);
        assert!(
            why.contains("1 worker can run it (box1), all busy; 3 jobs ahead"),
            "{why}"
        );
        let offline = WorkerView { online: false, ..w };
        let why = explain_waiting(&req(0, 0.0, "any", &[]), &[offline], 0);
        assert!(why.starts_with("no worker is connected"), "{why}");
    }
}
