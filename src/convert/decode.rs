//! Decoding: header checks first, then pixels, oriented as a browser shows them.
//!
//! The header is read before any pixel so the byte, pixel and side limits refuse a
//! decompression bomb without allocating for it. Still images come back as 8-bit RGB or
//! RGBA with the EXIF orientation applied; GIFs with more than one frame come back as a
//! lazy frame iterator, so an animation is never held in memory whole.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::metadata::Orientation;
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageError, ImageFormat, ImageReader};

use super::webp::Metadata;
use super::{ConvertError, ConvertOptions, Limits, SourceFormat};

/// A decoded still image, ready to encode.
pub struct Still {
    pub image: DynamicImage,
    pub metadata: Metadata,
    /// The EXIF orientation that was applied (1 = none).
    pub orientation: u8,
}

/// A decoded animation: canvas size, loop count (WebP's meaning) and frames to come.
pub struct Animation<'a> {
    pub width: u32,
    pub height: u32,
    pub loop_count: u16,
    pub first: Vec<Frame>,
    pub rest: image::Frames<'a>,
}

/// What a decode yields.
pub enum Decoded<'a> {
    Still(Still),
    Animation(Animation<'a>),
}

/// The image crate's name for a sniffed format.
pub fn image_format(f: SourceFormat) -> ImageFormat {
    match f {
        SourceFormat::Jpeg => ImageFormat::Jpeg,
        SourceFormat::Png => ImageFormat::Png,
        SourceFormat::Gif => ImageFormat::Gif,
        SourceFormat::Bmp => ImageFormat::Bmp,
        SourceFormat::Tiff => ImageFormat::Tiff,
    }
}

/// Decoder limits: generous enough for any image within our own caps, so the header
/// check before decoding is what refuses a bomb (with our error, not the decoder's); and
/// never more than the memory budget leaves for one conversion, so a decoder that
/// allocates more than its header promised (a GIF's canvas per frame) is stopped there.
fn decoder_limits(opts: &ConvertOptions) -> image::Limits {
    let mut limits = image::Limits::default();
    // 16-bit RGBA is 8 bytes a pixel; leave room for the decoder's working buffers.
    let caps = opts.limits.max_pixels.saturating_mul(8).saturating_add(64 << 20);
    limits.max_alloc = Some(caps.min(opts.limits.max_work_bytes()));
    limits
}

/// Maps a decoder error to ours, naming the format.
pub fn decode_error(format: SourceFormat, e: ImageError) -> ConvertError {
    match e {
        ImageError::Limits(l) => ConvertError::LimitExceeded { message: l.to_string() },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ConvertError::Decode { format, message: "truncated: unexpected end of file".into() }
        }
        other => ConvertError::Decode { format, message: other.to_string() },
    }
}

/// Refuses images over the pixel cap before decoding them.
pub fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), ConvertError> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(ConvertError::EmptyImage);
    }
    if pixels > limits.max_pixels {
        return Err(ConvertError::TooManyPixels { width, height, max: limits.max_pixels });
    }
    Ok(())
}

/// Decodes `bytes` of the sniffed `format`.
pub fn decode<'a>(bytes: &'a [u8], format: SourceFormat, opts: &ConvertOptions) -> Result<Decoded<'a>, ConvertError> {
    if format == SourceFormat::Gif {
        return decode_gif(bytes, opts);
    }
    if format == SourceFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey; a partial image must not
        // become a WebP that looks like a finished conversion.
        return Err(ConvertError::Decode {
            format,
            message: "truncated: no end-of-image marker after the last scan".into(),
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
    reader.limits(decoder_limits(opts));
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(format, e))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, &opts.limits)?;
    // Metadata problems (a corrupt EXIF block, a bad orientation value) never fail a
    // conversion: the image is shown as stored, without the broken metadata.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut metadata = Metadata::default();
    if opts.keep_icc {
        metadata.icc = decoder.icc_profile().ok().flatten().filter(|p| !p.is_empty());
    }
    if opts.keep_exif {
        metadata.exif = decoder.exif_metadata().ok().flatten().map(|mut exif| {
            let _ = Orientation::remove_from_exif_chunk(&mut exif);
            exif
        });
    }
    if opts.keep_xmp {
        metadata.xmp = decoder.xmp_metadata().ok().flatten();
    }
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(format, e))?;
    image.apply_orientation(orientation);
    Ok(Decoded::Still(Still { image, metadata, orientation: orientation.to_exif() }))
}

fn decode_gif<'a>(bytes: &'a [u8], opts: &ConvertOptions) -> Result<Decoded<'a>, ConvertError> {
    let format = SourceFormat::Gif;
    let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(|e| decode_error(format, e))?;
    decoder.set_limits(decoder_limits(opts)).map_err(|e| decode_error(format, e))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, &opts.limits)?;
    let loop_count = webp_loop_count(netscape_loop_count(bytes));
    let mut frames = decoder.into_frames();
    let mut first = Vec::with_capacity(2);
    for _ in 0..2 {
        match frames.next() {
            Some(f) => first.push(f.map_err(|e| decode_error(format, e))?),
            None => break,
        }
    }
    match first.len() {
        0 => Err(ConvertError::Decode { format, message: "GIF has no frames".into() }),
        1 => {
            let image = DynamicImage::ImageRgba8(first.pop().expect("one frame").into_buffer());
            Ok(Decoded::Still(Still { image, metadata: Metadata::default(), orientation: 1 }))
        }
        _ => Ok(Decoded::Animation(Animation { width, height, loop_count, first, rest: frames })),
    }
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA).
///
/// Inside entropy-coded data every FF byte is followed by 00 or a restart marker, so the
/// last FF DA is the last scan's header and an FF D9 after it is the real end; markers in
/// an embedded thumbnail come before it and do not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(sos) => bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// The NETSCAPE2.0 loop count of a GIF: `None` when the extension is absent (play once),
/// `Some(0)` for forever, `Some(n)` for n repeats after the first play.
pub fn netscape_loop_count(gif: &[u8]) -> Option<u16> {
    const APP_EXT: &[u8] = b"\x21\xFF\x0BNETSCAPE2.0\x03\x01";
    gif.windows(APP_EXT.len() + 2)
        .find(|w| w.starts_with(APP_EXT))
        .map(|w| u16::from_le_bytes([w[APP_EXT.len()], w[APP_EXT.len() + 1]]))
}

/// GIF loop semantics to WebP's, as libwebp's gif2webp: no extension plays once (1);
/// 0 stays forever; n repeats after the first play become n + 1 plays.
pub fn webp_loop_count(gif: Option<u16>) -> u16 {
    match gif {
        None => 1,
        Some(0) => 0,
        Some(n) => n.saturating_add(1),
    }
}

/// A GIF frame's display time: delays of 10 ms or less show as 100 ms in browsers.
pub fn frame_duration_ms(frame: &Frame) -> u32 {
    let (num, den) = frame.delay().numer_denom_ms();
    let ms = num.checked_div(den).unwrap_or(0);
    if ms <= 10 { 100 } else { ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_loop_counts_follow_gif2webp() {
        assert_eq!(webp_loop_count(None), 1);
        assert_eq!(webp_loop_count(Some(0)), 0);
        assert_eq!(webp_loop_count(Some(3)), 4);
        let mut gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00".to_vec();
        gif.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x05\x00\x00");
        assert_eq!(netscape_loop_count(&gif), Some(5));
        assert_eq!(netscape_loop_count(b"GIF89a"), None);
    }
}
