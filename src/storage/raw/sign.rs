//! AWS Signature Version 4 for the requests the raw S3 client sends itself: a plain
//! function of the request's parts, with no I/O, so it is checked against AWS's own
//! worked example.
//!
//! S3 signs the path exactly as it is sent (no normalisation, no second encoding), which
//! is the point of the raw client: `/bucket/./x.jpg` and `/bucket/a//b.jpg` are signed
//! and sent as they are. object_store's signer parses the URL first (removing `.` and
//! `..` segments), so it cannot sign these requests.

use chrono::{DateTime, Utc};
use ring::{digest, hmac};

/// The hash of an empty body.
pub(crate) const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a request is signed with. `Debug` shows the key id only.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("region", &self.region).finish_non_exhaustive()
    }
}

/// The parts of a request that are signed.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, already percent-encoded ([`encode_path`]).
    pub path: &'a str,
    /// Decoded query parameters; encoded and sorted here.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides `host`, `x-amz-date` and `x-amz-content-sha256`
    /// (lower-case names).
    pub headers: &'a [(&'a str, &'a str)],
    pub host: &'a str,
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// The headers to add to `req`: `x-amz-date`, `x-amz-content-sha256` and `authorization`.
pub(crate) fn sign(req: &Request<'_>, creds: &Credentials, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .chain([
            ("host".to_owned(), req.host.to_owned()),
            ("x-amz-content-sha256".to_owned(), req.payload_sha256.to_owned()),
            ("x-amz-date".to_owned(), amz_date.clone()),
        ])
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        req.payload_sha256
    );
    let scope = format!("{day}/{}/s3/aws4_request", creds.region);
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut key = hmac_sha256(format!("AWS4{}", creds.secret_key).as_bytes(), day.as_bytes());
    for part in [creds.region.as_str(), "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key
    );
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", req.payload_sha256.to_owned()),
        ("authorization", authorization),
    ]
}

/// The query string as sent and as signed: each name and value encoded, sorted.
pub(crate) fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> =
        query.iter().map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false))).collect();
    pairs.sort();
    pairs.join("&")
}

/// A key as a URL path: every byte but the unreserved ones (and `/`) percent-encoded.
/// `.` is unreserved, so `./x.jpg` stays `./x.jpg`: the raw client sends it unnormalised.
pub(crate) fn encode_path(key: &str) -> String {
    encode(key, true)
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }

    /// AWS's worked example "GET Object" (Signature Version 4, header-based auth).
    #[test]
    fn the_signature_matches_aws_worked_example() {
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[("range", "bytes=0-9")],
            host: "examplebucket.s3.amazonaws.com",
            payload_sha256: EMPTY_SHA256,
        };
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z").unwrap().with_timezone(&Utc);
        let headers = sign(&req, &example_creds(), now);
        let auth = &headers.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(!format!("{:?}", example_creds()).contains("EXAMPLEKEY"), "Debug never shows the secret");
    }

    /// AWS's worked example "GET Bucket (List Objects)": the query is encoded and sorted.
    #[test]
    fn a_listing_query_is_signed_sorted_as_aws_worked_example() {
        let req = Request {
            method: "GET",
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &[],
            host: "examplebucket.s3.amazonaws.com",
            payload_sha256: EMPTY_SHA256,
        };
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z").unwrap().with_timezone(&Utc);
        let auth = sign(&req, &example_creds(), now).pop().unwrap().1;
        assert!(auth.ends_with("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"), "{auth}");
    }

    #[test]
    fn odd_keys_are_encoded_without_normalising_them() {
        assert_eq!(encode_path("./x.jpg"), "./x.jpg");
        assert_eq!(encode_path("../x.jpg"), "../x.jpg");
        assert_eq!(encode_path("a//b.jpg"), "a//b.jpg");
        assert_eq!(encode_path("tab\there.jpg"), "tab%09here.jpg");
        assert_eq!(encode_path("c\u{1}ü +.jpg"), "c%01%C3%BC%20%2B.jpg");
        assert_eq!(
            canonical_query(&[("start-after", "a b/c"), ("list-type", "2")]),
            "list-type=2&start-after=a%20b%2Fc"
        );
    }
}
