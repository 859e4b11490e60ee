//! Object names: which keys are candidates, where their WebP goes, and addresses such as
//! `r2://bucket/key` given on the command line or to the API.
//!
//! Output naming follows the Go server: same prefix, extension replaced by `.webp`
//! (`photos/cat.jpg` → `photos/cat.webp`). Two sources that map to one output
//! (`cat.jpg`, `cat.png`) are a collision: reported, never silently overwritten.

use std::collections::BTreeMap;

/// Why a source address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("source is empty")]
    Empty,
    #[error("source {address:?} names bucket {bucket:?}, which is not configured (configured: {})", configured.join(", "))]
    UnknownBucket { address: String, bucket: String, configured: Vec<String> },
    #[error("source {0:?} has no object key after the bucket")]
    NoKey(String),
    #[error("source {0:?} uses an unsupported scheme (use a key, r2://bucket/key or s3://bucket/key)")]
    Scheme(String),
}

/// The extension of a key's last segment, if any (`a/b.JPG` → `JPG`).
pub fn extension(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let dot = name.rfind('.')?;
    (dot > 0 && dot + 1 < name.len()).then(|| &name[dot + 1..])
}

/// An output's format as counts and summaries name it: its key's extension, lower-case
/// (`webp` for a key without one).
pub fn output_format(key: &str) -> String {
    extension(key).unwrap_or("webp").to_ascii_lowercase()
}

/// True when `key`'s extension (any case) is one of `formats` (lower-case extensions).
pub fn is_candidate(key: &str, formats: &[String]) -> bool {
    match extension(key) {
        Some(ext) => {
            let ext = ext.to_ascii_lowercase();
            ext != "webp" && formats.contains(&ext)
        }
        None => false,
    }
}

/// Where the WebP of `key` goes: the extension replaced by `.webp`.
pub fn webp_key(key: &str) -> String {
    match extension(key) {
        Some(ext) => format!("{}.webp", &key[..key.len() - ext.len() - 1]),
        None => format!("{key}.webp"),
    }
}

/// Where a conversion of `key` to `format` (an extension: `webp`, `avif`) goes: its stem and that extension
/// (`p/cat.webp`, [`webp_key`] for WebP), or — resized to `width`×`height` — a name of
/// its own with the size in it (`p/cat_150x100.webp`), so a resized conversion never
/// takes the full-size name that runs keep up to date. The one naming rule of the API
/// and the CLI.
pub fn output_key(key: &str, format: &str, resized: Option<(u32, u32)>) -> String {
    let stem = stem(key);
    match resized {
        None => format!("{stem}.{format}"),
        Some((w, h)) => format!("{stem}_{w}x{h}.{format}"),
    }
}

/// A source key without its extension: where every output name begins.
pub fn stem(source: &str) -> &str {
    match extension(source) {
        Some(ext) => &source[..source.len() - ext.len() - 1],
        None => source,
    }
}

/// The key prefix every source claiming `key`'s WebP starts with: its folder and stem
/// and a dot (`p/cat.jpg` → `p/cat.`). Listing from there lists those sources and
/// little else, however large the folder.
pub fn stem_prefix(key: &str) -> String {
    let out = webp_key(key);
    out[..out.len() - "webp".len()].to_owned()
}

/// Whether `other` is a source (by `formats`) whose WebP is `key`'s.
pub fn claims_same_output(key: &str, other: &str, formats: &[String]) -> bool {
    is_candidate(other, formats) && webp_key(other) == webp_key(key)
}

/// The shard a source key belongs to among `shards`: FNV-1a (64 bit) of the key, modulo
/// `shards`. Stable across versions and platforms: changing it would move every key
/// (shared buckets keep their shards' state by it; static shards split the work by it).
///
/// A ledger key of a source's other output (`p/cat.jpg#avif`) is in its source's shard
/// ([`ledger_source`]), so a shard's state holds every entry of its sources.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ledger_source(key).as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// The source a ledger key is of: `p/cat.jpg` for `p/cat.jpg#webp_w640` (an output's
/// entry: `#`, then `webp` or `avif`, then an optional `_w` and a width), the key itself
/// otherwise. A source key ends with its extension, so it never ends like an output's.
pub fn ledger_source(key: &str) -> &str {
    let Some((source, id)) = key.rsplit_once('#') else { return key };
    let rest = id.strip_prefix("webp").or_else(|| id.strip_prefix("avif"));
    let is_output = match rest {
        Some("") => true,
        Some(r) => r.strip_prefix("_w").is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    };
    if is_output && !source.is_empty() { source } else { key }
}

/// Groups sources by output key and keeps the outputs claimed by more than one source.
pub fn collisions<'a>(sources: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Vec<String>> {
    let mut by_output: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in sources {
        by_output.entry(webp_key(s)).or_default().push(s.to_owned());
    }
    by_output.retain(|_, v| v.len() > 1);
    by_output
}

/// Turns `key`, `r2://bucket/key` or `s3://bucket/key` into a key of `bucket`.
pub fn parse_source(source: &str, bucket: &str) -> Result<String, SourceError> {
    route_source(source, &[bucket.to_owned()]).map(|(_, key)| key)
}

/// Routes `source` to one of `buckets` (the primary first): `r2://b/key` and `s3://b/key`
/// to bucket `b` when it is configured, a bare key to the primary. Returns the bucket's
/// index in `buckets` and the key.
pub fn route_source(source: &str, buckets: &[String]) -> Result<(usize, String), SourceError> {
    let source = source.trim();
    if source.is_empty() {
        return Err(SourceError::Empty);
    }
    let Some((scheme, rest)) = source.split_once("://") else {
        return Ok((0, source.to_owned()));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "r2" | "s3") {
        return Err(SourceError::Scheme(source.to_owned()));
    }
    let (named, key) = rest.split_once('/').unwrap_or((rest, ""));
    // An address without a key is malformed whichever bucket it names (as in Go).
    if key.is_empty() {
        return Err(SourceError::NoKey(source.to_owned()));
    }
    match buckets.iter().position(|b| b == named) {
        Some(i) => Ok((i, key.to_owned())),
        None => Err(SourceError::UnknownBucket {
            address: source.to_owned(),
            bucket: named.to_owned(),
            configured: buckets.to_vec(),
        }),
    }
}

/// The address of `key` in `bucket`, as the Go server writes it.
pub fn address(bucket: &str, key: &str) -> String {
    format!("r2://{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_replace_the_extension() {
        assert_eq!(webp_key("photos/cat.jpg"), "photos/cat.webp");
        assert_eq!(webp_key("photos/cat.k.JPEG"), "photos/cat.k.webp");
        assert_eq!(webp_key("a.b/noext"), "a.b/noext.webp");
        assert_eq!(webp_key(".hidden"), ".hidden.webp");
    }

    #[test]
    fn a_resized_output_never_takes_the_full_size_name() {
        let (webp, avif) = ("webp", "avif");
        assert_eq!(output_key("p/cat.jpg", webp, None), "p/cat.webp");
        assert_eq!(output_key("p/cat.jpg", webp, Some((150, 100))), "p/cat_150x100.webp");
        assert_eq!(output_key("noext", webp, Some((1, 2))), "noext_1x2.webp");
        assert_eq!(output_key("p/cat.jpg", avif, None), "p/cat.avif");
        assert_eq!(output_key("p/cat.k.png", avif, Some((3, 4))), "p/cat.k_3x4.avif");
    }

    #[test]
    fn the_stem_prefix_lists_every_claimant_of_an_output() {
        let formats: Vec<String> = ["jpg", "png"].iter().map(|s| s.to_string()).collect();
        assert_eq!(stem_prefix("p/cat.jpg"), "p/cat.");
        assert_eq!(stem_prefix("cat.k.JPEG"), "cat.k.");
        for other in ["p/cat.png", "p/cat.JPG"] {
            assert!(other.starts_with(&stem_prefix("p/cat.jpg")));
            assert!(claims_same_output("p/cat.jpg", other, &formats), "{other}");
        }
        for other in ["p/cat.webp", "p/cat.x.png", "p/cats.png", "p/cat.txt"] {
            assert!(!claims_same_output("p/cat.jpg", other, &formats), "{other}");
        }
    }

    #[test]
    fn an_outputs_ledger_entry_is_in_its_sources_shard() {
        for (k, source) in [
            ("p/cat.jpg#avif", "p/cat.jpg"),
            ("p/cat.jpg#webp_w640", "p/cat.jpg"),
            ("p/a#1.jpg", "p/a#1.jpg"),
            ("p/a#webp.jpg", "p/a#webp.jpg"),
            ("p/cat.jpg#webp_w", "p/cat.jpg#webp_w"),
            ("p/cat.jpg#gif", "p/cat.jpg#gif"),
            ("#avif", "#avif"),
        ] {
            assert_eq!(ledger_source(k), source, "{k}");
        }
        assert_eq!(shard_of("p/cat.jpg#avif", 16), shard_of("p/cat.jpg", 16));
    }

    #[test]
    fn candidates_are_listed_formats_in_any_case() {
        let formats: Vec<String> = ["jpg", "png"].iter().map(|s| s.to_string()).collect();
        assert!(is_candidate("a/B.JPG", &formats));
        assert!(!is_candidate("a/b.webp", &formats));
        assert!(!is_candidate("a/b.gif", &formats));
        assert!(!is_candidate("a.jpg/readme", &formats));
    }

    #[test]
    fn two_sources_for_one_output_are_a_collision() {
        let c = collisions(["p/cat.jpg", "p/cat.png", "p/dog.jpg"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c["p/cat.webp"], vec!["p/cat.jpg", "p/cat.png"]);
    }

    #[test]
    fn sources_name_the_configured_bucket_only() {
        assert_eq!(parse_source("r2://b/x/y.jpg", "b").unwrap(), "x/y.jpg");
        assert_eq!(parse_source("s3://b/y.jpg", "b").unwrap(), "y.jpg");
        assert_eq!(parse_source("x/y.jpg", "b").unwrap(), "x/y.jpg");
        assert!(matches!(parse_source("r2://other/y.jpg", "b"), Err(SourceError::UnknownBucket { .. })));
        assert!(matches!(parse_source("r2://b/", "b"), Err(SourceError::NoKey(_))));
        assert!(matches!(parse_source("r2://other", "b"), Err(SourceError::NoKey(_))));
        assert!(matches!(parse_source("ftp://b/y.jpg", "b"), Err(SourceError::Scheme(_))));
    }

    #[test]
    fn sources_are_routed_to_the_bucket_they_name_and_bare_keys_to_the_primary() {
        let buckets = vec!["images-a".to_owned(), "images-b".to_owned()];
        assert_eq!(route_source("r2://images-b/p/x.png", &buckets).unwrap(), (1, "p/x.png".into()));
        assert_eq!(route_source("s3://images-a/x.png", &buckets).unwrap(), (0, "x.png".into()));
        assert_eq!(route_source("p/x.png", &buckets).unwrap(), (0, "p/x.png".into()));
        let err = route_source("r2://images-c/x.png", &buckets).unwrap_err();
        assert!(matches!(err, SourceError::UnknownBucket { .. }));
        assert!(err.to_string().contains("images-a, images-b"), "{err}");
    }
}
