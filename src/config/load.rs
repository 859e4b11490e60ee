//! Reading the layers — defaults, the YAML file, `.env`, the Go server's variables,
//! `ICS__` variables — into one [`RawConfig`], remembering where each value came from.
//!
//! Precedence is the Go server's: the environment over `.env` (whose values apply only
//! where a variable is not set), both over the file. Unknown keys in the file and unknown
//! `ICS__` variables are refused with the nearest known key. Zero values that the Go
//! server replaces by a default (`quality: 0` meaning 85) mean the same here, with a WARN.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{ConfigError, DEFAULT_PATH, RawConfig, go_env, keys};

/// Where a value came from, as `check-config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    /// A variable read from the `.env` file.
    DotEnv(String),
    /// A variable of the process environment.
    Env(String),
    /// The host's settings (the time zone in `/etc/localtime`).
    Host(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File => f.write_str("file"),
            Origin::DotEnv(var) => write!(f, ".env {var}"),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::Host(what) => write!(f, "host {what}"),
        }
    }
}

/// The origin of every key set by the file or a variable; unlisted keys are defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `key` came from: its own entry, else the nearest section's, else a
    /// key below it (a list or map set as a whole), else the default.
    pub fn of(&self, key: &str) -> Origin {
        if let Some(o) = self.0.get(key) {
            return o.clone();
        }
        let mut parent = key;
        while let Some((p, _)) = parent.rsplit_once('.') {
            if let Some(o) = self.0.get(p) {
                return o.clone();
            }
            parent = p;
        }
        let below = format!("{key}.");
        self.0.iter().find(|(k, _)| k.starts_with(&below)).map(|(_, o)| o.clone()).unwrap_or(Origin::Default)
    }

    fn set(&mut self, key: String, origin: Origin) {
        self.0.insert(key, origin);
    }

    /// True when `key` was written by a Go user (the file or a Go variable), whose zero
    /// values mean Go's defaults.
    fn set_by_go_input(&self, key: &str) -> bool {
        match self.0.get(key) {
            Some(Origin::File) => true,
            Some(Origin::DotEnv(v) | Origin::Env(v)) => !v.starts_with("ICS__"),
            _ => false,
        }
    }
}

/// A raw configuration with its origins and the warnings loading it gave.
pub struct Layered {
    pub raw: RawConfig,
    pub origins: Origins,
    pub warnings: Vec<String>,
}

/// Reads the file (`None`: [`DEFAULT_PATH`] if present) and the variables in `env`;
/// `from_dotenv` names the variables that came from the `.env` file.
pub fn layers(
    path: Option<&Path>,
    env: &[(String, String)],
    from_dotenv: &BTreeSet<String>,
) -> Result<Layered, ConfigError> {
    let (file, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    if required && !file.is_file() {
        return Err(ConfigError::Read { path: file, message: "no such file".into() });
    }
    let read_err = |e: config::ConfigError| ConfigError::Read { path: file.clone(), message: e.to_string() };
    let file_layer = config::Config::builder()
        .add_source(config::File::from(file.as_path()).format(config::FileFormat::Yaml).required(required))
        .build()
        .map_err(read_err)?;
    let table = config::Source::collect(&file_layer).map_err(read_err)?;
    let known = keys::known();
    if let Some(bad) = keys::first_unknown(&known, "", &table) {
        let hint = keys::suggestion(&known, &bad);
        return Err(ConfigError::UnknownKey { path: file, key: bad, hint });
    }
    let mut origins = Origins::default();
    leaves("", &table, &mut |k| origins.set(k, Origin::File));
    let origin = |var: &str| {
        if from_dotenv.contains(var) { Origin::DotEnv(var.to_owned()) } else { Origin::Env(var.to_owned()) }
    };

    let mut go = config::Config::builder();
    for (key, (value, var)) in go_env::read(env)? {
        go =
            go.set_override(key.as_str(), config::Value::from(value)).map_err(|e| ConfigError::Parse(e.to_string()))?;
        origins.set(key, origin(var));
    }
    let go_layer = go.build().map_err(|e| ConfigError::Parse(e.to_string()))?;

    let mut ics = config::Map::new();
    for (var, value) in env.iter().filter(|(k, _)| k.starts_with("ICS__")) {
        let key = var["ICS__".len()..].to_ascii_lowercase().replace("__", ".");
        if !keys::is_known(&known, &key) {
            let hint = keys::suggestion(&known, &key);
            return Err(ConfigError::UnknownVariable { var: var.clone(), key, hint });
        }
        ics.insert(var.clone(), value.clone());
        origins.set(key, origin(var));
    }
    // Values stay strings (a numeric-looking secret must not become a number); typed
    // keys are converted on deserialisation, and lists accept "a,b,c".
    let ics_layer = config::Environment::with_prefix("ICS").prefix_separator("__").separator("__").source(Some(ics));

    let mut raw: RawConfig = config::Config::builder()
        .add_source(file_layer)
        .add_source(go_layer)
        .add_source(ics_layer)
        .build()
        .map_err(|e| ConfigError::Parse(e.to_string()))?
        .try_deserialize()
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    if !origins.0.contains_key("cron.timezone") {
        // As the Go server (robfig/cron in time.Local): the host's zone.
        let (zone, from) = match env.iter().rev().find(|(k, _)| k == "TZ") {
            Some((_, v)) if v.is_empty() => ("UTC".to_owned(), origin("TZ")),
            // `TZ=:/etc/localtime` or `TZ=/usr/share/zoneinfo/Asia/Seoul` name a zone file, as Go reads them.
            Some((_, v)) if v.trim_start_matches(':').starts_with('/') => {
                let path = Path::new(v.trim_start_matches(':'));
                (zone_of_file(path).unwrap_or_else(|| path.display().to_string()), origin("TZ"))
            }
            Some((_, v)) => (v.trim_start_matches(':').to_owned(), origin("TZ")),
            None => host_zone(),
        };
        raw.cron.timezone = Some(zone);
        origins.set("cron.timezone".into(), from);
    }
    let warnings = go_zero_values(&mut raw, &origins);
    Ok(Layered { raw, origins, warnings })
}

/// The zone `/etc/localtime` links to (`/usr/share/zoneinfo/Europe/Berlin`), else the
/// name in `/etc/timezone`, else UTC.
fn host_zone() -> (String, Origin) {
    if let Some(name) = zone_of_file(Path::new("/etc/localtime")) {
        return (name, Origin::Host("/etc/localtime".into()));
    }
    if let Ok(name) = std::fs::read_to_string("/etc/timezone")
        && !name.trim().is_empty()
    {
        return (name.trim().to_owned(), Origin::Host("/etc/timezone".into()));
    }
    ("UTC".into(), Origin::Host("(no zone configured)".into()))
}

/// The zone name of a zoneinfo file: from its path (`…/zoneinfo/Asia/Seoul`) or the
/// path it links to.
fn zone_of_file(path: &Path) -> Option<String> {
    let name_in = |p: &Path| p.to_string_lossy().split_once("zoneinfo/").map(|(_, n)| n.to_owned());
    name_in(path).or_else(|| std::fs::read_link(path).ok().and_then(|t| name_in(&t)))
}

/// Calls `f` with the dotted path of every leaf (a scalar or a list) of `table`.
fn leaves(prefix: &str, table: &config::Map<String, config::Value>, f: &mut dyn FnMut(String)) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match &v.kind {
            config::ValueKind::Table(t) if !t.is_empty() => leaves(&path, t, f),
            _ => f(path),
        }
    }
}

/// The Go server's `setDefaults` turns these zero values into defaults; a Go file or
/// variable that writes them means the default, so it does here (with a WARN naming the
/// key). `ICS__` variables keep this program's meaning (`ICS__SERVER__PORT=0`: any port).
fn go_zero_values(raw: &mut RawConfig, origins: &Origins) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut zero = |key: &str, is_zero: bool, default: &str, how: &str| -> bool {
        let hit = is_zero && origins.set_by_go_input(key);
        if hit {
            warnings.push(format!(
                "{key} is 0 ({}), which the Go server reads as its default {default}: using {default}{how}",
                origins.of(key)
            ));
        }
        hit
    };
    if zero("conversion.quality", raw.conversion.quality == Some(0.0), "85", "; write 1 for the lowest quality") {
        raw.conversion.quality = None;
    }
    if zero("conversion.max_size_mb", raw.conversion.max_size_mb == Some(0.0), "50", "") {
        raw.conversion.max_size_mb = None;
    }
    if zero("server.port", raw.server.port == Some(0), "4000", "; ICS__SERVER__PORT=0 picks any free port") {
        raw.server.port = None;
    }
    if zero("server.timeout_seconds", raw.server.timeout_seconds == Some(0), "30", "") {
        raw.server.timeout_seconds = None;
    }
    let interval_zero = raw.webhook.retry_interval_minutes == Some(0.0);
    if zero("webhook.retry_interval_minutes", interval_zero, "5", "") {
        raw.webhook.retry_interval_minutes = None;
    }
    let no_retries = "; set webhook.retry_enabled: false to turn retries off";
    if zero("webhook.max_retries", raw.webhook.max_retries == Some(0), "5", no_retries) {
        raw.webhook.max_retries = None;
    }
    let formats_empty = raw.conversion.formats.as_ref().is_some_and(Vec::is_empty);
    if zero("conversion.formats", formats_empty, "[jpeg, jpg, png, gif, bmp, tiff]", "") {
        raw.conversion.formats = None;
    }
    let schedule_empty = raw.cron.schedule.as_deref().is_some_and(|s| s.trim().is_empty());
    if zero("cron.schedule", schedule_empty, "\"0 2 * * *\"", "") {
        raw.cron.schedule = None;
    }
    warnings
}
