//! Which format the bytes really are: the extension only makes an object a candidate,
//! the magic number decides how it is decoded.

use super::{ConvertError, SourceFormat};

/// Identifies the image format from the first bytes.
///
/// A `.jpg` that holds a PNG is a PNG; a `.jpg` that holds text is
/// [`ConvertError::NotAnImage`]; a WebP, AVIF, HEIC or other known-but-unsupported
/// format is [`ConvertError::UnsupportedFormat`] with its name.
pub fn sniff(bytes: &[u8]) -> Result<SourceFormat, ConvertError> {
    if bytes.is_empty() {
        return Err(ConvertError::Empty);
    }
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(SourceFormat::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(SourceFormat::Png);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(SourceFormat::Gif);
    }
    if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        return Ok(SourceFormat::Tiff);
    }
    // "BM" alone is too weak a signature for text that happens to start with it: check
    // that the header's pixel offset lies inside the file and the DIB header size is sane.
    if starts(b"BM") && bytes.len() >= 18 {
        let offset = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
        let dib = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
        if offset >= 26 && offset <= bytes.len() && matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124) {
            return Ok(SourceFormat::Bmp);
        }
    }
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Err(ConvertError::UnsupportedFormat { format: "webp (already WebP)".into() });
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = String::from_utf8_lossy(&bytes[8..12]).into_owned();
        let name = match brand.as_str() {
            "avif" | "avis" => "avif",
            "heic" | "heix" | "mif1" | "msf1" | "heim" | "heis" => "heif",
            _ => "iso-bmff",
        };
        return Err(ConvertError::UnsupportedFormat { format: name.into() });
    }
    if starts(&[0x00, 0x00, 0x01, 0x00]) {
        return Err(ConvertError::UnsupportedFormat { format: "ico".into() });
    }
    Err(ConvertError::NotAnImage { hint: describe(bytes) })
}

/// A short description of unrecognised bytes for the error message.
fn describe(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(64)];
    let printable = head.iter().filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()).count();
    if printable == head.len() {
        "looks like text".into()
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("starts with {}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_decide_not_names() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n....").unwrap(), SourceFormat::Png);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), SourceFormat::Jpeg);
        assert_eq!(sniff(b"GIF89a..").unwrap(), SourceFormat::Gif);
        assert_eq!(sniff(b"II*\0....").unwrap(), SourceFormat::Tiff);
        assert!(matches!(sniff(b""), Err(ConvertError::Empty)));
        let text = sniff(b"BM is not a bitmap, it is text\n").unwrap_err();
        assert!(text.to_string().contains("looks like text"), "{text}");
        let webp = sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap_err();
        assert!(matches!(webp, ConvertError::UnsupportedFormat { .. }));
    }
}
