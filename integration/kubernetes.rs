//! The Kubernetes manifests in `packaging/kubernetes/`, checked offline against what the
//! daemon reads: each container's args run through the test build's argument parser, its
//! environment (the Secret's keys with it) through `check-config --json`, which must say
//! every variable was read from the environment; probes, Service, ServiceMonitor and KEDA
//! trigger against the container's port and the settings in effect; memory limits
//! against the budget the daemon derives from them; the Indexed Job's shards and retry
//! policy against `run-once`'s exit codes. The schemas of the built-in kinds are checked
//! by `scripts/k8s-validate.sh` (run by `scripts/test.sh`).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use ics::memory_limit::{LimitSource, MemoryLimit};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

/// Every document of a manifest file.
fn load(file: &str) -> Vec<Yaml> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The one document of `kind` in `file`.
fn doc(file: &str, kind: &str) -> Yaml {
    let docs: Vec<Yaml> = load(file).into_iter().filter(|d| d["kind"].as_str() == Some(kind)).collect();
    assert_eq!(docs.len(), 1, "{file}: expected one {kind}");
    docs.into_iter().next().unwrap()
}

/// A string field, or the test fails naming it.
fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec().unwrap_or_else(|| panic!("{what}: not a list: {y:?}"))
}

/// A map of strings (labels, selectors, stringData).
fn strings(y: &Yaml, what: &str) -> Vec<(String, String)> {
    let map = y.as_hash().unwrap_or_else(|| panic!("{what}: not a map: {y:?}"));
    map.iter().map(|(k, v)| (s(k, what).to_owned(), s(v, what).to_owned())).collect()
}

/// The pod template's only container.
fn container(workload: &Yaml) -> &Yaml {
    let containers = list(&workload["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

fn args(c: &Yaml) -> Vec<String> {
    list(&c["args"], "args").iter().map(|a| s(a, "args").to_owned()).collect()
}

/// The container's environment as the pod gets it: the Secret's keys (secret.example.yaml,
/// through `envFrom`) and `env`'s values. A variable from anything else fails the test.
fn pod_env(c: &Yaml) -> Vec<(String, String)> {
    let secret = doc("secret.example.yaml", "Secret");
    let mut env = Vec::new();
    for from in list(&c["envFrom"], "envFrom") {
        assert_eq!(s(&from["secretRef"]["name"], "envFrom"), s(&secret["metadata"]["name"], "Secret"));
        env.extend(strings(&secret["stringData"], "stringData"));
    }
    for var in list(&c["env"], "env") {
        env.push((s(&var["name"], "env name").to_owned(), s(&var["value"], "env value").to_owned()));
    }
    env
}

/// `check-config --json` under `env` (in an empty directory: no config file, no .env),
/// which must succeed and name every variable as a source.
fn config_under(env: &[(String, String)]) -> Value {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = binary();
    cmd.current_dir(cwd.path()).arg("check-config").arg("--json");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config refused the manifest's environment: {stderr}");
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<&str> = config["sources"].as_object().unwrap().values().filter_map(Value::as_str).collect();
    for (name, _) in env {
        let origin = format!("environment {name}");
        assert!(sources.contains(&origin.as_str()), "{name} is not a variable the daemon reads");
    }
    config
}

/// The manifest's args (and `--help`) through the daemon's parser: a subcommand or flag
/// it does not know is a usage error before `--help` is reached.
fn assert_args_parse(args: &[String]) {
    let out = binary().args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A Kubernetes memory quantity in MiB (the binary suffixes and the decimal ones).
fn mib(quantity: &str) -> u64 {
    let split = quantity.find(|c: char| !c.is_ascii_digit()).unwrap_or(quantity.len());
    let (n, unit) = quantity.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("memory quantity {quantity}"));
    let bytes = match unit {
        "Gi" => n << 30,
        "Mi" => n << 20,
        "G" => n * 1_000_000_000,
        "M" => n * 1_000_000,
        "" => n,
        _ => panic!("memory quantity {quantity}: unit {unit} not handled here"),
    };
    bytes >> 20
}

/// Requests equal limits, and the limit holds the budget the daemon takes under it (its
/// own setting, else the default from the cgroup limit) plus the ~100 MB besides it.
fn assert_memory_fits(c: &Yaml, config: &Value) {
    let limit = mib(s(&c["resources"]["limits"]["memory"], "limits.memory"));
    let request = mib(s(&c["resources"]["requests"]["memory"], "requests.memory"));
    assert_eq!(request, limit, "memory request and limit differ");
    let budget = match pod_env(c).iter().find(|(k, _)| k == "ICS__PIPELINE__MEMORY_BUDGET_MB") {
        Some(_) => config["pipeline"]["memory_budget_mb"].as_u64().unwrap(),
        None => u64::from(MemoryLimit { bytes: limit << 20, source: LimitSource::CgroupV2 }.default_budget_mb()),
    };
    assert!(limit >= budget + 100, "memory limit {limit} MiB < budget {budget} MiB + 100 MiB");
}

#[test]
fn consumers_run_serve_publicly_without_cron_on_the_variables_the_daemon_reads() {
    let deployment = doc("consumers.yaml", "Deployment");
    let c = container(&deployment);
    let args = args(c);
    assert_eq!(args, ["serve"]);
    assert_args_parse(&args);
    let config = config_under(&pod_env(c));
    assert_eq!(config["server"]["host"], "0.0.0.0", "a pod's API must listen on the pod's address");
    assert_eq!(config["cron"]["enabled"], false, "consumers must not run the schedule");
    assert_eq!(config["cron"]["run_on_start"], false, "consumers must not run the bucket at start");
    assert_eq!(config["storage"]["backend"], "r2");
    assert!(config["events"]["sqs"]["queue_url"].as_str().is_some_and(|u| !u.is_empty()));
    assert_memory_fits(c, &config);

    // Probes on the container's port, which is the port the daemon listens on.
    let port = &list(&c["ports"], "ports")[0];
    assert_eq!(port["containerPort"].as_i64().map(|p| p as u64), config["server"]["port"].as_u64());
    let port_name = s(&port["name"], "port name");
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        assert_eq!(s(&c[probe]["httpGet"]["path"], probe), path);
        assert_eq!(s(&c[probe]["httpGet"]["port"], probe), port_name);
    }
}

#[test]
fn service_and_service_monitor_select_the_consumers_and_scrape_metrics() {
    let deployment = doc("consumers.yaml", "Deployment");
    let pod_labels = strings(&deployment["spec"]["template"]["metadata"]["labels"], "pod labels");
    let port_name = s(&list(&container(&deployment)["ports"], "ports")[0]["name"], "port").to_owned();
    let service = doc("service.yaml", "Service");
    for label in strings(&service["spec"]["selector"], "Service selector") {
        assert!(pod_labels.contains(&label), "the Service selects {label:?}, which the pods lack");
    }
    let service_port = &list(&service["spec"]["ports"], "Service ports")[0];
    assert_eq!(s(&service_port["targetPort"], "targetPort"), port_name);
    let monitor = doc("service.yaml", "ServiceMonitor");
    let service_labels = strings(&service["metadata"]["labels"], "Service labels");
    for label in strings(&monitor["spec"]["selector"]["matchLabels"], "ServiceMonitor selector") {
        assert!(service_labels.contains(&label), "the ServiceMonitor selects {label:?}, which the Service lacks");
    }
    let endpoint = &list(&monitor["spec"]["endpoints"], "endpoints")[0];
    assert_eq!(s(&endpoint["port"], "endpoint port"), s(&service_port["name"], "Service port name"));
    assert_eq!(s(&endpoint["path"], "endpoint path"), "/metrics");
}

#[test]
fn keda_scales_the_consumers_on_their_own_queue_with_the_secrets_keys() {
    let deployment = doc("consumers.yaml", "Deployment");
    let c = container(&deployment);
    let env = pod_env(c);
    let config = config_under(&env);
    let scaled = doc("consumers.yaml", "ScaledObject");
    assert_eq!(
        s(&scaled["spec"]["scaleTargetRef"]["name"], "scaleTargetRef"),
        s(&deployment["metadata"]["name"], "name")
    );
    let triggers = list(&scaled["spec"]["triggers"], "triggers");
    assert_eq!(triggers.len(), 1);
    let trigger = &triggers[0];
    assert_eq!(s(&trigger["type"], "trigger type"), "aws-sqs-queue");
    let meta = &trigger["metadata"];
    // KEDA reads the queue URL from the variable the daemon reads it from.
    let url_var = s(&meta["queueURLFromEnv"], "queueURLFromEnv");
    let url = env.iter().find(|(k, _)| k == url_var).map(|(_, v)| v.as_str());
    assert_eq!(url, config["events"]["sqs"]["queue_url"].as_str(), "queueURLFromEnv {url_var}");
    assert_eq!(s(&meta["awsRegion"], "awsRegion"), config["events"]["sqs"]["region"].as_str().unwrap());
    let per_pod: u64 = s(&meta["queueLength"], "queueLength").parse().unwrap();
    assert_eq!(Some(per_pod), config["events"]["concurrency"].as_u64(), "queueLength is one pod's events.concurrency");

    let auth = doc("consumers.yaml", "TriggerAuthentication");
    assert_eq!(s(&trigger["authenticationRef"]["name"], "authenticationRef"), s(&auth["metadata"]["name"], "name"));
    let secret = doc("secret.example.yaml", "Secret");
    let keys = strings(&secret["stringData"], "stringData");
    let mut parameters = Vec::new();
    for target in list(&auth["spec"]["secretTargetRef"], "secretTargetRef") {
        assert_eq!(s(&target["name"], "secret name"), s(&secret["metadata"]["name"], "name"));
        let key = s(&target["key"], "key");
        assert!(keys.iter().any(|(k, _)| k == key), "TriggerAuthentication names {key}, not in the Secret");
        parameters.push(s(&target["parameter"], "parameter"));
    }
    parameters.sort_unstable();
    assert_eq!(parameters, ["awsAccessKeyID", "awsSecretAccessKey"]);
}

#[test]
fn backfill_job_is_indexed_with_one_shard_per_completion_and_no_retry_for_exit_2_or_3() {
    let job = doc("backfill-job.yaml", "Job");
    let spec = &job["spec"];
    assert_eq!(s(&spec["completionMode"], "completionMode"), "Indexed");
    let completions = spec["completions"].as_i64().expect("completions");
    assert!(spec["parallelism"].as_i64().expect("parallelism") <= completions);
    let c = container(&job);
    let args = args(c);
    assert_args_parse(&args);
    assert_eq!(args[0], "run-once");
    // `--shard N`: the index comes from JOB_COMPLETION_INDEX, so N must be completions.
    let shard = args.iter().position(|a| a == "--shard").expect("run-once --shard");
    assert_eq!(args[shard + 1], completions.to_string(), "--shard N must equal completions");
    let config = config_under(&pod_env(c));
    assert_eq!(config["state"]["backend"], "local", "--shard is refused with state.backend: bucket");
    assert_memory_fits(c, &config);

    // Exit 1 is retried (the default: counted against backoffLimitPerIndex); 2 and 3 fail
    // their index at once (FailIndex needs backoffLimitPerIndex and restartPolicy Never).
    assert!(spec["backoffLimitPerIndex"].as_i64().is_some(), "FailIndex needs backoffLimitPerIndex");
    assert_eq!(s(&job["spec"]["template"]["spec"]["restartPolicy"], "restartPolicy"), "Never");
    let rules = list(&spec["podFailurePolicy"]["rules"], "podFailurePolicy.rules");
    let by_code: Vec<&Yaml> = rules.iter().filter(|r| !r["onExitCodes"].is_badvalue()).collect();
    assert_eq!(by_code.len(), 1, "one exit-code rule");
    let rule = by_code[0];
    assert_eq!(s(&rule["action"], "action"), "FailIndex");
    assert_eq!(s(&rule["onExitCodes"]["containerName"], "containerName"), s(&c["name"], "container name"));
    assert_eq!(s(&rule["onExitCodes"]["operator"], "operator"), "In");
    let mut codes: Vec<i64> =
        list(&rule["onExitCodes"]["values"], "values").iter().map(|v| v.as_i64().unwrap()).collect();
    codes.sort_unstable();
    assert_eq!(codes, [2, 3], "exit 1 is worth a retry, 2 and 3 are not");
}

#[test]
fn kustomization_names_existing_files_and_the_containers_image() {
    let k = &load("kustomization.yaml")[0];
    let resources: Vec<&str> = list(&k["resources"], "resources").iter().map(|r| s(r, "resource")).collect();
    for r in &resources {
        assert!(dir().join(r).is_file(), "kustomization names {r}, which is not there");
    }
    assert!(resources.contains(&"consumers.yaml") && resources.contains(&"service.yaml"));
    let image = s(&container(&doc("consumers.yaml", "Deployment"))["image"], "image").to_owned();
    let name = s(&list(&k["images"], "images")[0]["name"], "images name");
    assert_eq!(image.rsplit_once(':').map_or(image.as_str(), |(n, _)| n), name);
}
