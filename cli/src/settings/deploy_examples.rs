//! The examples in `deploy/` load as what they stand for: each atelier.toml (on a
//! host, in a compose container, in the Kubernetes ConfigMap) with the `ATELIER_*`
//! variables its container gets, every path setting under something that container
//! mounts, workers pointed at the coordinator's name and port, and the atelier
//! command lines of compose and Kubernetes valid `atelier` invocations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use serde_yaml::Value;

use super::{Settings, KEYS};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("`{}`: {e}", path.display()))
}

/// Loads `toml` (the text of `origin`) with `env` as the whole environment.
fn load(origin: &str, toml: &str, env: &HashMap<String, String>) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("atelier.toml");
    std::fs::write(&file, toml).unwrap();
    for name in env.keys() {
        if let Some(key) = name.strip_prefix("ATELIER_") {
            let key = key.to_ascii_lowercase();
            assert!(
                key == "config" || KEYS.contains(&key.as_str()),
                "{origin}: `{name}` names no setting"
            );
        }
    }
    let vars = env.iter().map(|(k, v)| (k.clone(), v.clone()));
    Settings::load_with_env(Some(&file), vars).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// A setting by name, so that a key is checked as the settings file spells it.
fn get(settings: &Settings, key: &str) -> serde_json::Value {
    let json = serde_json::to_value(settings).unwrap();
    json.get(key)
        .unwrap_or_else(|| panic!("no setting `{key}`"))
        .clone()
}

/// The settings that name files atelier reads; a coordinator and a worker also
/// write into `data_dir`.
const PATH_KEYS: &[&str] = &["tls_cert", "tls_key", "tls_ca", "token_file"];

/// Every path setting of `settings` lies under one of `mounts`.
fn assert_mounted(origin: &str, settings: &Settings, mounts: &[String], service: bool) {
    let data_dir = service.then_some("data_dir");
    for key in PATH_KEYS.iter().copied().chain(data_dir) {
        let Some(path) = get(settings, key).as_str().map(str::to_string) else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        assert!(
            mounts
                .iter()
                .any(|m| Path::new(&path).starts_with(m.trim_end_matches('/'))),
            "{origin}: {key} `{path}` is under none of its mounts {mounts:?}"
        );
    }
}

/// `atelier ARGS…` parses as a command line.
fn assert_command(origin: &str, args: &[String]) {
    let argv = std::iter::once("atelier".to_string()).chain(args.iter().cloned());
    if let Err(e) = crate::Cli::try_parse_from(argv) {
        panic!("{origin}: `atelier {}`: {e}", args.join(" "));
    }
}

/// host:port of the first URL in a `coordinator` setting.
fn coordinator_address(settings: &Settings) -> String {
    let list = settings.coordinator.clone();
    let first = list.split(',').next().unwrap().trim();
    let (scheme, rest) = first.split_once("://").unwrap();
    assert_eq!(
        scheme, "https",
        "coordinator `{list}`: the examples use TLS"
    );
    rest.trim_end_matches('/').to_string()
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v =
                Value::deserialize(d).unwrap_or_else(|e| panic!("`{}`: {e}", path.display()));
            // One pass merges one level of `<<`; compose's anchors nest.
            for _ in 0..8 {
                v.apply_merge().unwrap();
            }
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(str_of).collect())
        .unwrap_or_default()
}

#[test]
fn host_examples_load() {
    let none = HashMap::new();
    let path = deploy().join("coordinator.toml");
    let coordinator = load("deploy/coordinator.toml", &read(&path), &none);
    assert_eq!(
        coordinator.database_url,
        "postgres://atelier@127.0.0.1:5432/atelier"
    );
    assert_eq!(
        coordinator.redis_url().as_deref(),
        Some("redis://127.0.0.1:6379")
    );
    assert_eq!(coordinator.lease_ttl_secs, 30.0);
    assert_eq!(get(&coordinator, "auth"), true);
    assert_eq!(
        get(&coordinator, "tls_cert"),
        "/etc/atelier/tls/coordinator.crt"
    );
    assert_eq!(get(&coordinator, "metrics_listen"), "0.0.0.0:9464");
    assert_eq!(get(&coordinator, "log_format"), "json");

    let path = deploy().join("worker.toml");
    let worker = load("deploy/worker.toml", &read(&path), &none);
    assert_eq!(worker.data_dir, PathBuf::from("/var/lib/atelier"));
    assert_eq!(
        worker.coordinator,
        "https://coordinator-a.internal:7878,https://coordinator-b.internal:7878"
    );
    assert_eq!(get(&worker, "token_file"), "/etc/atelier/worker.token");
    assert_eq!(get(&worker, "tls_ca"), "/etc/atelier/tls/ca.crt");
    assert_eq!(get(&worker, "worker_metrics_listen"), "0.0.0.0:9465");
}

/// `${NAME}`, `${NAME:-default}` and `${NAME:?message}` from `vars`, as compose
/// fills them in; `$$` is a `$`.
fn interpolate(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("unclosed `${{` in `{text}`"));
            let expr = &r[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr.split(":?").next().unwrap(), None),
            };
            match (vars.get(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => panic!("`{name}` is not set in .env.example ({text})"),
            }
            rest = &r[end + 1..];
        } else {
            panic!("bare `$` in `{text}`: compose wants `${{NAME}}` or `$$`");
        }
    }
    out.push_str(rest);
    out
}

/// The `KEY=VALUE` lines of an env file.
fn env_file(path: &Path) -> HashMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("`{}`: `{l}` is not KEY=VALUE", path.display()));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// Each compose service that runs atelier: its settings as the container gets them
/// (mounted atelier.toml, `environment` filled in from `.env.example`), its mounts
/// and its command line.
#[test]
fn compose_services_load() {
    let dir = deploy().join("compose");
    let dotenv = env_file(&dir.join(".env.example"));
    let file = dir.join("docker-compose.yml");
    // Its ATELIER_* variables are settings, each passed on to a container.
    let settings_vars: HashMap<String, String> = dotenv
        .iter()
        .filter(|(k, _)| k.starts_with("ATELIER_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    load("deploy/compose/.env.example", "", &settings_vars);
    let text = read(&file);
    for name in settings_vars.keys() {
        assert!(
            text.contains(&format!("${{{name}")),
            "deploy/compose/.env.example: `{name}` is passed to no service"
        );
    }
    let compose = yaml_documents(&file).remove(0);
    let services = compose["services"].as_mapping().unwrap();
    let mut coordinators = HashMap::new();
    let mut clients = Vec::new();
    for (name, service) in services {
        let name = str_of(name);
        if !str_of(&service["image"]).starts_with("atelier:") {
            continue;
        }
        let origin = format!("deploy/compose service {name}");
        let env: HashMap<String, String> = service["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{origin}: no environment"))
            .iter()
            .map(|(k, v)| (str_of(k), interpolate(&str_of(v), &dotenv)))
            .collect();
        let mut mounts = Vec::new();
        let mut config = None;
        for volume in strings(&service["volumes"]) {
            let parts: Vec<&str> = volume.split(':').collect();
            let (source, target) = (parts[0], parts[1].to_string());
            if Some(&target) == env.get("ATELIER_CONFIG") {
                config = Some(dir.join(source));
            }
            mounts.push(target);
        }
        for secret in strings(&service["secrets"]) {
            assert!(
                compose["secrets"].get(&secret).is_some(),
                "{origin}: secret `{secret}` is not declared"
            );
            mounts.push(format!("/run/secrets/{secret}"));
        }
        let toml = match (env.get("ATELIER_CONFIG"), config) {
            (Some(_), Some(config)) => read(&config),
            (Some(path), None) => panic!("{origin}: ATELIER_CONFIG `{path}` is not mounted"),
            (None, _) => String::new(),
        };
        let settings = load(&origin, &toml, &env);
        let command = strings(&service["command"]);
        assert_command(&origin, &command);
        let is_service = ["coordinator", "worker"].contains(&command[0].as_str());
        assert_mounted(&origin, &settings, &mounts, is_service);
        if command[0] == "coordinator" {
            coordinators.insert(name, settings);
        } else {
            clients.push((origin, command[0].clone(), settings));
        }
    }
    let coordinator = &coordinators["coordinator"];
    let password = &dotenv["POSTGRES_PASSWORD"];
    assert_eq!(
        coordinator.database_url,
        format!("postgres://atelier:{password}@postgres:5432/atelier")
    );
    assert_eq!(get(coordinator, "auth"), true);
    assert_eq!(
        get(coordinator, "artifact_store"),
        "s3://atelier-artifacts/artifacts"
    );
    assert_eq!(
        get(coordinator, "log_format"),
        dotenv["ATELIER_LOG_FORMAT"].as_str()
    );
    let port = coordinator.listen.rsplit(':').next().unwrap();
    let workers = clients.iter().filter(|c| c.1 == "worker").count();
    assert!(workers >= 2, "{workers} workers");
    for (origin, _, client) in &clients {
        assert_eq!(
            coordinator_address(client),
            format!("coordinator:{port}"),
            "{origin}"
        );
    }
}

/// Each atelier container of the Kubernetes manifests: its atelier.toml from the
/// ConfigMap, its `env` and `envFrom` Secrets, its mounts and its arguments.
#[test]
fn kubernetes_containers_load() {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in &files {
        docs.extend(yaml_documents(f));
    }
    let named = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/k8s: no {kind} `{name}`"))
    };
    let mut seen = Vec::new();
    let mut coordinator_port = None;
    let mut worker_addresses = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
    {
        let pod = &doc["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_sequence().unwrap();
        for container in pod["containers"].as_sequence().unwrap() {
            let origin = format!(
                "deploy/k8s {} {} container {}",
                str_of(&doc["kind"]),
                str_of(&doc["metadata"]["name"]),
                str_of(&container["name"])
            );
            let mut env = HashMap::new();
            for e in container["env"].as_sequence().into_iter().flatten() {
                if let Some(v) = e.get("value") {
                    env.insert(str_of(&e["name"]), str_of(v));
                }
            }
            for from in container["envFrom"].as_sequence().into_iter().flatten() {
                let secret = named("Secret", &str_of(&from["secretRef"]["name"]));
                for (k, v) in secret["stringData"].as_mapping().unwrap() {
                    env.insert(str_of(k), str_of(v));
                }
            }
            let config_path = env
                .get("ATELIER_CONFIG")
                .unwrap_or_else(|| panic!("{origin}: no ATELIER_CONFIG"))
                .clone();
            let mut mounts = Vec::new();
            let mut toml = None;
            for m in container["volumeMounts"].as_sequence().unwrap() {
                let path = str_of(&m["mountPath"]);
                if path == config_path {
                    let volume = volumes
                        .iter()
                        .find(|v| v["name"] == m["name"])
                        .unwrap_or_else(|| panic!("{origin}: no volume {:?}", m["name"]));
                    let map = named("ConfigMap", &str_of(&volume["configMap"]["name"]));
                    toml = Some(str_of(&map["data"][&str_of(&m["subPath"])]));
                }
                mounts.push(path);
            }
            let toml =
                toml.unwrap_or_else(|| panic!("{origin}: ATELIER_CONFIG is not a mounted file"));
            let settings = load(&origin, &toml, &env);
            assert_mounted(&origin, &settings, &mounts, true);
            let args = strings(&container["args"]);
            assert_command(&origin, &args);
            match args[0].as_str() {
                "coordinator" => {
                    assert_eq!(get(&settings, "auth"), true, "{origin}");
                    coordinator_port =
                        Some(settings.listen.rsplit(':').next().unwrap().to_string());
                }
                "worker" => worker_addresses.push((origin.clone(), coordinator_address(&settings))),
                other => panic!("{origin}: runs `{other}`"),
            }
            seen.push(origin);
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Workers reach the coordinators through their Service, on the gRPC port.
    let service = named("Service", "atelier-coordinator");
    let namespace = str_of(&service["metadata"]["namespace"]);
    let grpc = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "grpc")
        .unwrap();
    let deployment = named("Deployment", "atelier-coordinator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container_port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "grpc")
        .map(|p| str_of(&p["containerPort"]));
    assert_eq!(
        container_port, coordinator_port,
        "the listen port is the grpc port"
    );
    for (origin, address) in worker_addresses {
        assert_eq!(
            address,
            format!(
                "atelier-coordinator.{namespace}.svc:{}",
                str_of(&grpc["port"])
            ),
            "{origin}"
        );
    }
}

#[test]
fn an_unknown_variable_in_an_example_is_refused() {
    let env = HashMap::from([("ATELIER_LISTEN_ADDR".to_string(), "x".to_string())]);
    let err = std::panic::catch_unwind(|| load("example", "", &env)).unwrap_err();
    let message = err.downcast_ref::<String>().unwrap();
    assert!(message.contains("ATELIER_LISTEN_ADDR"), "{message}");
}
