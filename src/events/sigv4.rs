//! AWS Signature Version 4 for the few JSON requests the SQS source makes: a POST with a
//! body, signed over `content-type`, `host`, `x-amz-date` and `x-amz-target`. Built on
//! `ring` (already a dependency for the webhook's HMAC) instead of the AWS SDK, whose
//! build would cost minutes for four API calls.

use chrono::{DateTime, Utc};
use ring::{digest, hmac};

/// The credentials and scope requests are signed for.
pub struct Signer<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// What is signed of a request.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Already canonical (sorted, encoded), or empty.
    pub query: &'a str,
    /// Lower-case names, besides `host` and `x-amz-date` (added).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers a signed request carries (besides `host`, which the client sets from the URL).
pub struct Signed {
    pub amz_date: String,
    pub authorization: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
}

impl Signer<'_> {
    /// Signs `req` as made at `now`.
    pub fn sign(&self, req: &Request, now: DateTime<Utc>) -> Signed {
        let Request { method, host, path, query, headers, body } = *req;
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let day = &amz_date[..8];
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("host", host));
        all.push(("x-amz-date", &amz_date));
        all.sort();
        let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        let signed_headers = all.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let payload = hex(digest::digest(&digest::SHA256, body).as_ref());
        let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload}");
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let k_date = hmac(format!("AWS4{}", self.secret_key).as_bytes(), day);
        let k_region = hmac(k_date.as_ref(), self.region);
        let k_service = hmac(k_region.as_ref(), self.service);
        let k_signing = hmac(k_service.as_ref(), "aws4_request");
        let signature = hex(hmac(k_signing.as_ref(), &to_sign).as_ref());
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        Signed { amz_date, authorization }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The worked example of AWS's Signature Version 4 documentation (IAM ListUsers).
    #[test]
    fn matches_the_documented_example() {
        let signer = Signer {
            access_key: "AKIDEXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "iam",
        };
        let now = Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap();
        let req = Request {
            method: "GET",
            host: "iam.amazonaws.com",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
            body: b"",
        };
        let s = signer.sign(&req, now);
        assert_eq!(s.amz_date, "20150830T123600Z");
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    /// A POST with a body, as the SQS source sends, against botocore's signer (computed
    /// once with botocore 1.x's `SigV4Auth` over the same request).
    #[test]
    fn signs_a_json_post_as_botocore_does() {
        let signer = Signer { access_key: "testing", secret_key: "testing", region: "us-east-1", service: "sqs" };
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let body = br#"{"QueueUrl":"http://127.0.0.1:5000/123456789012/q","MaxNumberOfMessages":10}"#;
        let req = Request {
            method: "POST",
            host: "127.0.0.1:5000",
            path: "/",
            query: "",
            headers: &[("content-type", "application/x-amz-json-1.0"), ("x-amz-target", "AmazonSQS.ReceiveMessage")],
            body,
        };
        let s = signer.sign(&req, now);
        assert_eq!(s.authorization, BOTOCORE_POST);
    }

    const BOTOCORE_POST: &str = "AWS4-HMAC-SHA256 Credential=testing/20260102/us-east-1/sqs/aws4_request, \
        SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
        Signature=42d4cf5515e392d63a7a4499b00c1406835fb3fc5fa12a89408d8232990a68b5";
}
