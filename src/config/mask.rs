//! Secrets inside URLs, masked for display: `check-config`'s output and configuration
//! errors show `https://user:***@host/?X-Amz-Signature=***&width=100`.
//!
//! A URL's password (`user:pass@`) and the values of its query parameters whose name
//! looks like a secret (token, key, secret, password, signature, sig, credential, auth,
//! session…) become `***`; everything else is shown byte for byte, so the output still
//! matches what was configured. Text without `://` is not a URL and is left alone.

use std::borrow::Cow;

use serde_json::Value;

/// What a masked secret shows.
const MASK: &str = "***";

/// Name parts that mark a query parameter as secret anywhere in its name
/// (`X-Amz-Security-Token`, `client_secret`, `X-Amz-Credential`, `apiKey`).
const SECRET_PARTS: [&str; 11] = [
    "token",
    "secret",
    "passw",
    "signature",
    "credential",
    "auth",
    "session",
    "apikey",
    "accesskey",
    "privatekey",
    "jwt",
];

/// Names (or `-`/`_`-separated words of names) that are secrets on their own.
const SECRET_WORDS: [&str; 6] = ["key", "sig", "pwd", "pass", "code", "sas"];

/// True when a query parameter named `name` is likely to carry a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let squashed: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    SECRET_PARTS.iter().any(|p| squashed.contains(p))
        || lower.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| SECRET_WORDS.contains(&w))
}

/// `s` with the password of its userinfo and its secret-named query values masked.
pub fn mask_url(s: &str) -> Cow<'_, str> {
    let Some(scheme_end) = s.find("://") else { return Cow::Borrowed(s) };
    let start = scheme_end + 3;
    let authority_end = s[start..].find(['/', '?', '#']).map_or(s.len(), |i| start + i);
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..start]);
    let authority = &s[start..authority_end];
    match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
        Some((colon, at)) if at > colon + 1 => {
            out.push_str(&authority[..=colon]);
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        _ => out.push_str(authority),
    }
    let rest = &s[authority_end..];
    let (before_query, query_and_fragment) = match rest.find('?') {
        Some(q) => rest.split_at(q + 1),
        None => (rest, ""),
    };
    out.push_str(before_query);
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(f) => query_and_fragment.split_at(f),
        None => (query_and_fragment, ""),
    };
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_name(&decode(name)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(fragment);
    if out == s { Cow::Borrowed(s) } else { Cow::Owned(out) }
}

/// Masks every string in `v` (objects and lists included) with [`mask_url`].
pub fn mask_urls(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(masked) = mask_url(s) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_urls),
        Value::Object(map) => map.values_mut().for_each(mask_urls),
        _ => {}
    }
}

/// A query parameter's name with `%XX` and `+` decoded, so `X%2DAmz%2DSignature` counts.
fn decode(name: &str) -> String {
    url::form_urlencoded::parse(format!("{name}=").as_bytes()).next().map_or_else(|| name.to_owned(), |(k, _)| k.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_masked_and_the_rest_kept() {
        let cases = [
            ("https://user:hunter2@host.example/x", "https://user:***@host.example/x"),
            ("postgres://u:hunter2@db:5432/app?sslmode=disable", "postgres://u:***@db:5432/app?sslmode=disable"),
            ("https://user@host/", "https://user@host/"),
            ("https://:hunter2@host", "https://:***@host"),
            ("https://host/path@x:y", "https://host/path@x:y"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("not a url: hunter2", "not a url: hunter2"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_url(input), want, "{input}");
        }
    }

    #[test]
    fn secret_named_query_values_are_masked_others_kept() {
        let cases = [
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&X-Amz-Expires=60",
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
            ),
            ("https://h/?token=t0k&width=100#frag", "https://h/?token=***&width=100#frag"),
            (
                "https://h/?api_key=1&apiKey=2&key=3&sig=4&monkey=5",
                "https://h/?api_key=***&apiKey=***&key=***&sig=***&monkey=5",
            ),
            (
                "https://h/?client_secret=s&password=p&X-Amz-Security-Token=x",
                "https://h/?client_secret=***&password=***&X-Amz-Security-Token=***",
            ),
            ("https://h/?X%2DAmz%2DSignature=abc&empty_token=", "https://h/?X%2DAmz%2DSignature=***&empty_token="),
            ("https://u:p@h/?sv=1&sig=zz", "https://u:***@h/?sv=1&sig=***"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_url(input), want, "{input}");
        }
    }

    #[test]
    fn every_string_of_a_json_tree_is_masked() {
        let mut v = serde_json::json!({"a": "https://u:hunter2@h", "b": ["x", "https://h/?token=hunter2"], "c": 1});
        mask_urls(&mut v);
        assert!(!v.to_string().contains("hunter2"), "{v}");
        assert_eq!(v["b"][0], "x");
    }
}
