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

/// The element whose text is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// None of interest: its text is not kept.
    Other,
    IsTruncated,
    NextToken,
    EncodingType,
    Key,
    Size,
    LastModified,
    ETag,
}

/// Reads a ListObjectsV2 answer. `Err` only when the body is not such an answer at all.
///
/// One pass with no allocation per element (a page holds 1,000 entries): the depth and
/// the element being read say where a text belongs.
pub(crate) fn parse(xml: &str) -> Result<Page, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut page = Page::default();
    let (mut truncated, mut url_encoded, mut root_seen) = (false, false, false);
    // The root is at depth 1, its children at 2, a `Contents`' children at 3.
    let (mut depth, mut in_contents, mut field) = (0usize, false, Field::Other);
    let mut text = String::new();
    let mut fields = Fields::default();
    loop {
        let event = reader.read_event().map_err(|e| format!("not XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                field = match (depth, in_contents, name.as_ref()) {
                    (1, _, b"ListBucketResult") => {
                        root_seen = true;
                        Field::Other
                    }
                    (1, _, other) => {
                        return Err(format!("expected ListBucketResult, found {}", String::from_utf8_lossy(other)));
                    }
                    (2, _, b"Contents") => {
                        in_contents = true;
                        fields = Fields::default();
                        Field::Other
                    }
                    (2, _, b"IsTruncated") => Field::IsTruncated,
                    (2, _, b"NextContinuationToken") => Field::NextToken,
                    (2, _, b"EncodingType") => Field::EncodingType,
                    (3, true, b"Key") => Field::Key,
                    (3, true, b"Size") => Field::Size,
                    (3, true, b"LastModified") => Field::LastModified,
                    (3, true, b"ETag") => Field::ETag,
                    _ => Field::Other,
                };
                text.clear();
            }
            _ if field == Field::Other && !matches!(event, Event::End(_) | Event::Eof) => {}
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
                match field {
                    Field::Other if depth == 2 && in_contents => {
                        in_contents = false;
                        page.entries.push(entry(std::mem::take(&mut fields)));
                    }
                    Field::Other => {}
                    Field::IsTruncated => truncated = text.trim() == "true",
                    Field::NextToken => page.next = Some(std::mem::take(&mut text)),
                    Field::EncodingType => url_encoded = text.trim() == "url",
                    Field::Key => fields.key = Some(std::mem::take(&mut text)),
                    Field::Size => fields.size = Some(std::mem::take(&mut text)),
                    Field::LastModified => fields.modified = Some(std::mem::take(&mut text)),
                    Field::ETag => fields.etag = Some(std::mem::take(&mut text)),
                }
                field = Field::Other;
                depth = depth.saturating_sub(1);
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
    if !s.contains(['%', '+']) {
        return Ok(s.to_owned());
    }
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
