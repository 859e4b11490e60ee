//! Whether a still image has at most 256 colours: what `lossless: auto` encodes lossless
//! (graphics) rather than lossy (photos). The encoder's choice is made on the decoded
//! pixels ([`few_colours`]); the memory budget needs it before decoding, because the
//! lossless encoder holds about nine times what the lossy one does for a photo.
//!
//! [`png_colours`] reads it from a PNG's compressed rows, a row at a time, holding one
//! row and the inflater's window: a photo shows its 257th colour within its first rows,
//! so the look costs almost nothing where it matters. It counts exactly what
//! [`few_colours`] will count after decoding — the pixels as the `image` crate expands
//! them (a palette or `tRNS` to RGB or RGBA, gray to three equal channels, 16-bit samples
//! rounded to 8 bits as `image` rounds them) — so "many colours" here is "lossy" there.

use std::io::Cursor;

/// What is known of a still image's colours before it is decoded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Colours {
    /// More than 256 seen: `lossless: auto` will encode it lossy.
    Many,
    /// At most 256 in the whole image: `auto` will encode it lossless.
    Few,
    /// Not looked at, not readable, or at most 256 within the first pixels looked at
    /// ([`SCAN_PIXELS`]): it may be encoded lossless.
    #[default]
    Unknown,
}

/// Whether any pixel is transparent: a lossy encode of a picture with transparency adds
/// libwebp's lossless encode of its alpha plane; an opaque RGBA picture has none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Transparency {
    /// Every pixel read, none transparent (or no alpha channel at all).
    Opaque,
    /// A pixel with alpha under 255 was seen.
    Transparent,
    /// Not read to the end ([`ALPHA_SCAN_PIXELS`]), or not readable.
    #[default]
    Unknown,
}

/// What [`png_colours`] read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub colours: Colours,
    pub transparency: Transparency,
    /// Pixels of the rows counted that differ from their left neighbour (a row's first
    /// counts): how many runs the picture is made of, which libwebp's lossless encode
    /// holds references and matches for (`cost::refs_share`). Every pixel's when the
    /// colours are [`Colours::Few`].
    pub changes: u64,
}

/// How many pixels [`png_colours`] counts colours in at most before answering
/// [`Colours::Unknown`]: as many as it reads for transparency. A graphic counted to its
/// end is reserved for the palette encode alone, not for that or a lossy one with an
/// alpha plane (which a transparent wallpaper would be reserved ~1.6 times its peak
/// for); counting costs what inflating does (mate__MATE-Stripes-Dark.png, 2.8 MP:
/// BENCHMARKS.md), and admission runs it off the async threads.
pub const SCAN_PIXELS: u64 = 16 << 20;

/// How many pixels of an image with an alpha channel [`png_colours`] reads at most to
/// see whether any is transparent (inflating and looking at one byte a pixel: about
/// 10 ms a megapixel here), before answering [`Transparency::Unknown`].
pub const ALPHA_SCAN_PIXELS: u64 = 16 << 20;

/// True when the picture has at most 256 distinct colours ("graphics", not a photo).
/// Stops counting at the 257th colour, so photos cost a few rows.
pub fn few_colours(pixels: &[u8], channels: usize) -> bool {
    let mut seen = Seen::default();
    pixels.chunks_exact(channels).all(|px| seen.add(px))
}

/// Distinct pixels, up to the 257th: an open-addressed table four times as large (the
/// key plus one, 0 for empty) and the last pixel, which a graphic repeats along its runs.
struct Seen {
    table: Box<[u64; SEEN_SLOTS]>,
    count: usize,
    last: Option<u32>,
}

const SEEN_SLOTS: usize = 1024;

impl Default for Seen {
    fn default() -> Self {
        Self { table: Box::new([0; SEEN_SLOTS]), count: 0, last: None }
    }
}

impl Seen {
    /// Adds a pixel of up to four 8-bit channels; false once more than 256 were seen.
    fn add(&mut self, px: &[u8]) -> bool {
        let mut key = [0u8; 4];
        key[..px.len()].copy_from_slice(px);
        let key = u32::from_le_bytes(key);
        if self.last == Some(key) {
            return true;
        }
        self.last = Some(key);
        let mut slot = (key.wrapping_mul(0x9e37_79b1) >> 22) as usize;
        loop {
            match self.table[slot] {
                0 => {
                    self.table[slot] = u64::from(key) + 1;
                    self.count += 1;
                    return self.count <= 256;
                }
                k if k == u64::from(key) + 1 => return true,
                _ => slot = (slot + 1) % SEEN_SLOTS,
            }
        }
    }
}

/// Reads a PNG's rows: its colours, counted up to the 257th within [`SCAN_PIXELS`], and
/// with an alpha channel whether any pixel is transparent, within [`ALPHA_SCAN_PIXELS`]
/// (an interlaced PNG's passes hold the same pixels). A file that cannot be read says
/// `Unknown` for both: its decode then says why.
pub fn png_colours(png: &[u8]) -> Scan {
    read_rows(png, SCAN_PIXELS)
}

/// [`png_colours`], counting colours in the first `scan_pixels` at most.
fn read_rows(png: &[u8], scan_pixels: u64) -> Scan {
    let mut decoder = png::Decoder::new(Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND);
    let Ok(mut reader) = decoder.read_info() else { return Scan::default() };
    let (colour, depth) = reader.output_color_type();
    let channels = colour.samples();
    let alpha = matches!(colour, png::ColorType::Rgba | png::ColorType::GrayscaleAlpha);
    let wide = depth == png::BitDepth::Sixteen;
    let total = u64::from(reader.info().width) * u64::from(reader.info().height);
    let step = channels * if wide { 2 } else { 1 };
    // `None` once a 257th colour was seen.
    let mut seen = Some(Seen::default());
    let (mut read, mut transparent) = (0u64, false);
    let (mut pixel, mut left) = ([0u8; 4], [0u8; 4]);
    let mut changes = 0u64;
    while let Ok(Some(row)) = reader.next_row() {
        let data = row.data();
        if seen.is_some() && read < scan_pixels {
            for (x, px) in data.chunks_exact(step).enumerate() {
                for (c, out) in pixel[..channels].iter_mut().enumerate() {
                    *out = if wide { to_8_bits(px[2 * c], px[2 * c + 1]) } else { px[c] };
                }
                if x == 0 || pixel != left {
                    changes += 1;
                    left = pixel;
                }
                if seen.as_mut().is_some_and(|s| !s.add(&pixel[..channels])) {
                    seen = None;
                    break;
                }
            }
        }
        if alpha && !transparent {
            let a = step - if wide { 2 } else { 1 };
            transparent =
                data.chunks_exact(step).any(|px| if wide { to_8_bits(px[a], px[a + 1]) } else { px[a] } < 255);
        }
        read += (data.len() / step) as u64;
        let colours_known = seen.is_none() || read >= scan_pixels;
        let alpha_known = !alpha || transparent || read >= ALPHA_SCAN_PIXELS;
        if colours_known && alpha_known {
            break;
        }
    }
    // Rows that end early or fail to inflate leave both unknown: the decode says why.
    let colours = match seen {
        None => Colours::Many,
        Some(_) if read == total && total <= scan_pixels => Colours::Few,
        Some(_) => Colours::Unknown,
    };
    let transparency = if transparent {
        Transparency::Transparent
    } else if !alpha || read == total {
        Transparency::Opaque
    } else {
        Transparency::Unknown
    };
    Scan { colours, transparency, changes }
}

/// A 16-bit sample (big-endian) as image rounds it to 8 bits: (v + 128) / 257.
fn to_8_bits(high: u8, low: u8) -> u8 {
    ((u32::from(u16::from_be_bytes([high, low])) + 128) / 257) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{ConvertOptions, convert};

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// A PNG of `w`×`h` RGB pixels from `f`.
    fn rgb_png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn the_colours_read_before_decoding_are_what_auto_encodes_by() {
        // Every PNG of the test set, of every colour type and depth (pngsuite's 16-bit
        // and gray-alpha, a palette with tRNS, interlaced): Many exactly when the
        // encoder, counting the decoded pixels, chose lossy.
        let dir = format!("{}/testdata/images", env!("CARGO_MANIFEST_DIR"));
        let mut seen = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "png") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let Ok(converted) = convert(&bytes, &ConvertOptions::default(), None) else { continue };
            match png_colours(&bytes).colours {
                Colours::Many => {
                    assert!(!converted.lossless, "{}", path.display());
                    seen.0 += 1;
                }
                Colours::Few => {
                    assert!(converted.lossless, "{}", path.display());
                    seen.1 += 1;
                }
                Colours::Unknown => {}
            }
        }
        assert!(seen.0 >= 1 && seen.1 >= 1, "the test set has photos and graphics: {seen:?}");
    }

    #[test]
    fn a_truecolour_png_of_few_colours_is_few_and_a_photo_is_many() {
        let flat = rgb_png(300, 200, |x, y| [(x % 16) as u8 * 16, (y % 16) as u8 * 16, 0]);
        let scan = png_colours(&flat);
        assert_eq!((scan.colours, scan.transparency), (Colours::Few, Transparency::Opaque));
        // Every pixel differs from its left neighbour there; runs of 16 pixels change
        // at each run's start.
        assert_eq!(scan.changes, 300 * 200);
        let runs = rgb_png(320, 200, |x, y| [(x / 16) as u8, (y % 8) as u8, 0]);
        assert_eq!(png_colours(&runs).changes, 20 * 200);
        assert!(convert(&flat, &ConvertOptions::default(), None).unwrap().lossless);
        let gradient = rgb_png(300, 200, |x, y| [x as u8, y as u8, (x + y) as u8]);
        assert_eq!(png_colours(&gradient).colours, Colours::Many);
        assert!(!convert(&gradient, &ConvertOptions::default(), None).unwrap().lossless);
        // 256 colours over the pixels counted and a 257th after them: not looked at,
        // so it may be lossless; counted to the end, many.
        let late = rgb_png(1024, 1100, |x, y| if y < 1030 { [(x % 256) as u8, 0, 0] } else { [0, 1, y as u8] });
        assert_eq!(read_rows(&late, 1 << 20).colours, Colours::Unknown);
        assert_eq!(png_colours(&late).colours, Colours::Many);
        // A graphic of more than a million pixels is counted to its end.
        let large = rgb_png(1500, 1000, |x, y| [(x / 100) as u8, (y / 100) as u8, 0]);
        assert_eq!(png_colours(&large).colours, Colours::Few);
        // Not a PNG, or cut short: unknown, never a panic.
        assert_eq!(png_colours(b"not a png"), Scan::default());
        assert_eq!(png_colours(&flat[..flat.len() / 2]).colours, Colours::Unknown);
        assert_eq!(png_colours(&fixture("jpeg_baseline.jpg")), Scan::default());
    }

    #[test]
    fn an_rgba_png_is_opaque_only_when_every_pixel_was_read_opaque() {
        let rgba = |w: u32, h: u32, a: &dyn Fn(u32, u32) -> u8| {
            let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([x as u8, y as u8, 7, a(x, y)]));
            let mut out = Vec::new();
            img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
            out
        };
        // Many colours at once, and the rows read on for the alpha.
        let opaque = png_colours(&rgba(400, 300, &|_, _| 255));
        assert_eq!((opaque.colours, opaque.transparency), (Colours::Many, Transparency::Opaque));
        let last = png_colours(&rgba(400, 300, &|x, y| if (x, y) == (399, 299) { 254 } else { 255 }));
        assert_eq!(last.transparency, Transparency::Transparent);
        // A palette with tRNS is expanded to RGBA as image expands it.
        let trns = png_colours(&fixture("png_palette_trns.png"));
        assert_eq!((trns.colours, trns.transparency), (Colours::Few, Transparency::Transparent));
        // No alpha channel: opaque whatever was read.
        assert_eq!(png_colours(&fixture("reference_chelsea.png")).transparency, Transparency::Opaque);
    }

    #[test]
    fn few_colours_stops_at_the_257th() {
        let rgb: Vec<u8> = (0..=255u8).flat_map(|v| [v, 0, 0]).collect();
        assert!(few_colours(&rgb, 3));
        assert!(!few_colours(&[rgb.as_slice(), &[0, 0, 1]].concat(), 3));
    }
}
