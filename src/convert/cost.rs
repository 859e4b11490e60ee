//! What converting an image will cost in memory, read from its header alone: the
//! figure that `pipeline.memory_budget_mb` admits or refuses before any pixel exists.
//!
//! The cost is the peak of the conversion's phases, each a sum of the buffers alive at
//! once: decoding (the decoder's output and working planes), resizing (source, the
//! resampler's floating-point intermediate, the output) and encoding (our 8-bit copy and
//! libwebp's picture and state). An animation keeps several canvases alive whatever its
//! frame count: the decoder's composited canvas and the frames it yields, and in
//! libwebp's animation encoder the picture, its three canvases (current, previous,
//! previous disposed) and the full-canvas encode of the key frame. So a GIF with a
//! 10000×10000 logical screen costs as much as a 10000×10000 animation, even when its
//! frames are 1×1.

use std::io::Cursor;

use image::{ImageDecoder, ImageReader};

use super::avif::AvifConfig;
use super::colours::{Colours, Scan, Transparency, png_colours};
use super::decode::image_format;
use super::jpeg_frame::{JpegFrame, jpeg_frame};
use super::{ConvertError, ConvertOptions, LosslessPolicy, ResizeSpec, SourceFormat, output_size, sniff};

pub const MIB: u64 = 1 << 20;

/// The budget of [`super::Limits::default`] (the library's callers), and the daemon's
/// only where no memory limit can be read (the daemon's default follows the machine:
/// [`crate::memory_limit`]): the costliest image the default pixel cap admits (100 MP
/// encoded lossless, 44 bytes a pixel: 4.4 GB) fits its work pool.
pub const DEFAULT_BUDGET_MB: u32 = 6144;

/// What libwebp holds per output pixel besides the 8-bit picture handed to it, with the
/// encoded bytes and our copy of them, at most. Measured on noise (the worst case:
/// nothing compresses), 16 MP: a JPEG peaks at 21 bytes a pixel over the process and the
/// file in all (decoder, RGB, lossy encode), a 256-colour RGBA PNG at 40.7 (lossless).
const LOSSY_ENCODER_BPP: u64 = 20;
const LOSSLESS_ENCODER_BPP: u64 = 40;
/// A JPEG's lossy encode, per output pixel: the picture handed to libwebp (YUV 4:2:0)
/// and the encoder's per-macroblock state.
const JPEG_PICTURE_BPP: f64 = 1.6;
/// A lossy encode's tokens and output, per pixel, follow how much detail the image has.
/// Its file says that: how close its bytes a pixel come to those of noise encoded the
/// same way (nothing compresses) — its *fullness*, from a photo's 0.02 to noise's 1. Noise
/// peaks at the same 17 bytes a pixel of tokens whatever the JPEG's quality (50, 90 or
/// 100: measured), and a photo at 0.3 to 2, so the tokens are taken as the line from
/// [`TOKENS_BASE`] at fullness 0 to [`MAX_TOKENS`] at 1: above every measured image, and
/// above any detail in between as long as tokens grow no faster than linearly with it.
const TOKENS_BASE: f64 = 1.0;
/// The same for a PNG (or other lossless source) made lossy: its photos peak higher at
/// the bottom of the line (a wallpaper's gradients and dithering: 2.2 bytes a pixel at a
/// fullness of 0.0001, sway__Sway_Wallpaper_Blue_1920x1080.png).
const LOSSLESS_SOURCE_TOKENS_BASE: f64 = 2.2;
const MAX_TOKENS: f64 = LOSSY_ENCODER_BPP as f64 - JPEG_PICTURE_BPP;
/// A JPEG of noise: 4.09 bytes a pixel at quantiser 1 (quality 100), 1.87 at 11.5 (90),
/// 0.85 at 57.6 (50): `NOISE_JPEG_BPP × quantiser^-NOISE_QUANT_POWER` (fitted so that
/// the corpus's JPEGs stay at or above their peaks and the noise at its).
const NOISE_JPEG_BPP: f64 = 4.09;
const NOISE_QUANT_POWER: f64 = 0.45;
const REFERENCE_QUANT: f64 = 11.5;
/// A PNG (or other lossless source) made lossy: its file against its decoded bytes, to
/// the power [`LOSSLESS_FULLNESS_POWER`] — lossless files keep the grain and gradients a
/// lossy encode drops, so a photo's PNG is a third of its raw size yet has a photo's
/// tokens. Measured on a 4 MP photo with added grain of ±0, 4, 16, 64 and on noise
/// (`scripts/bench-memory.sh`): file/raw 0.28, 0.55, 0.85, 1.0, 1.0 against tokens of
/// 0.6, 0.7, 5.8, 12.8, 17.3 bytes a pixel.
const LOSSLESS_FULLNESS_POWER: f64 = 6.0;
/// A lossy encode of a picture with transparency: libwebp encodes its alpha plane
/// lossless (`alpha_quality` 100), the lossless encoder's buffers over every pixel
/// whatever the plane holds: PNGs with transparent pixels peak at 37–42 bytes a pixel
/// made lossy (mate__Flow.png, mate__Gulp.png), an opaque RGBA PNG at 6.
const ALPHA_ENCODER_BPP: f64 = 36.0;
/// A lossy encode's fixed part for other sources than JPEG: their decoders' and
/// libwebp's tables (a 32×32 PNG made lossy peaks at 0.6 MiB, a 0.7 MP one at 5.7); with
/// an alpha plane, the lossless encoder's ([`FIXED`]).
const LOSSY_FIXED: u64 = 5 * MIB / 4;
/// With `low_memory` libwebp holds no tokens, only its output: a tenth
/// (24 MP of noise peaks at 139 MiB with it, 498 MiB without).
const LOW_MEMORY_TOKENS: f64 = 0.1;
/// A progressive JPEG's decoder holds, besides its coefficients and output, per pixel.
const PROGRESSIVE_EXTRA_BPP: f64 = 1.0;
/// A JPEG conversion's fixed part: tables, buffers of a row, the encoded file.
const JPEG_FIXED: u64 = MIB / 2;
/// Any other conversion's fixed part: libwebp's lossless encoder and animation encoder
/// allocate their histograms and tables whatever the size (a 32×32 PNG peaks at 2.1 MiB).
const FIXED: u64 = 3 * MIB;
/// Bytes per canvas pixel on the decoding side of an animation: the decoder's
/// composited canvas, the frame being handed over and the two read ahead (RGBA each).
const ANIMATION_INPUT_BPP: u64 = 16;
/// Bytes per canvas pixel on the encoding side besides the encode itself: the imported
/// picture and the encoder's three canvases (RGBA each). Measured: a 9 MP canvas of
/// three noise frames peaks at 51.6 bytes a pixel in all (this model: 72 lossless).
const ANIMATION_CANVASES_BPP: u64 = 16;
/// The resampler's intermediate image: RGBA of 32-bit floats.
const RESAMPLE_BPP: u64 = 16;

/// The part of a `memory_budget_mb` left for decoding and encoding (a quarter, at least
/// 1 MiB, holds downloaded files), in MiB.
pub fn work_pool_mb(budget_mb: u32) -> u32 {
    let files = (budget_mb / 4).max(1);
    budget_mb.saturating_sub(files).max(1)
}

/// The smallest `memory_budget_mb` whose work pool holds `bytes`.
pub fn budget_for(bytes: u64) -> u64 {
    let needed = bytes.div_ceil(MIB);
    // The work part is budget − ⌊budget / 4⌋: start just below 4/3 of the need.
    let mut budget = (needed.saturating_mul(4) / 3).saturating_sub(3).max(1);
    while u64::from(work_pool_mb(budget.min(u64::from(u32::MAX)) as u32)) < needed && budget < u64::from(u32::MAX) {
        budget += 1;
    }
    budget
}

/// What the header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: SourceFormat,
    /// As displayed: after the EXIF orientation (a quarter turn swaps the sides).
    pub width: u32,
    pub height: u32,
    /// Bytes a pixel of the decoder's output.
    pub decoded_bpp: u64,
    /// Whether the decoder's output has alpha (the encoder then gets RGBA, else RGB).
    pub alpha: bool,
    /// Image blocks of a GIF (1 for other formats).
    pub frames: u32,
    /// The file's size: how much detail it holds, which the encoder's tokens follow.
    pub file_bytes: u64,
    /// Bytes the decoder holds besides its output: a progressive JPEG's coefficients.
    pub decoder_bytes: u64,
    /// A JPEG's luma quantisation table, summed (64 × its mean; 0 when unknown).
    pub luma_quant: u32,
    /// Whether the orientation turns the image a quarter (a rotated copy is made).
    pub turned: bool,
    /// A PNG's colours and transparency, read from its rows ([`png_colours`]); unknown
    /// for the others.
    pub colours: Colours,
    pub transparency: Transparency,
}

impl Header {
    pub fn is_animation(&self) -> bool {
        self.frames > 1
    }
}

/// Reads the header of `bytes`.
pub fn read_header(bytes: &[u8]) -> Result<Header, ConvertError> {
    let format = sniff(bytes)?;
    let reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
    let mut decoder = reader.into_decoder().map_err(|e| super::decode::decode_error(format, e))?;
    let (mut width, mut height) = decoder.dimensions();
    let decoded_bpp = u64::from(decoder.color_type().bytes_per_pixel());
    let alpha = decoder.color_type().has_alpha();
    let turned = decoder.orientation().map(|o| o.to_exif() >= 5).unwrap_or(false);
    if turned && format != SourceFormat::Gif {
        (width, height) = (height, width);
    }
    let frames = if format == SourceFormat::Gif { gif_frames(bytes) } else { 1 };
    let jpeg = if format == SourceFormat::Jpeg { jpeg_frame(bytes) } else { JpegFrame::default() };
    let file_bytes = bytes.len() as u64;
    let (decoder_bytes, luma_quant) = (jpeg.coefficients, jpeg.luma_quant);
    let Scan { colours, transparency } = if format == SourceFormat::Png { png_colours(bytes) } else { Scan::default() };
    Ok(Header {
        format,
        width,
        height,
        decoded_bpp,
        alpha,
        frames,
        file_bytes,
        decoder_bytes,
        luma_quant,
        turned,
        colours,
        transparency,
    })
}

/// Counts a GIF's image blocks by walking its block structure (lengths only: no pixel
/// is decompressed), so an animation's frame count is known before decoding. A
/// truncated file counts the blocks it has.
pub fn gif_frames(gif: &[u8]) -> u32 {
    let byte = |i: usize| gif.get(i).copied();
    // Skips data sub-blocks from `i`; returns the index after the terminator.
    let sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let len = usize::from(byte(i)?);
            i += 1;
            if len == 0 {
                return Some(i);
            }
            i += len;
        }
    };
    let colour_table = |flags: u8| if flags & 0x80 != 0 { 3usize << ((flags & 7) + 1) } else { 0 };
    let Some(flags) = byte(10) else { return 0 };
    let mut i = 13 + colour_table(flags);
    let mut frames: u32 = 0;
    loop {
        match byte(i) {
            Some(0x2C) => {
                let Some(flags) = byte(i + 9) else { return frames };
                frames = frames.saturating_add(1);
                // Descriptor (10 bytes), local colour table, LZW code size, data.
                match sub_blocks(i + 10 + colour_table(flags) + 1) {
                    Some(next) => i = next,
                    None => return frames,
                }
            }
            Some(0x21) => match sub_blocks(i + 2) {
                Some(next) => i = next,
                None => return frames,
            },
            _ => return frames,
        }
    }
}

/// Peak working memory, in bytes, of converting an image with header `h` into an
/// output of `out` pixels (the size after orientation and resize), encoded lossless
/// when `lossless` (or when it may be: `auto` on a lossless source).
pub fn working_set(h: &Header, out: (u32, u32), lossless: bool) -> u64 {
    phases(h, out, lossless, false)
}

/// [`working_set`], the encoder with `low_memory` or not.
fn phases(h: &Header, out: (u32, u32), lossless: bool, low_memory: bool) -> u64 {
    let (w, hh) = (u64::from(h.width), u64::from(h.height));
    let (tw, th) = (u64::from(out.0), u64::from(out.1));
    let (px_in, px_out) = (w * hh, tw * th);
    let resized = (w, hh) != (tw, th);
    let intermediate = if resized { w * th * RESAMPLE_BPP } else { 0 };
    let encoder = if lossless { LOSSLESS_ENCODER_BPP } else { LOSSY_ENCODER_BPP };
    if h.is_animation() {
        // Per frame: the decoder's canvases, the resampled frame, the encoder's canvases
        // and its encode of a full-canvas frame.
        let resampled = if resized { intermediate + px_out * 4 } else { 0 };
        return px_in * ANIMATION_INPUT_BPP + resampled + px_out * (ANIMATION_CANVASES_BPP + encoder) + FIXED;
    }
    let dec = h.decoded_bpp;
    let picture = if h.alpha { 4 } else { 3 };
    // Each phase's buffers alive at once: the decoder's output and its planes (or the
    // orientation's copy); resampling: source, intermediate, output; our 8-bit copy
    // beside the decoded output; the 8-bit picture and the encoder.
    if !lossless {
        return lossy_phases(h, px_in, px_out, resized.then_some(intermediate), low_memory);
    }
    let decode = px_in * 2 * dec;
    let resample = if resized { px_in * dec + intermediate + px_out * dec } else { 0 };
    let copy = px_out * (dec + picture);
    let encode = px_out * (picture + encoder);
    decode.max(resample).max(copy).max(encode) + FIXED
}

/// A still made lossy WebP: decoded into its output (a progressive JPEG beside its
/// coefficients, a quarter-turned image beside its turned copy; decoders other than
/// JPEG's and PNG's, unmeasured, beside planes as large); resampled (source,
/// intermediate, output); our 8-bit RGB(A) copy where the decoder gives another layout
/// (a gray or 16-bit image; an 8-bit one is handed over as it is); then the picture,
/// libwebp's YUV(A) planes and its tokens, which follow the file's detail
/// ([`fullness`]); with transparency (or where it may be), the lossless encode of the
/// alpha plane.
fn lossy_phases(h: &Header, px_in: u64, px_out: u64, intermediate: Option<u64>, low_memory: bool) -> u64 {
    let dec = h.decoded_bpp;
    let picture = if h.alpha { 4 } else { 3 };
    let mut decode = px_in * dec + if h.turned { px_in * dec } else { 0 };
    match h.format {
        SourceFormat::Jpeg if h.decoder_bytes > 0 => {
            decode += h.decoder_bytes + (px_in as f64 * PROGRESSIVE_EXTRA_BPP) as u64;
        }
        SourceFormat::Jpeg | SourceFormat::Png => {}
        _ => decode += px_in * dec,
    }
    let resample = intermediate.map_or(0, |i| px_in * dec + i + px_out * dec);
    let copy = if dec == picture { 0 } else { px_out * (dec + picture) };
    let alpha_plane = h.alpha && h.transparency != Transparency::Opaque;
    let planes = JPEG_PICTURE_BPP + if alpha_plane { 1.0 + ALPHA_ENCODER_BPP } else { 0.0 };
    let base = if h.format == SourceFormat::Jpeg { TOKENS_BASE } else { LOSSLESS_SOURCE_TOKENS_BASE };
    let tokens = base + (MAX_TOKENS - base) * fullness(h, px_in);
    let tokens = tokens * if low_memory { LOW_MEMORY_TOKENS } else { 1.0 };
    let encode = px_out * picture + (px_out as f64 * (planes + tokens)) as u64;
    let fixed = match h.format {
        _ if alpha_plane => FIXED,
        SourceFormat::Jpeg => JPEG_FIXED,
        _ => LOSSY_FIXED,
    };
    decode.max(resample).max(copy).max(encode) + fixed
}

/// How close the file of the image `h` comes to noise's bytes, 0 to 1: what libwebp's
/// tokens follow ([`TOKENS_BASE`]).
fn fullness(h: &Header, px_in: u64) -> f64 {
    let bytes_a_pixel = h.file_bytes as f64 / px_in.max(1) as f64;
    let fullness = if h.format == SourceFormat::Jpeg {
        let quant = if h.luma_quant == 0 { REFERENCE_QUANT } else { (f64::from(h.luma_quant) / 64.0).max(1.0) };
        bytes_a_pixel / (NOISE_JPEG_BPP * quant.powf(-NOISE_QUANT_POWER))
    } else {
        (bytes_a_pixel / h.decoded_bpp.max(1) as f64).powf(LOSSLESS_FULLNESS_POWER)
    };
    fullness.min(1.0)
}

/// How a conversion will run: the working memory it reserves, and whether libwebp's
/// `low_memory` is needed for it to fit `max_work` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub bytes: u64,
    pub low_memory: bool,
}

/// The plan for an image with header `h` made into `out` pixels: as fast as possible
/// when that fits `max_work`; with `low_memory` (about twice the time) only when that
/// is the difference between converting and refusing.
pub fn plan(h: &Header, out: (u32, u32), lossless: bool, max_work: u64) -> Plan {
    let fast = Plan { bytes: working_set(h, out, lossless), low_memory: false };
    if fast.bytes <= max_work || lossless || h.is_animation() {
        return fast;
    }
    let low = Plan { bytes: phases(h, out, false, true), low_memory: true };
    if low.bytes < fast.bytes { low } else { fast }
}

/// Whether `opts` may encode the image `h` made into `out` pixels lossless. `auto`
/// decides per image, from its decoded colours: a PNG whose rows showed more than 256
/// ([`Colours::Many`]) is encoded lossy, so it is planned lossy; any other lossless
/// source may be lossless, and so is a resized one (resampling makes new colours, and
/// can merge them).
pub fn lossless_for(h: &Header, out: (u32, u32), opts: &ConvertOptions) -> bool {
    match opts.effective(h.format).1 {
        LosslessPolicy::Never => false,
        LosslessPolicy::Always => true,
        // Animated GIFs are always lossless under auto, stills when they have few colours.
        LosslessPolicy::Auto => {
            let photo = h.colours == Colours::Many && !h.is_animation() && out == (h.width, h.height);
            h.format.is_lossless_source() && !photo
        }
    }
}

/// The working memory of converting `bytes` with `resize` under `opts`; `None` when the
/// header cannot be read (the conversion fails before decoding) or asks for a size the
/// limits refuse anyway.
pub fn estimate(bytes: &[u8], resize: Option<ResizeSpec>, opts: &ConvertOptions) -> Option<u64> {
    plan_for(bytes, resize, opts).map(|p| p.bytes)
}

/// [`plan`] for `bytes` under `opts`'s budget; `None` as for [`estimate`].
pub fn plan_for(bytes: &[u8], resize: Option<ResizeSpec>, opts: &ConvertOptions) -> Option<Plan> {
    let header = read_header(bytes).ok()?;
    let out = output_size(header.width, header.height, resize, &opts.limits).ok()?;
    Some(plan(&header, out, lossless_for(&header, out, opts), opts.limits.max_work_bytes()))
}

/// ravif's working memory per pixel of an opaque picture: rav1e's 10-bit 4:4:4 frames
/// (the input, its reconstruction, the lookahead's copies) and its block and token state.
/// Measured with examples/avif_memory.rs at speed 6, one thread (BENCHMARKS.md, "AVIF
/// working memory"): noise peaks at 61-69 bytes a pixel (1, 4, 9 and 16 MP), a smooth
/// picture at 40; plus the opaque RGBA copy an RGB picture is handed over in (4 bytes a
/// pixel, `avif::encode_still`).
const AVIF_BPP: u64 = 76;
/// An alpha channel: ravif's cleaned RGBA copy and a second, 4:0:0 rav1e encode.
const AVIF_ALPHA_BPP: u64 = 28;
/// Each tile thread past the first: its own tile state.
const AVIF_THREAD_FIXED: u64 = 4 * MIB;
/// rav1e's tables and buffers whatever the size.
const AVIF_FIXED: u64 = 8 * MIB;

/// The AVIF encoder's working memory ([`super::avif::encode_still`]) beyond the pixels
/// handed to it, at or above its measured peak RSS (examples/avif_memory.rs).
pub fn avif_work_bytes(width: u32, height: u32, has_alpha: bool, config: &AvifConfig) -> u64 {
    let px = u64::from(width) * u64::from(height);
    let bpp = AVIF_BPP + if has_alpha { AVIF_ALPHA_BPP } else { 0 };
    let threads = config.threads.max(1) as u64;
    px * bpp + AVIF_FIXED + (threads - 1) * AVIF_THREAD_FIXED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header's fields that most tests leave alone.
    const PLAIN: Header = Header {
        format: SourceFormat::Jpeg,
        width: 1,
        height: 1,
        decoded_bpp: 3,
        alpha: false,
        frames: 1,
        file_bytes: 0,
        decoder_bytes: 0,
        luma_quant: 0,
        turned: false,
        colours: Colours::Unknown,
        transparency: Transparency::Unknown,
    };

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_gif_s_frames_are_counted_without_decoding_them() {
        assert_eq!(gif_frames(&fixture("gif_static.gif")), 1);
        let animated = fixture("gif_animated.gif");
        let decoded =
            image::AnimationDecoder::into_frames(image::codecs::gif::GifDecoder::new(Cursor::new(&animated)).unwrap())
                .count() as u32;
        assert_eq!(gif_frames(&animated), decoded);
        assert_eq!(gif_frames(&fixture("bad/bomb_gif_frames.gif")), 10_000);
        // Cut anywhere: never more than the whole file's count, never a panic.
        for cut in (0..animated.len()).step_by(97) {
            assert!(gif_frames(&animated[..cut]) <= decoded);
        }
        assert_eq!(gif_frames(b"GIF89a"), 0);
    }

    #[test]
    fn the_budget_to_raise_holds_the_cost() {
        for bytes in [1, MIB, 47 * MIB + 1, 2200 * MIB] {
            let b = budget_for(bytes);
            assert!(u64::from(work_pool_mb(b as u32)) * MIB >= bytes, "{bytes}: {b}");
            assert!(u64::from(work_pool_mb(b as u32 - 1)) * MIB < bytes || b <= 2, "{bytes}: {b} is not the least");
        }
    }

    #[test]
    fn any_image_within_the_default_pixel_cap_fits_the_default_budget() {
        let limits = super::super::Limits::default();
        let side = (limits.max_pixels as f64).sqrt() as u32;
        let work = u64::from(work_pool_mb(limits.memory_budget_mb)) * MIB;
        assert_eq!(limits.memory_budget_mb, DEFAULT_BUDGET_MB);
        for decoded_bpp in [1, 2, 3, 4, 6, 8] {
            for alpha in [false, true] {
                let still = Header {
                    format: SourceFormat::Png,
                    width: side,
                    height: side,
                    decoded_bpp,
                    alpha,
                    frames: 1,
                    ..PLAIN
                };
                assert!(working_set(&still, (side, side), true) <= work, "{decoded_bpp} bytes a pixel");
            }
        }
        // An animation's canvas counts against the pixel cap once per canvas it keeps.
        let side = (limits.max_animation_canvas() as f64).sqrt() as u32;
        let anim = Header {
            format: SourceFormat::Gif,
            width: side,
            height: side,
            decoded_bpp: 4,
            alpha: true,
            frames: 1000,
            ..PLAIN
        };
        assert!(working_set(&anim, (side, side), true) <= work);
    }

    /// A JPEG header of `w`×`h` whose file has `bytes_a_pixel` at libjpeg's quality 90.
    fn jpeg(w: u32, h: u32, bytes_a_pixel: f64) -> Header {
        let file_bytes = (f64::from(w) * f64::from(h) * bytes_a_pixel) as u64;
        Header { width: w, height: h, file_bytes, luma_quant: 736, ..PLAIN }
    }

    #[test]
    fn an_upscale_costs_its_output_not_its_input() {
        let h = jpeg(640, 427, 0.4);
        let plain = working_set(&h, (640, 427), false);
        let up = working_set(&h, (16383, 16383), false);
        let per_pixel = |bytes: u64, px: u64| (bytes - JPEG_FIXED) as f64 / px as f64;
        assert!((per_pixel(up, 16383 * 16383) - per_pixel(plain, 640 * 427)).abs() < 0.01, "{plain} {up}");
        // A downscale costs what resampling the source costs: source, the resampler's
        // intermediate (a row of the source's width per output row), output.
        let resample = 640 * 427 * 3 + 640 * 214 * RESAMPLE_BPP + 320 * 214 * 3;
        assert_eq!(working_set(&h, (320, 214), false), resample + JPEG_FIXED);
    }

    #[test]
    fn a_jpeg_s_cost_follows_its_detail_and_noise_keeps_the_old_worst_case() {
        // Issue 23: every JPEG reserved 23 bytes a pixel, the cost of noise; a 24 MP
        // photo peaks at 114 MiB, noise at 498 MiB (BENCHMARKS.md, memory).
        let px = 24_000_000;
        let photo = working_set(&jpeg(6000, 4000, 0.069), (6000, 4000), false);
        let noise = working_set(&jpeg(6000, 4000, 1.87), (6000, 4000), false);
        assert!(photo > 114 * MIB && photo < 114 * MIB * 3 / 2, "{}", photo / MIB);
        assert!(noise > 498 * MIB && noise <= px * 23 + JPEG_FIXED, "{}", noise / MIB);
        // Noise is noise at any quality: 6 MP at quality 100 (quantiser 1, 4.09 bytes a
        // pixel) peaks at 126 MiB as at 90 (it was reserved 99).
        let fine_noise = Header { luma_quant: 64, ..jpeg(3000, 2000, 4.09) };
        assert!(working_set(&fine_noise, (3000, 2000), false) > 126 * MIB);
        // The same bytes at a higher quality hold less detail (quantiser 1 against 11.5).
        let fine = Header { luma_quant: 64, ..jpeg(6000, 4000, 0.5) };
        assert!(working_set(&fine, (6000, 4000), false) < working_set(&jpeg(6000, 4000, 0.5), (6000, 4000), false));
        // A progressive JPEG holds its coefficients while it decodes (4:4:4: 6 bytes a pixel).
        let progressive = Header { decoder_bytes: px * 6, ..jpeg(6000, 4000, 0.069) };
        assert!(working_set(&progressive, (6000, 4000), false) >= px * 9);
        // Lossless (`lossless: always`) keeps the lossless encoder's cost.
        assert_eq!(working_set(&jpeg(6000, 4000, 0.069), (6000, 4000), true), px * 43 + FIXED);
    }

    #[test]
    fn a_png_photo_under_auto_fits_a_budget_that_its_lossless_encode_would_not() {
        // Issue 23: every PNG was reserved the lossless encoder's 44 bytes a pixel, so a
        // 4 MP photo (171 MiB) was refused under a budget of 64 (48 MiB of work) although
        // its lossy encode peaks near 20. Its rows show many colours: planned lossy.
        let photo = image::open(format!("{}/testdata/images/reference_chelsea.png", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .resize_exact(2448, 1632, image::imageops::FilterType::Triangle)
            .into_rgb8();
        let mut png = Vec::new();
        photo.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let limits = super::super::Limits { memory_budget_mb: 64, ..Default::default() };
        let opts = ConvertOptions { limits, ..Default::default() };
        let h = read_header(&png).unwrap();
        assert_eq!(h.colours, Colours::Many);
        assert!(working_set(&h, (2448, 1632), true) > opts.limits.max_work_bytes());
        let planned = plan_for(&png, None, &opts).unwrap().bytes;
        assert!(planned < 32 * MIB, "{}", planned / MIB);
        let converted = super::super::convert(&png, &opts, None).unwrap();
        assert!(!converted.lossless);
        // Lossless asked for: refused with the budget to raise, as before.
        let always = ConvertOptions { lossless: LosslessPolicy::Always, ..opts };
        let refused = super::super::convert(&png, &always, None).unwrap_err();
        assert_eq!(refused.code(), "over_memory_budget");
    }

    #[test]
    fn the_avif_estimate_stays_at_or_above_the_measured_peaks() {
        // (width, height, alpha, peak MiB) from examples/avif_memory.rs, noise, speed 6,
        // one thread, RGB handed over as opaque RGBA: the worst of each size
        // (BENCHMARKS.md, "AVIF working memory").
        let c = AvifConfig::default();
        for (w, h, alpha, peak) in [
            (1225, 816, false, 74.7),
            (2449, 1633, false, 279.6),
            (3674, 2449, false, 629.3),
            (4899, 3266, false, 995.1),
        ] {
            let estimate = avif_work_bytes(w, h, alpha, &c) as f64 / MIB as f64;
            assert!(estimate >= peak, "{w}x{h}: {estimate:.1} MiB under the measured {peak} MiB");
            assert!(estimate < peak * 1.25, "{w}x{h}: {estimate:.1} MiB far over {peak} MiB");
        }
        assert!(avif_work_bytes(100, 100, true, &c) > avif_work_bytes(100, 100, false, &c));
        let two = AvifConfig { threads: 2, ..c };
        assert!(avif_work_bytes(100, 100, false, &two) > avif_work_bytes(100, 100, false, &c));
    }

    #[test]
    fn low_memory_is_planned_only_where_it_is_the_difference_between_converting_and_refusing() {
        let noise = jpeg(6000, 4000, 1.87);
        let fast = working_set(&noise, (6000, 4000), false);
        assert_eq!(plan(&noise, (6000, 4000), false, fast), Plan { bytes: fast, low_memory: false });
        let low = plan(&noise, (6000, 4000), false, fast - 1);
        assert!(low.low_memory && low.bytes < fast / 3, "{low:?} against {fast}");
        // Lossless encodes and animations have no such mode: the fast plan (then refused).
        assert!(!plan(&noise, (6000, 4000), true, MIB).low_memory);
        let anim = Header { format: SourceFormat::Gif, frames: 3, decoded_bpp: 4, alpha: true, ..noise };
        assert!(!plan(&anim, (6000, 4000), false, MIB).low_memory);
    }
}
