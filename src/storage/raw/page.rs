//! One page of a ListObjectsV2 answer, read from its XML with every key exactly as the
//! store holds it: a plain function of the body, unit-tested on odd keys.
//!
//! The raw client asks for `encoding-type=url`, as the AWS SDKs do, because XML 1.0
//! cannot carry a key with a control character: each `Key` then comes percent-encoded
//! (a space as `+` or `%20`, a `+` as `%2B`) and is decoded here. A key that does not
//! decode to UTF-8, or an entry whose size or date cannot be read, becomes an
//! [`Entry::Unreadable`] of its own: one odd entry never fails its page.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use quick_xml::events::Event;

use super::super::walk::escape;
use crate::storage::ObjectInfo;

/// One `Contents` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Object(ObjectInfo),
    /// Named (escaped where it is not UTF-8), with what could not be read.
    Unreadable {
        key: String,
        reason: &'static str,
    },
}

/// A page: its entries in key order and the token of the next page (none on the last).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<String>,
}

/// The fields of a `Contents` element, as text.
#[derive(Default)]
struct Fields {
    key: Option<String>,
    size: Option<String>,
    modified: Option<String>,
    etag: Option<String>,
}

/// Reads a ListObjectsV2 answer. `Err` only when the body is not such an answer at all.
pub(crate) fn parse(xml: &str) -> Result<Page, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut page = Page::default();
    let (mut truncated, mut url_encoded, mut root_seen) = (false, false, false);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut fields = Fields::default();
    loop {
        let event = reader.read_event().map_err(|e| format!("not XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != "ListBucketResult" {
                        return Err(format!("expected ListBucketResult, found {name}"));
                    }
                    root_seen = true;
                }
                if name == "Contents" && path.len() == 1 {
                    fields = Fields::default();
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?;
                    text.push_str(resolved);
                }
            },
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let value = std::mem::take(&mut text);
                match (path.len(), path.last().map(String::as_str), name.as_str()) {
                    (1, _, "IsTruncated") => truncated = value.trim() == "true",
                    (1, _, "NextContinuationToken") => page.next = Some(value),
                    (1, _, "EncodingType") => url_encoded = value.trim() == "url",
                    (1, _, "Contents") => page.entries.push(entry(std::mem::take(&mut fields))),
                    (2, Some("Contents"), "Key") => fields.key = Some(value),
                    (2, Some("Contents"), "Size") => fields.size = Some(value),
                    (2, Some("Contents"), "LastModified") => fields.modified = Some(value),
                    (2, Some("Contents"), "ETag") => fields.etag = Some(value),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err("empty answer".into());
    }
    if url_encoded {
        for e in &mut page.entries {
            decode_entry(e);
        }
    }
    if !truncated {
        page.next = None;
    } else if page.next.as_deref().is_none_or(str::is_empty) {
        return Err("a truncated page without a NextContinuationToken".into());
    }
    Ok(page)
}

fn entry(f: Fields) -> Entry {
    let Some(key) = f.key.filter(|k| !k.is_empty()) else {
        return Entry::Unreadable { key: String::new(), reason: "an entry without a key" };
    };
    let Some(size) = f.size.and_then(|s| s.trim().parse::<u64>().ok()) else {
        return Entry::Unreadable { key, reason: "its size cannot be read" };
    };
    let Some(last_modified) =
        f.modified.and_then(|m| DateTime::parse_from_rfc3339(m.trim()).ok()).map(|d| d.with_timezone(&Utc))
    else {
        return Entry::Unreadable { key, reason: "its LastModified cannot be read" };
    };
    Entry::Object(ObjectInfo { key, size, last_modified, etag: f.etag.filter(|e| !e.is_empty()) })
}

/// Decodes a `encoding-type=url` key in place.
fn decode_entry(e: &mut Entry) {
    let key = match e {
        Entry::Object(info) => &mut info.key,
        Entry::Unreadable { key, .. } => key,
    };
    match url_decode(key) {
        Ok(k) => *key = k,
        Err(escaped) => *e = Entry::Unreadable { key: escaped, reason: "its name is not valid UTF-8" },
    }
}

/// Decodes `%XX` and `+` (a space, as S3 writes it; a `+` itself comes as `%2B`). A
/// result that is not UTF-8 comes back escaped (`\xNN`) as the error.
pub(crate) fn url_decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    let bytes: Cow<[u8]> = percent_encoding::percent_decode_str(&plus).into();
    String::from_utf8(bytes.to_vec()).map_err(|_| escape(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(contents: &str, tail: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>{contents}{tail}</ListBucketResult>"#
        )
    }

    fn contents(key: &str) -> String {
        format!(
            "<Contents><Key>{key}</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
             <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
    }

    fn keys(p: &Page) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match e {
                Entry::Object(o) => o.key.clone(),
                Entry::Unreadable { key, reason } => format!("!{key} ({reason})"),
            })
            .collect()
    }

    #[test]
    fn url_encoded_odd_keys_come_back_exactly_as_stored() {
        let odd = ["a//b.jpg", "./x.jpg", "../x.jpg", "tab%09here.jpg", "c%01.jpg", "sp+ace%2Bplus.jpg", "%C3%BC.jpg"];
        let body = page(
            &odd.iter().map(|k| contents(k)).collect::<String>(),
            "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>",
        );
        let p = parse(&body).unwrap();
        assert_eq!(
            keys(&p),
            ["a//b.jpg", "./x.jpg", "../x.jpg", "tab\there.jpg", "c\u{1}.jpg", "sp ace+plus.jpg", "ü.jpg"]
        );
        let Entry::Object(first) = &p.entries[0] else { panic!() };
        assert_eq!((first.size, first.etag.as_deref()), (12, Some("\"abc\"")));
        assert_eq!(first.last_modified.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(p.next, None);
    }

    #[test]
    fn keys_without_url_encoding_are_unescaped_xml_text() {
        let body = page(&(contents("a &amp; b&#x9;.jpg") + &contents("+.jpg")), "<IsTruncated>false</IsTruncated>");
        assert_eq!(keys(&parse(&body).unwrap()), ["a & b\t.jpg", "+.jpg"]);
    }

    #[test]
    fn a_truncated_page_names_the_next_one_and_must() {
        let body = page(
            &contents("a.jpg"),
            "<IsTruncated>true</IsTruncated><NextContinuationToken>t/1+=</NextContinuationToken>",
        );
        assert_eq!(parse(&body).unwrap().next.as_deref(), Some("t/1+="));
        let body = page(&contents("a.jpg"), "<IsTruncated>true</IsTruncated>");
        assert!(parse(&body).unwrap_err().contains("NextContinuationToken"));
        // The last page's token (some stores send one) ends the listing anyway.
        let body = page(
            &contents("a.jpg"),
            "<IsTruncated>false</IsTruncated><NextContinuationToken>x</NextContinuationToken>",
        );
        assert_eq!(parse(&body).unwrap().next, None);
    }

    #[test]
    fn one_unreadable_entry_does_not_fail_its_page() {
        let bad_size =
            "<Contents><Key>big.jpg</Key><LastModified>2026-01-02T03:04:05Z</LastModified><Size>x</Size></Contents>";
        let bad_date = "<Contents><Key>old.jpg</Key><LastModified>yesterday</LastModified><Size>1</Size></Contents>";
        let body = page(
            &format!("{}{bad_size}{bad_date}{}{}", contents("a.jpg"), contents("%FF.jpg"), contents("z.jpg")),
            "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>",
        );
        assert_eq!(
            keys(&parse(&body).unwrap()),
            [
                "a.jpg",
                "!big.jpg (its size cannot be read)",
                "!old.jpg (its LastModified cannot be read)",
                "!\\xFF.jpg (its name is not valid UTF-8)",
                "z.jpg"
            ]
        );
    }

    #[test]
    fn an_answer_that_is_not_a_listing_is_an_error() {
        assert!(parse("<Error><Code>AccessDenied</Code></Error>").unwrap_err().contains("ListBucketResult"));
        assert!(parse("").is_err());
    }
}
