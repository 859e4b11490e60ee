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
/// The lossless encoder's per pixel (any picture); it holds its histograms besides
/// ([`TILE_BYTES`]): small truecolour pictures under `lossless: always` peak far above 44
/// bytes a pixel (skimage__chelsea.png, 0.14 MP and 2166 tiles: 23.0 MiB, where 9 were
/// reserved without them).
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
/// This foot is a progressive JPEG's: those peak higher at a given fullness than the
/// baseline ones (mate__Elephants_5640x3172.jpg 9.3 bytes a pixel at 0.22, where
/// mate__Blinds.jpg peaks at 6.0 at 0.20), whether in their tokens or in what zune-jpeg
/// holds besides their coefficients ([`PROGRESSIVE_EXTRA_BPP`]).
const TOKENS_BASE: f64 = 1.0;
/// A baseline JPEG's line: from 0 at fullness 0 to [`BASELINE_MAX_TOKENS`] at 1. The 19
/// baseline JPEGs of the corpus, its noise and upscaled photos all sit under it (the
/// closest: mate__Dune.jpg, 1.9 bytes a pixel of tokens where the line gives 2.5).
const BASELINE_TOKENS_BASE: f64 = 0.0;
/// Noise, which is baseline: 17.4 bytes a pixel of tokens at 6, 16 and 24 MP and at
/// quality 50, 90 and 100 (its peak: 21.7 bytes a pixel and 1.9 MiB); a margin of 0.4.
/// On the line of progressive JPEGs (1.0 to [`MAX_TOKENS`]), mate__Blinds.jpg (fullness
/// 0.20, 1.0 bytes a pixel of tokens) was reserved 21 MiB for a peak of 13.2; here 19.
const BASELINE_MAX_TOKENS: f64 = 17.8;
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
/// lossless (`alpha_quality` 100): the plane as ARGB (4 bytes a pixel) and the palette
/// encode of it (at most 256 values), over every pixel whatever the plane holds, before
/// the token loop (`VP8EncStartAlpha`): PNGs with transparent pixels peak at 37–42
/// bytes a pixel made lossy (mate__Flow.png, mate__Gulp.png; RGBA noise at 36, not the
/// 54 of its tokens and alpha plane together), an opaque RGBA PNG at 6.
const ALPHA_PICTURE_BPP: f64 = 4.0;
/// A lossy encode's fixed part for other sources than JPEG: their decoders' and
/// libwebp's tables (a 32×32 PNG made lossy peaks at 0.6 MiB, a 0.7 MP one at 5.7); with
/// an alpha plane, the lossless encoder's ([`FIXED`]).
const LOSSY_FIXED: u64 = 5 * MIB / 4;
/// libwebp's lossless encode of a picture of at most 256 colours (its palette encode:
/// what `lossless: auto` makes, and a lossy encode's alpha plane), per pixel besides the
/// picture handed to it: its ARGB copy, the hash chain and the cost model's arrays.
/// Measured (examples/memory_peak.rs, `gfx-*` and `--graphic`): flat 64-pixel blocks,
/// whose backward references are few, peak at 15.0 bytes a pixel in all with an RGB
/// picture of 3, past their histograms.
const PALETTE_ENCODER_BPP: f64 = 12.5;
/// The palette encode's backward references and matches at their most: 256-colour noise
/// and 4-colour noise by 64-pixel block peak at 31-35 bytes a pixel in all at 1-16 MP;
/// this is the difference. A picture of long runs holds a share of it ([`refs_share`]).
const PALETTE_REFS_BPP: f64 = 20.0;
/// The share is this many times the share of pixels that start a run (differ from their
/// left neighbour): the line above every graphic measured, 4-colour noise by block the
/// steepest (a run starting at 75% of its pixels, 94.5% of the references' peak).
/// Not the file's size: busy diagonal stripes, which deflate makes 35 KB of 16 MP
/// (0.002 bytes a pixel), peak at noise's 32.5 bytes a pixel.
const REFS_A_CHANGE: f64 = 1.5;
/// libwebp's lossless histograms, per tile of its histogram image (whose side is 2^bits
/// with bits from the method and the size: at most 2600 tiles, [`histogram_tiles`]): two
/// sets of one histogram a tile alive at once (`VP8LGetHistoImageSymbols`' and its
/// caller's), each 3352 bytes and 4 a literal code: 280 and the colour cache's, at most
/// 2^9 with a palette (its size's log2 + 1), 2^10 without. Measured without a cache: the
/// same graphic of 2.66 MP peaks 16.4 MiB higher at 1600×1664 (2600 tiles) than at
/// 1632×1632 (676), 8.9 KiB a tile, which is 2 × (3352 + 4 × 280).
const fn histogram_tile_bytes(cache_bits: u32) -> u64 {
    2 * (3352 + 4 * (280 + (1 << cache_bits)))
}
const PALETTE_TILE_BYTES: u64 = histogram_tile_bytes(9);
const TILE_BYTES: u64 = histogram_tile_bytes(10);
/// With `low_memory` libwebp holds no tokens, only its output: a tenth
/// (24 MP of noise peaks at 139 MiB with it, 498 MiB without).
const LOW_MEMORY_TOKENS: f64 = 0.1;
/// A progressive JPEG's decoder holds, besides its coefficients and output, per pixel.
const PROGRESSIVE_EXTRA_BPP: f64 = 1.0;
/// A JPEG conversion's fixed part: tables, buffers of a row, the encoded file. The
/// smallest JPEGs say how much: mpl__grace_hopper.jpg (0.31 MP) peaks at 3.3 MiB, 0.9
/// above its per-pixel part (it was 0.5, within its peak only by the whole MiB reserved).
const JPEG_FIXED: u64 = MIB;
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
    /// A PNG's pixels that differ from their left neighbour ([`Scan::changes`]), every
    /// pixel counted when its colours are [`Colours::Few`].
    pub changes: u64,
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
    let Scan { colours, transparency, changes } =
        if format == SourceFormat::Png { png_colours(bytes) } else { Scan::default() };
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
        changes,
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

/// Which encode a conversion may make, as far as it is known before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    Lossy,
    /// Lossless, of any picture (`lossless: always`, an animation).
    Lossless,
    /// Lossless of at most 256 colours: libwebp's palette encode (`lossless: auto` on a
    /// graphic whose every pixel was counted).
    Palette,
    /// Either the palette encode or lossy: `auto` where the colours are known only after
    /// decoding (a graphic past [`super::colours::SCAN_PIXELS`], a resized output).
    PaletteOrLossy,
}

/// The encode, libwebp's `method` (which sets the histogram image's tiles) and whether
/// it encodes a lossy picture's alpha plane in a thread beside the tokens
/// (`multithread`) rather than before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    pub encode: Encode,
    pub method: u8,
    pub multithread: bool,
}

impl Encoder {
    /// Lossless or lossy with the default method and threads.
    pub fn of(lossless: bool) -> Self {
        let encode = if lossless { Encode::Lossless } else { Encode::Lossy };
        let defaults = ConvertOptions::default();
        Self { encode, method: defaults.method, multithread: defaults.multithread }
    }
}

/// Peak working memory, in bytes, of converting an image with header `h` into an
/// output of `out` pixels (the size after orientation and resize), encoded lossless
/// when `lossless` (any picture), else lossy.
pub fn working_set(h: &Header, out: (u32, u32), lossless: bool) -> u64 {
    phases(h, out, Encoder::of(lossless), false)
}

/// [`working_set`] for `enc`, the encoder with `low_memory` or not.
fn phases(h: &Header, out: (u32, u32), enc: Encoder, low_memory: bool) -> u64 {
    let (w, hh) = (u64::from(h.width), u64::from(h.height));
    let (tw, th) = (u64::from(out.0), u64::from(out.1));
    let (px_in, px_out) = (w * hh, tw * th);
    let resized = (w, hh) != (tw, th);
    let intermediate = if resized { w * th * RESAMPLE_BPP } else { 0 };
    let lossless = enc.encode != Encode::Lossy;
    let encoder = if lossless { LOSSLESS_ENCODER_BPP } else { LOSSY_ENCODER_BPP };
    if h.is_animation() {
        // Per frame: the decoder's canvases, the resampled frame, the encoder's canvases
        // and its encode of a full-canvas frame.
        let resampled = if resized { intermediate + px_out * 4 } else { 0 };
        let histograms = if lossless { histogram_tiles(out, enc.method, false) * TILE_BYTES } else { 0 };
        return px_in * ANIMATION_INPUT_BPP
            + resampled
            + px_out * (ANIMATION_CANVASES_BPP + encoder)
            + histograms
            + FIXED;
    }
    let dec = h.decoded_bpp;
    let picture = if h.alpha { 4 } else { 3 };
    let lossy = || lossy_phases(h, px_in, out, resized.then_some(intermediate), enc, low_memory);
    // Each phase's buffers alive at once: the decoder's output and its planes (or the
    // orientation's copy); resampling: source, intermediate, output; our 8-bit copy
    // beside the decoded output; the 8-bit picture and the encoder.
    let encode = match enc.encode {
        Encode::Lossy => return lossy(),
        Encode::Lossless => px_out * (picture + encoder) + histogram_tiles(out, enc.method, false) * TILE_BYTES,
        Encode::Palette | Encode::PaletteOrLossy => {
            px_out * picture + palette_encode(h, px_in, out, resized, enc.method)
        }
    };
    let decode = px_in * 2 * dec;
    let resample = if resized { px_in * dec + intermediate + px_out * dec } else { 0 };
    let copy = px_out * (dec + picture);
    let lossless = decode.max(resample).max(copy).max(encode) + FIXED;
    if enc.encode == Encode::PaletteOrLossy { lossless.max(lossy()) } else { lossless }
}

/// libwebp's palette encode of an `out` picture of the image `h` (or of its alpha
/// plane, whose at most 256 values libwebp encodes by palette too): its own buffers, its
/// backward references and matches by the runs of its rows (all of them when resized:
/// the rows then say nothing of the output), its histograms.
fn palette_encode(h: &Header, px_in: u64, out: (u32, u32), resized: bool, method: u8) -> u64 {
    let px_out = u64::from(out.0) * u64::from(out.1);
    let refs = if resized { 1.0 } else { refs_share(h, px_in) };
    let histograms = histogram_tiles(out, method, true) * PALETTE_TILE_BYTES;
    (px_out as f64 * (PALETTE_ENCODER_BPP + PALETTE_REFS_BPP * refs)) as u64 + histograms
}

/// The share of [`PALETTE_REFS_BPP`] that libwebp's lossless encode of `h` holds, 0 to
/// 1, from how many of its pixels start a run ([`REFS_A_CHANGE`]); all of it unless
/// every pixel was read ([`Colours::Few`]).
fn refs_share(h: &Header, px_in: u64) -> f64 {
    if h.colours != Colours::Few {
        return 1.0;
    }
    (REFS_A_CHANGE * h.changes as f64 / px_in.max(1) as f64).min(1.0)
}

/// The tiles of libwebp's histogram image for an `out` picture at `method`, as its
/// `GetHistoBits` chooses them (vp8l_enc.c): a side of 2^(9 − method) with a palette,
/// 2^(7 − method) without, at least 2^2, doubled until at most 2600 tiles (or 2^9).
pub fn histogram_tiles(out: (u32, u32), method: u8, palette: bool) -> u64 {
    let start = if palette { 9 } else { 7 } - i32::from(method.min(6));
    let mut bits = start.clamp(2, 9) as u32;
    let tiles = |bits: u32| {
        let side = |v: u32| u64::from(v).div_ceil(1 << bits);
        side(out.0) * side(out.1)
    };
    while bits < 9 && tiles(bits) > 2600 {
        bits += 1;
    }
    tiles(bits)
}

/// A still made lossy WebP: decoded into its output (a progressive JPEG beside its
/// coefficients, a quarter-turned image beside its turned copy; decoders other than
/// JPEG's and PNG's, unmeasured, beside planes as large); resampled (source,
/// intermediate, output); our 8-bit RGB(A) copy where the decoder gives another layout
/// (a gray or 16-bit image; an 8-bit one is handed over as it is); then the picture,
/// libwebp's YUV(A) planes and its tokens, which follow the file's detail
/// ([`fullness`]); with transparency (or where it may be), the lossless encode of the
/// alpha plane ([`palette_encode`]).
fn lossy_phases(
    h: &Header,
    px_in: u64,
    out: (u32, u32),
    intermediate: Option<u64>,
    enc: Encoder,
    low_memory: bool,
) -> u64 {
    let px_out = u64::from(out.0) * u64::from(out.1);
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
    let planes = JPEG_PICTURE_BPP + if alpha_plane { 1.0 } else { 0.0 };
    let alpha_encode = if alpha_plane {
        (px_out as f64 * ALPHA_PICTURE_BPP) as u64 + palette_encode(h, px_in, out, intermediate.is_some(), enc.method)
    } else {
        0
    };
    let (base, top) = match h.format {
        SourceFormat::Jpeg if h.decoder_bytes == 0 => (BASELINE_TOKENS_BASE, BASELINE_MAX_TOKENS),
        SourceFormat::Jpeg => (TOKENS_BASE, MAX_TOKENS),
        _ => (LOSSLESS_SOURCE_TOKENS_BASE, MAX_TOKENS),
    };
    let tokens = base + (top - base) * fullness(h, px_in);
    let tokens = tokens * if low_memory { LOW_MEMORY_TOKENS } else { 1.0 };
    let tokens = (px_out as f64 * tokens) as u64;
    // libwebp encodes the alpha plane before its token loop, and frees what that took,
    // unless `multithread` runs it in a thread beside the loop.
    let encoded = if enc.multithread { tokens + alpha_encode } else { tokens.max(alpha_encode) };
    let encode = px_out * picture + (px_out as f64 * planes) as u64 + encoded;
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

/// The plan for an image with header `h` made into `out` pixels by `enc`: as fast as
/// possible when that fits `max_work`; with `low_memory` (about twice the time) only
/// when that is the difference between converting and refusing (a lossy encode).
pub fn plan(h: &Header, out: (u32, u32), enc: Encoder, max_work: u64) -> Plan {
    let fast = Plan { bytes: phases(h, out, enc, false), low_memory: false };
    if fast.bytes <= max_work || enc.encode != Encode::Lossy || h.is_animation() {
        return fast;
    }
    let low = Plan { bytes: phases(h, out, enc, true), low_memory: true };
    if low.bytes < fast.bytes { low } else { fast }
}

/// How `opts` may encode the image `h` made into `out` pixels. `auto` decides per image,
/// from its decoded colours: a PNG whose rows showed more than 256 ([`Colours::Many`])
/// is encoded lossy; one whose every pixel was counted and showed at most 256
/// ([`Colours::Few`]) by the palette encode; any other lossless source one or the
/// other, and so is a resized one (resampling makes new colours, and can merge them).
pub fn encoder_for(h: &Header, out: (u32, u32), opts: &ConvertOptions) -> Encoder {
    let encode = match opts.effective(h.format).1 {
        LosslessPolicy::Never => Encode::Lossy,
        LosslessPolicy::Always => Encode::Lossless,
        // Animated GIFs are always lossless under auto, stills when they have few colours.
        LosslessPolicy::Auto if !h.format.is_lossless_source() => Encode::Lossy,
        LosslessPolicy::Auto if h.is_animation() => Encode::Lossless,
        LosslessPolicy::Auto if out != (h.width, h.height) => Encode::PaletteOrLossy,
        LosslessPolicy::Auto => match h.colours {
            Colours::Many => Encode::Lossy,
            Colours::Few => Encode::Palette,
            Colours::Unknown => Encode::PaletteOrLossy,
        },
    };
    Encoder { encode, method: opts.method, multithread: opts.multithread }
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
    Some(plan(&header, out, encoder_for(&header, out, opts), opts.limits.max_work_bytes()))
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
#[path = "cost_tests.rs"]
mod tests;
