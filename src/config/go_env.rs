//! The Go server's environment variables, read as its `config/load_env.go` reads them.
//!
//! Each variable is ignored when empty, as in Go. A value Go would silently drop (an
//! unparsable number, `CRON_ENABLED=yes`, a malformed `RESIZE_PRESETS` item, an
//! `R2_BUCKETS` naming no bucket) is refused here with the variable's name: a deployment
//! must not run on a setting it did not mean. The values become one layer between the
//! file and `ICS__` variables.

use std::collections::BTreeMap;

use super::ConfigError;

/// The variables, in the order Go applies them, and the keys each one sets.
pub const GO_VARIABLES: &[(&str, &str)] = &[
    ("R2_ACCESS_KEY", "r2.access_key"),
    ("R2_SECRET_KEY", "r2.secret_key"),
    ("R2_ENDPOINT", "r2.endpoint"),
    ("R2_BUCKET", "r2.bucket, r2.buckets"),
    ("R2_BUCKETS", "r2.buckets, r2.bucket (the first)"),
    ("CONVERSION_FORMATS", "conversion.formats"),
    ("CONVERSION_QUALITY", "conversion.quality"),
    ("CONVERSION_MAX_SIZE_MB", "conversion.max_size_mb"),
    ("RESIZE_PRESETS", "resize.presets"),
    ("CRON_SCHEDULE", "cron.schedule"),
    ("CRON_ENABLED", "cron.enabled"),
    ("SERVER_PORT", "server.port"),
    ("SERVER_TIMEOUT_SECONDS", "server.timeout_seconds"),
    ("WEBHOOK_URL", "webhook.url"),
    ("WEBHOOK_SECRET", "webhook.secret"),
    ("WEBHOOK_RETRY_ENABLED", "webhook.retry_enabled"),
    ("WEBHOOK_RETRY_INTERVAL_MINUTES", "webhook.retry_interval_minutes"),
    ("WEBHOOK_MAX_RETRIES", "webhook.max_retries"),
    ("WEBHOOK_PENDING_DIR", "webhook.pending_dir"),
];

/// One value set by a Go variable.
#[derive(Debug, Clone, PartialEq)]
pub enum GoValue {
    Text(String),
    Int(i64),
    Number(f64),
    Bool(bool),
    List(Vec<String>),
}

impl From<GoValue> for config::Value {
    fn from(v: GoValue) -> Self {
        match v {
            GoValue::Text(s) => s.into(),
            GoValue::Int(n) => n.into(),
            GoValue::Number(n) => n.into(),
            GoValue::Bool(b) => b.into(),
            GoValue::List(l) => l.into(),
        }
    }
}

/// The keys the Go variables in `env` set: `key → (value, variable)`.
pub fn read(env: &[(String, String)]) -> Result<BTreeMap<String, (GoValue, &'static str)>, ConfigError> {
    let mut out = BTreeMap::new();
    for &(var, _) in GO_VARIABLES {
        let Some(raw) = env.iter().rev().find(|(k, _)| k == var).map(|(_, v)| v.as_str()) else { continue };
        if raw.is_empty() {
            continue;
        }
        let mut set = |key: &str, v: GoValue| {
            out.insert(key.to_owned(), (v, var));
        };
        match var {
            "R2_ACCESS_KEY"
            | "R2_SECRET_KEY"
            | "R2_ENDPOINT"
            | "CRON_SCHEDULE"
            | "WEBHOOK_URL"
            | "WEBHOOK_SECRET"
            | "WEBHOOK_PENDING_DIR" => {
                let key = GO_VARIABLES.iter().find(|(v, _)| *v == var).map(|(_, k)| *k).unwrap_or_default();
                set(key, GoValue::Text(raw.to_owned()));
            }
            "R2_BUCKET" => {
                set("r2.bucket", GoValue::Text(raw.trim().to_owned()));
                set("r2.buckets", GoValue::List(vec![raw.trim().to_owned()]));
            }
            "R2_BUCKETS" => {
                let buckets = unique_csv(raw);
                let Some(first) = buckets.first() else {
                    return Err(refused(var, raw, "a comma-separated list of bucket names"));
                };
                set("r2.bucket", GoValue::Text(first.clone()));
                set("r2.buckets", GoValue::List(buckets));
            }
            "CONVERSION_FORMATS" => {
                let formats = csv(raw);
                if formats.is_empty() {
                    return Err(refused(var, raw, "a comma-separated list of extensions such as jpeg,png"));
                }
                set("conversion.formats", GoValue::List(formats));
            }
            "CONVERSION_QUALITY" => set("conversion.quality", GoValue::Int(atoi(var, raw)?)),
            "CONVERSION_MAX_SIZE_MB" => set("conversion.max_size_mb", GoValue::Int(atoi(var, raw)?)),
            "SERVER_PORT" => set("server.port", GoValue::Int(atoi(var, raw)?)),
            "SERVER_TIMEOUT_SECONDS" => set("server.timeout_seconds", GoValue::Int(atoi(var, raw)?)),
            "CRON_ENABLED" => set("cron.enabled", GoValue::Bool(go_bool(var, raw)?)),
            "WEBHOOK_RETRY_ENABLED" => set("webhook.retry_enabled", GoValue::Bool(go_bool(var, raw)?)),
            "WEBHOOK_RETRY_INTERVAL_MINUTES" => {
                // Go takes whole minutes >= 1; a fraction is accepted here (it cannot be misread).
                match raw.parse::<f64>() {
                    Ok(m) if m.is_finite() && m > 0.0 => set("webhook.retry_interval_minutes", GoValue::Number(m)),
                    _ => return Err(refused(var, raw, "a number of minutes greater than 0")),
                }
            }
            "WEBHOOK_MAX_RETRIES" => match atoi(var, raw)? {
                n if n >= 0 => set("webhook.max_retries", GoValue::Int(n)),
                _ => return Err(refused(var, raw, "a whole number, 0 or more")),
            },
            "RESIZE_PRESETS" => {
                for (name, w, h) in presets(raw)? {
                    set(&format!("resize.presets.{name}.width"), GoValue::Int(w));
                    set(&format!("resize.presets.{name}.height"), GoValue::Int(h));
                }
            }
            _ => unreachable!("every Go variable has a rule"),
        }
    }
    Ok(out)
}

fn refused(var: &str, raw: &str, allowed: &str) -> ConfigError {
    let shown = if var.ends_with("_KEY") || var == "WEBHOOK_SECRET" { "***".to_owned() } else { format!("{raw:?}") };
    ConfigError::Invalid {
        key: format!("{var} (environment)"),
        value: format!("{shown} (the Go server ignores this value; refused here so it is not misread)"),
        allowed: allowed.to_owned(),
    }
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, nothing else.
fn atoi(var: &str, raw: &str) -> Result<i64, ConfigError> {
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused(var, raw, "a whole number"));
    }
    raw.parse().map_err(|_| refused(var, raw, "a whole number"))
}

fn go_bool(var: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(refused(var, raw, "true, 1, false or 0")),
    }
}

/// Go's `splitCSV`: split on commas, trim, drop empty items.
fn csv(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Go's `splitUniqueCSV`: [`csv`] without repeats, first occurrence kept.
pub fn unique_csv(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in csv(raw) {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `RESIZE_PRESETS=name:WxH,...`; an item Go would skip is refused, naming the item.
fn presets(raw: &str) -> Result<Vec<(String, i64, i64)>, ConfigError> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad =
            || refused("RESIZE_PRESETS", item, "name:WIDTHxHEIGHT items separated by commas, e.g. thumbnail:150x150");
        let (name, size) = item.split_once(':').ok_or_else(bad)?;
        let (name, size) = (name.trim(), size.trim());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad());
        }
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let (w, h) = (
            atoi("RESIZE_PRESETS", w.trim()).map_err(|_| bad())?,
            atoi("RESIZE_PRESETS", h.trim()).map_err(|_| bad())?,
        );
        out.push((name.to_owned(), w, h));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn buckets_are_trimmed_deduplicated_and_the_first_is_primary() {
        let got = read(&env(&[("R2_BUCKETS", "images-a, images-b,images-a, images-c")])).unwrap();
        assert_eq!(got["r2.bucket"].0, GoValue::Text("images-a".into()));
        assert_eq!(got["r2.buckets"].0, GoValue::List(vec!["images-a".into(), "images-b".into(), "images-c".into()]));
    }

    #[test]
    fn empty_values_are_ignored_as_in_go() {
        assert!(read(&env(&[("SERVER_PORT", ""), ("R2_BUCKET", ""), ("CRON_ENABLED", "")])).unwrap().is_empty());
    }

    #[test]
    fn values_go_would_drop_are_refused_naming_the_variable() {
        for (var, value, allowed) in [
            ("CONVERSION_QUALITY", "high", "a whole number"),
            ("SERVER_PORT", " 80", "a whole number"),
            ("SERVER_TIMEOUT_SECONDS", "30s", "a whole number"),
            ("CRON_ENABLED", "yes", "true, 1, false or 0"),
            ("WEBHOOK_RETRY_ENABLED", "TRUE", "true, 1, false or 0"),
            ("WEBHOOK_RETRY_INTERVAL_MINUTES", "0", "greater than 0"),
            ("WEBHOOK_MAX_RETRIES", "-1", "0 or more"),
            ("R2_BUCKETS", " , ,", "bucket names"),
            ("CONVERSION_FORMATS", ",", "extensions"),
            ("RESIZE_PRESETS", "thumbnail:150x150,medium=800x800", "name:WIDTHxHEIGHT"),
            ("RESIZE_PRESETS", "big:wide", "name:WIDTHxHEIGHT"),
        ] {
            let err = read(&env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.starts_with(var), "{var}={value:?}: {err}");
            assert!(err.contains(allowed), "{var}={value:?}: {err}");
        }
    }

    #[test]
    fn presets_bools_and_numbers() {
        let got = read(&env(&[
            ("RESIZE_PRESETS", "thumbnail:150x150, medium : 800x800 ,"),
            ("CRON_ENABLED", "0"),
            ("WEBHOOK_RETRY_ENABLED", "1"),
            ("CONVERSION_QUALITY", "+90"),
        ]))
        .unwrap();
        assert_eq!(got["resize.presets.medium.width"].0, GoValue::Int(800));
        assert_eq!(got["resize.presets.thumbnail.height"].0, GoValue::Int(150));
        assert_eq!(got["cron.enabled"].0, GoValue::Bool(false));
        assert_eq!(got["webhook.retry_enabled"].0, GoValue::Bool(true));
        assert_eq!(got["conversion.quality"], (GoValue::Int(90), "CONVERSION_QUALITY"));
    }

    #[test]
    fn a_refused_secret_is_not_echoed() {
        // Secrets are strings, never refused; but the refusal helper masks them regardless.
        assert!(!refused("R2_SECRET_KEY", "hunter2", "x").to_string().contains("hunter2"));
    }
}
