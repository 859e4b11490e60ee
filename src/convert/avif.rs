//! AVIF stills through ravif (rav1e, pure Rust: no nasm, cmake or system library).
//!
//! The encoder was chosen by measurement (BENCHMARKS.md, "AVIF: which encoder"): bytes
//! at equal SSIMULACRA2 and CPU seconds per megapixel against libavif with libaom and
//! SVT-AV1, over the photo corpus. ravif writes 10-bit 4:4:4 AV1 in a minimal AVIF
//! container; an alpha channel is a second AV1 image (its own quality), and an RGBA
//! picture whose pixels are all opaque is written without one.
//!
//! Stills only: ravif has no animation (AVIS) encoder, so an animation gets no AVIF.
//! Cancellation: rav1e encodes a still frame in one call that cannot be interrupted, so
//! `cancel` is read before the encode starts (nothing is spent) and after it ends (the
//! result is thrown away); a cancel in between waits for the frame.

use std::sync::atomic::Ordering;

use rgb::FromSlice;

use super::webp::{Cancel, EncodeError, Pixels};

/// AV1's largest frame side (its frame size fields are 16 bits).
pub const MAX_SIDE: u32 = 65_536;

/// Encoder settings for one AVIF still.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvifConfig {
    /// 0..=100 (ravif's scale, which starts at 1: below 1 is taken as 1).
    pub quality: f32,
    /// rav1e's speed preset, 1 (slowest, smallest) ..= 10 (fastest).
    pub speed: u8,
    /// The alpha channel's quality, 0..=100, as `quality`.
    pub alpha_quality: f32,
    /// rav1e's tile threads for this encode; 0 or 1 = one thread.
    pub threads: usize,
}

impl Default for AvifConfig {
    /// Measured on six corpus photos (BENCHMARKS.md, "AVIF: which encoder"): speed 6,
    /// quality 82 is at least 25% smaller than the default WebP (quality 85, method 4) at
    /// a mean SSIMULACRA2 within a point of it; quality 80 was 1.36 points below. One
    /// thread, as the pool runs one conversion a core (two cost the same CPU seconds).
    fn default() -> Self {
        Self { quality: 82.0, speed: 6, alpha_quality: 90.0, threads: 1 }
    }
}

fn err(msg: impl std::fmt::Display) -> EncodeError {
    EncodeError(format!("AVIF: {msg}"))
}

impl AvifConfig {
    /// Refuses what ravif would panic on or misread, naming the setting.
    fn check(&self) -> Result<(), EncodeError> {
        for (name, q) in [("quality", self.quality), ("alpha_quality", self.alpha_quality)] {
            if !(0.0..=100.0).contains(&q) {
                return Err(err(format!("{name} {q} is outside 0..=100")));
            }
        }
        if !(1..=10).contains(&self.speed) {
            return Err(err(format!("speed {} is outside 1..=10", self.speed)));
        }
        Ok(())
    }

    fn encoder(&self) -> ravif::Encoder<'static> {
        ravif::Encoder::new()
            .with_quality(self.quality.max(1.0))
            .with_alpha_quality(self.alpha_quality.max(1.0))
            .with_speed(self.speed)
            .with_num_threads(Some(self.threads.max(1)))
    }
}

/// Encodes one still picture (RGB or RGBA, sRGB, already oriented and resized). Stops
/// early with an error when `cancel` is set before the encode starts; a cancel during
/// the encode is seen when it ends (see the module's doc).
pub fn encode_still(px: &Pixels<'_>, config: &AvifConfig, cancel: &Cancel) -> Result<Vec<u8>, EncodeError> {
    config.check()?;
    let channels = if px.has_alpha { 4 } else { 3 };
    let expected = px.width as usize * px.height as usize * channels;
    if px.width == 0 || px.height == 0 || px.data.len() != expected {
        return Err(err(format!(
            "pixel buffer is {} bytes for {}x{}x{channels}, expected {expected}",
            px.data.len(),
            px.width,
            px.height
        )));
    }
    if px.width > MAX_SIDE || px.height > MAX_SIDE {
        return Err(err(format!("{}x{} is over AV1's largest side, {MAX_SIDE}", px.width, px.height)));
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(err("cancelled before encoding"));
    }
    let (w, h) = (px.width as usize, px.height as usize);
    let encoder = config.encoder();
    // RGB goes through `encode_rgba` too, with every pixel opaque (ravif then writes no
    // alpha: the same file as `encode_rgb`'s, `rgb_and_opaque_rgba_make_the_same_file`).
    // `encode_rgb` is `#[inline]` and generic below, so all of rav1e's encoder would be
    // compiled in this crate, at its opt-level: in a dev build (the tests) unoptimised,
    // 10-20x slower (a 1.5 MP photo: 81 s against 4). `encode_rgba` is compiled in ravif.
    let rgba: Vec<rgb::RGBA8>;
    let pixels = if px.has_alpha {
        px.data.as_rgba()
    } else {
        rgba = px.data.as_rgb().iter().map(|p| p.with_alpha(255)).collect();
        &rgba[..]
    };
    let encoded = encoder
        .encode_rgba(ravif::Img::new(pixels, w, h))
        .map_err(|e| err(format!("{}x{}: {e}", px.width, px.height)))?;
    if cancel.load(Ordering::Relaxed) {
        return Err(err("cancelled while encoding"));
    }
    Ok(encoded.avif_file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn fixture(name: &str) -> image::DynamicImage {
        let path = format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"));
        image::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn rgb(img: &image::DynamicImage) -> (Vec<u8>, u32, u32) {
        let rgb = img.to_rgb8();
        (rgb.as_raw().clone(), rgb.width(), rgb.height())
    }

    fn encode(data: &[u8], width: u32, height: u32, has_alpha: bool) -> Result<Vec<u8>, EncodeError> {
        let px = Pixels { data, width, height, has_alpha };
        encode_still(&px, &AvifConfig::default(), &AtomicBool::new(false))
    }

    /// The payload of every box of type `kind` anywhere in `file` (ISO BMFF), walking the
    /// containers an AVIF's item properties sit in.
    fn boxes<'a>(file: &'a [u8], kind: &[u8; 4]) -> Vec<&'a [u8]> {
        fn walk<'a>(mut b: &'a [u8], kind: &[u8; 4], out: &mut Vec<&'a [u8]>) {
            while b.len() >= 8 {
                let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
                assert!(size >= 8 && size <= b.len(), "a box of {size} bytes in {} left", b.len());
                let (tag, body) = (&b[4..8], &b[8..size]);
                if tag == kind {
                    out.push(body);
                }
                match tag {
                    // `meta` is a full box: 4 bytes of version and flags before its children.
                    b"meta" => walk(&body[4..], kind, out),
                    b"iprp" | b"ipco" => walk(body, kind, out),
                    _ => {}
                }
                b = &b[size..];
            }
        }
        let mut out = Vec::new();
        walk(file, kind, &mut out);
        out
    }

    /// The image size every `ispe` property gives (full box: version/flags, width, height).
    fn ispe(file: &[u8]) -> Vec<(u32, u32)> {
        boxes(file, b"ispe")
            .iter()
            .map(|b| {
                (u32::from_be_bytes(b[4..8].try_into().unwrap()), u32::from_be_bytes(b[8..12].try_into().unwrap()))
            })
            .collect()
    }

    const ALPHA_URN: &[u8] = b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha";

    fn assert_avif(file: &[u8], width: u32, height: u32) {
        let ftyp = boxes(file, b"ftyp");
        assert_eq!(ftyp.len(), 1, "one ftyp box");
        assert_eq!(&ftyp[0][..4], b"avif", "major brand");
        assert!(!ispe(file).is_empty(), "an ispe property");
        assert!(ispe(file).iter().all(|&s| s == (width, height)), "ispe {:?} for {width}x{height}", ispe(file));
        assert!(!boxes(file, b"av1C").is_empty(), "an AV1 codec configuration");
        assert_eq!(boxes(file, b"mdat").len(), 1, "one media data box");
    }

    #[test]
    fn a_real_photo_encodes_to_an_avif_of_its_size_and_far_fewer_bytes() {
        let (data, w, h) = rgb(&fixture("jpeg_baseline.jpg"));
        let avif = encode(&data, w, h, false).unwrap();
        assert_avif(&avif, w, h);
        assert!(boxes(&avif, b"auxC").is_empty(), "no alpha item for RGB");
        // 640x427 RGB is 820 KB; the JPEG is 112 KB; the default AVIF is far below both.
        assert!(avif.len() < 60_000, "{} bytes", avif.len());
    }

    #[test]
    fn alpha_is_kept_as_an_auxiliary_image() {
        let img = fixture("png_alpha.png").to_rgba8();
        assert!(img.pixels().any(|p| p[3] < 255), "the fixture has transparent pixels");
        let avif = encode(img.as_raw(), img.width(), img.height(), true).unwrap();
        assert_avif(&avif, img.width(), img.height());
        assert_eq!(boxes(&avif, b"av1C").len(), 2, "colour (4:4:4) and alpha (4:0:0) AV1 configurations");
        let aux = boxes(&avif, b"auxC");
        assert_eq!(aux.len(), 1, "one auxiliary type property");
        assert!(aux[0].windows(ALPHA_URN.len()).any(|w| w == ALPHA_URN), "the auxiliary image is alpha");
    }

    #[test]
    fn rgb_and_opaque_rgba_make_the_same_file() {
        // encode_still hands RGB to ravif's encode_rgba (see there): the file must be what
        // encode_rgb writes. A crop, as encode_rgb is compiled unoptimised in test builds.
        let crop = fixture("jpeg_baseline.jpg").crop_imm(100, 100, 96, 64);
        let (data, w, h) = rgb(&crop);
        let ours = encode(&data, w, h, false).unwrap();
        let theirs = AvifConfig::default()
            .encoder()
            .encode_rgb(ravif::Img::new(data.as_rgb(), w as usize, h as usize))
            .unwrap()
            .avif_file;
        assert!(ours == theirs, "{} bytes against ravif's encode_rgb {}", ours.len(), theirs.len());
    }

    #[test]
    fn an_opaque_rgba_picture_is_written_without_alpha() {
        let img = fixture("jpeg_baseline.jpg").to_rgba8();
        let avif = encode(img.as_raw(), img.width(), img.height(), true).unwrap();
        assert_avif(&avif, img.width(), img.height());
        assert!(boxes(&avif, b"auxC").is_empty());
    }

    #[test]
    fn a_1x1_and_odd_sized_pictures_encode() {
        assert_avif(&encode(&[200, 30, 90], 1, 1, false).unwrap(), 1, 1);
        assert_avif(&encode(&[200, 30, 90, 128], 1, 1, true).unwrap(), 1, 1);
        let odd = fixture("jpeg_baseline.jpg").crop_imm(7, 3, 333, 211);
        let (data, w, h) = rgb(&odd);
        assert_avif(&encode(&data, w, h, false).unwrap(), 333, 211);
    }

    #[test]
    fn a_cancel_set_before_the_encode_stops_it_at_once() {
        let (data, width, height) = rgb(&fixture("jpeg_baseline.jpg"));
        let px = Pixels { data: &data, width, height, has_alpha: false };
        let e = encode_still(&px, &AvifConfig::default(), &AtomicBool::new(true)).unwrap_err();
        assert!(e.0.contains("cancelled before encoding"), "{e}");
    }

    #[test]
    fn a_cancel_set_during_the_encode_discards_its_result() {
        // The photo (0.27 MP) takes most of a second to encode (2.7 CPU s a megapixel in
        // release); the cancel comes 100 ms after both threads meet just before the call,
        // so neither a slow start (the cancel seen before the encode) nor a fast encode
        // (done before the cancel) is likely even on a loaded machine.
        let (data, width, height) = rgb(&fixture("jpeg_baseline.jpg"));
        let cancel = Arc::new(AtomicBool::new(false));
        let start = Arc::new(std::sync::Barrier::new(2));
        let setter = {
            let (cancel, start) = (Arc::clone(&cancel), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                std::thread::sleep(std::time::Duration::from_millis(100));
                cancel.store(true, Ordering::Relaxed);
            })
        };
        let px = Pixels { data: &data, width, height, has_alpha: false };
        let config = AvifConfig::default();
        start.wait();
        let e = encode_still(&px, &config, &cancel).unwrap_err();
        setter.join().unwrap();
        assert!(e.0.contains("cancelled while encoding"), "{e}");
    }

    #[test]
    fn bad_settings_and_buffers_are_refused_with_what_is_wrong() {
        let px = Pixels { data: &[1, 2, 3], width: 1, height: 1, has_alpha: false };
        let no = AtomicBool::new(false);
        let refuse = |c: AvifConfig| encode_still(&px, &c, &no).unwrap_err().to_string();
        assert!(
            refuse(AvifConfig { quality: 101.0, ..AvifConfig::default() }).contains("quality 101 is outside 0..=100")
        );
        assert!(refuse(AvifConfig { quality: f32::NAN, ..AvifConfig::default() }).contains("quality NaN"));
        assert!(refuse(AvifConfig { alpha_quality: -1.0, ..AvifConfig::default() }).contains("alpha_quality -1"));
        assert!(refuse(AvifConfig { speed: 0, ..AvifConfig::default() }).contains("speed 0 is outside 1..=10"));
        assert!(refuse(AvifConfig { speed: 11, ..AvifConfig::default() }).contains("speed 11"));
        let short = Pixels { data: &[1, 2], width: 1, height: 1, has_alpha: false };
        let e = encode_still(&short, &AvifConfig::default(), &no).unwrap_err().to_string();
        assert!(e.contains("pixel buffer is 2 bytes for 1x1x3, expected 3"), "{e}");
        let empty = Pixels { data: &[], width: 0, height: 5, has_alpha: false };
        assert!(encode_still(&empty, &AvifConfig::default(), &no).is_err());
    }

    #[test]
    fn quality_0_is_ravifs_lowest_and_threads_0_is_one_thread() {
        let (data, width, height) = rgb(&fixture("jpeg_orient1.jpg"));
        let px = Pixels { data: &data, width, height, has_alpha: false };
        let no = AtomicBool::new(false);
        let at = |quality: f32, threads: usize| {
            encode_still(&px, &AvifConfig { quality, threads, ..AvifConfig::default() }, &no).unwrap()
        };
        assert_eq!(at(0.0, 1), at(1.0, 1));
        assert_eq!(at(70.0, 0), at(70.0, 1));
        assert!(at(1.0, 1).len() < at(90.0, 1).len());
    }
}
