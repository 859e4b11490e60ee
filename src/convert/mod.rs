//! The conversion core: bytes in, WebP out. Plain functions, no actix, no I/O.
//!
//! [`convert`] runs the whole path for one image: size cap → sniff the real format →
//! header limits (pixels in and out, sides, frames, the animation's canvas, working
//! memory against `pipeline.memory_budget_mb`: [`cost`]) → decode → EXIF orientation → optional resize →
//! libwebp encode (still or animated) → ICC/EXIF/XMP chunks. Every failure is a
//! [`ConvertError`] that says what is wrong with the input and carries a stable
//! [`ConvertError::code`] for ledgers, metrics and API responses.

pub mod avif;
mod colours;
pub mod cost;
mod decode;
mod jpeg_frame;
mod many;
mod options;
mod sniff;
mod srgb;
pub mod webp;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

pub use decode::{image_format, netscape_loop_count, webp_loop_count};
pub use many::{Target, convert_targets, fit_targets, targets_cost};
pub use options::{
    ANIMATION_CANVASES, ConvertOptions, FormatOverride, Limits, LosslessPolicy, Oversize, ResizeSpec, SourceFormat,
};
pub use sniff::sniff;

use decode::{Decoded, decode_error, frame_duration_ms};
use webp::{AnimFrame, EncodeConfig, EncodeError, Pixels};

/// WebP's largest side, in pixels.
pub const WEBP_MAX_SIDE: u32 = 16383;

/// Why an image could not be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("input is {size} bytes, over conversion.max_size_mb ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error("not a supported image: {hint}")]
    NotAnImage { hint: String },
    #[error("unsupported image format: {format}")]
    UnsupportedFormat { format: String },
    #[error("{format} decode failed: {message}")]
    Decode { format: SourceFormat, message: String },
    #[error("image has no pixels")]
    EmptyImage,
    #[error("image is {width}x{height} = {} pixels, over the limit of {max} (conversion.max_megapixels)", *width as u64 * *height as u64)]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error(
        "image is {width}x{height}; WebP allows at most 16383 px a side (set conversion.oversize: downscale to fit)"
    )]
    TooWide { width: u32, height: u32 },
    #[error(
        "output would be {width}x{height} = {} pixels, over the limit of {max} (conversion.max_megapixels): ask for a smaller size",
        *width as u64 * *height as u64
    )]
    OutputTooManyPixels { width: u32, height: u32, max: u64 },
    #[error(
        "animation canvas is {width}x{height} = {} pixels; an animation keeps {ANIMATION_CANVASES} canvases at once, so its canvas may have at most {max} (conversion.max_megapixels / {ANIMATION_CANVASES})",
        *width as u64 * *height as u64
    )]
    CanvasTooLarge { width: u32, height: u32, max: u64 },
    #[error(
        "converting needs about {needed_mb} MB of working memory, more than the {work_mb} MB that pipeline.memory_budget_mb ({budget_mb}) leaves for decoding and encoding; raise pipeline.memory_budget_mb to at least {raise_to_mb}"
    )]
    OverMemoryBudget { needed_mb: u64, work_mb: u32, budget_mb: u32, raise_to_mb: u64 },
    #[error("animation has more than {max} frames (conversion.max_frames)")]
    TooManyFrames { max: u32 },
    #[error("decoder limit exceeded: {message}")]
    LimitExceeded { message: String },
    #[error("cancelled: its requester stopped waiting")]
    Cancelled,
    #[error("invalid resize request: {0}")]
    InvalidResize(String),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An output of a width the source is not wider than: never upscaled, not made.
    #[error("the source is {source_width} px wide, not wider than the output's {width} px: no such output is made")]
    NotWider { width: u32, source_width: u32 },
    #[error("this build has no {format} encoder")]
    NoEncoder { format: crate::outputs::Format },
    #[error("an animation gets no {format} output: only stills are encoded to {format}")]
    StillsOnly { format: crate::outputs::Format },
}

impl ConvertError {
    /// Why, as the ledger, the metrics and the API classify it.
    pub fn reason(&self) -> crate::reason::Reason {
        use crate::reason::Reason as R;
        match self {
            Self::Empty => R::EmptyFile,
            Self::TooLarge { .. } => R::TooLarge,
            Self::NotAnImage { .. } => R::NotAnImage,
            Self::UnsupportedFormat { .. } => R::UnsupportedFormat,
            Self::Decode { .. } => R::DecodeFailed,
            Self::EmptyImage => R::EmptyImage,
            Self::TooManyPixels { .. } | Self::OutputTooManyPixels { .. } | Self::CanvasTooLarge { .. } => {
                R::TooManyPixels
            }
            Self::OverMemoryBudget { .. } => R::OverMemoryBudget,
            Self::TooWide { .. } => R::TooWide,
            Self::TooManyFrames { .. } => R::TooManyFrames,
            Self::LimitExceeded { .. } => R::LimitExceeded,
            Self::InvalidResize(_) => R::InvalidResize,
            Self::Cancelled => R::Cancelled,
            Self::Encode(_) | Self::NoEncoder { .. } => R::EncodeFailed,
            Self::NotWider { .. } | Self::StillsOnly { .. } => R::NotApplicable,
        }
    }

    /// [`ConvertError::reason`]'s stable snake_case code.
    pub fn code(&self) -> &'static str {
        self.reason().code()
    }

    /// True when the bytes are no image we can read (as opposed to a limit or encoder failure).
    pub fn is_unsupported_input(&self) -> bool {
        matches!(
            self,
            Self::Empty
                | Self::NotAnImage { .. }
                | Self::UnsupportedFormat { .. }
                | Self::Decode { .. }
                | Self::EmptyImage
        )
    }
}

/// A finished conversion.
#[derive(Debug, Clone)]
pub struct Converted {
    pub webp: Vec<u8>,
    pub format: SourceFormat,
    /// Output size (after orientation and resize).
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub lossless: bool,
    /// The EXIF orientation applied (1 = none).
    pub orientation: u8,
    pub icc: bool,
    /// Decoded megapixels of the source (all frames), for throughput figures.
    pub source_megapixels: f64,
}

/// Converts one image to WebP.
pub fn convert(input: &[u8], opts: &ConvertOptions, resize: Option<ResizeSpec>) -> Result<Converted, ConvertError> {
    convert_cancellable(input, opts, resize, &webp::Cancel::new(false))
}

/// [`convert`], giving up ([`ConvertError::Cancelled`]) once `cancel` is set: between
/// animation frames, and inside a still image's encode.
pub fn convert_cancellable(
    input: &[u8],
    opts: &ConvertOptions,
    resize: Option<ResizeSpec>,
    cancel: &webp::Cancel,
) -> Result<Converted, ConvertError> {
    if input.len() as u64 > opts.limits.max_input_bytes {
        return Err(ConvertError::TooLarge { size: input.len() as u64, max: opts.limits.max_input_bytes });
    }
    if let Some(r) = resize {
        for side in [r.width, r.height].into_iter().flatten() {
            if side == 0 || side > WEBP_MAX_SIDE {
                return Err(ConvertError::InvalidResize(format!("{side} px is outside 1..=16383")));
            }
        }
    }
    let format = sniff(input)?;
    let low_memory = admit_plan(input, resize, opts)?.is_some_and(|p| p.low_memory);
    match decode::decode(input, format, opts)? {
        Decoded::Still(still) => convert_still(still, format, opts, resize, cancel, low_memory),
        Decoded::Animation(anim) => convert_animation(anim, format, opts, resize, cancel),
    }
}

/// Checks every limit that the header alone decides, before any pixel is decoded, and
/// returns the working memory the conversion will need: the pixel cap on the source and
/// on the output (an upscale is allowed, as the Go server does, within the cap), the
/// frame count and the canvas of an animation, and the working memory against the
/// budget. `Ok(None)` when the header cannot be read: the decoder then says why.
///
/// The memory budget's admission calls this too, so an image is refused for the same
/// reason whether a reservation or a converter sees it first.
pub fn admit(input: &[u8], resize: Option<ResizeSpec>, opts: &ConvertOptions) -> Result<Option<u64>, ConvertError> {
    Ok(admit_plan(input, resize, opts)?.map(|p| p.bytes))
}

/// [`admit`], with the whole plan: the bytes and whether libwebp runs with `low_memory`.
fn admit_plan(
    input: &[u8],
    resize: Option<ResizeSpec>,
    opts: &ConvertOptions,
) -> Result<Option<cost::Plan>, ConvertError> {
    match cost::read_header(input) {
        Ok(header) => check_header(&header, resize, opts).map(Some),
        Err(_) => Ok(None),
    }
}

fn check_header(
    h: &cost::Header,
    resize: Option<ResizeSpec>,
    opts: &ConvertOptions,
) -> Result<cost::Plan, ConvertError> {
    let limits = &opts.limits;
    decode::check_pixels(h.width, h.height, limits)?;
    let canvas = u64::from(h.width) * u64::from(h.height);
    if h.is_animation() {
        if h.frames > limits.max_frames {
            return Err(ConvertError::TooManyFrames { max: limits.max_frames });
        }
        if canvas > limits.max_animation_canvas() {
            let max = limits.max_animation_canvas();
            return Err(ConvertError::CanvasTooLarge { width: h.width, height: h.height, max });
        }
        if u64::from(h.frames) * canvas > limits.max_pixels.saturating_mul(10) {
            return Err(animation_over_pixel_budget(limits));
        }
    }
    let (tw, th) = output_size(h.width, h.height, resize, limits)?;
    if u64::from(tw) * u64::from(th) > limits.max_pixels {
        return Err(ConvertError::OutputTooManyPixels { width: tw, height: th, max: limits.max_pixels });
    }
    let plan = cost::plan(h, (tw, th), cost::encoder_for(h, (tw, th), opts), limits.max_work_bytes());
    if plan.bytes > limits.max_work_bytes() {
        return Err(over_memory_budget(plan.bytes, limits.memory_budget_mb));
    }
    Ok(plan)
}

/// The refusal of a conversion needing `needed` bytes under a budget of `budget_mb`.
pub fn over_memory_budget(needed: u64, budget_mb: u32) -> ConvertError {
    ConvertError::OverMemoryBudget {
        needed_mb: needed.div_ceil(cost::MIB),
        work_mb: cost::work_pool_mb(budget_mb),
        budget_mb,
        raise_to_mb: cost::budget_for(needed),
    }
}

fn animation_over_pixel_budget(limits: &Limits) -> ConvertError {
    let pixel_budget = limits.max_pixels.saturating_mul(10);
    ConvertError::LimitExceeded {
        message: format!("animation exceeds {pixel_budget} decoded pixels (10 x conversion.max_megapixels)"),
    }
}

/// The output size after a resize request and the 16383 px rule.
fn output_size(w: u32, h: u32, resize: Option<ResizeSpec>, limits: &Limits) -> Result<(u32, u32), ConvertError> {
    let (tw, th) = resize.and_then(|r| r.target(w, h)).unwrap_or((w, h));
    if tw <= WEBP_MAX_SIDE && th <= WEBP_MAX_SIDE {
        return Ok((tw, th));
    }
    match limits.oversize {
        Oversize::Fail => Err(ConvertError::TooWide { width: tw, height: th }),
        Oversize::Downscale => {
            let scale = f64::from(WEBP_MAX_SIDE) / f64::from(tw.max(th));
            let fit = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, WEBP_MAX_SIDE);
            Ok((fit(tw), fit(th)))
        }
    }
}

fn encode_config(opts: &ConvertOptions, format: SourceFormat, lossless: bool) -> EncodeConfig {
    let (quality, _, near_lossless) = opts.effective(format);
    EncodeConfig {
        quality,
        method: opts.method,
        lossless,
        near_lossless,
        alpha_quality: opts.alpha_quality,
        exact: opts.exact,
        sharp_yuv: opts.sharp_yuv,
        multithread: opts.multithread,
        low_memory: false,
    }
}

fn convert_still(
    still: decode::Still,
    format: SourceFormat,
    opts: &ConvertOptions,
    resize: Option<ResizeSpec>,
    cancel: &webp::Cancel,
    low_memory: bool,
) -> Result<Converted, ConvertError> {
    let (w, h) = still.image.dimensions();
    let source_megapixels = f64::from(w) * f64::from(h) / 1e6;
    let (tw, th) = output_size(w, h, resize, &opts.limits)?;
    let mut image = still.image;
    if (tw, th) != (w, h) {
        image = image.resize_exact(tw, th, FilterType::Lanczos3);
    }
    let has_alpha = image.color().has_alpha();
    let pixels: Vec<u8> = if has_alpha { image.into_rgba8().into_raw() } else { image.into_rgb8().into_raw() };
    let lossless = match opts.effective(format).1 {
        LosslessPolicy::Never => false,
        LosslessPolicy::Always => true,
        LosslessPolicy::Auto => {
            format.is_lossless_source() && colours::few_colours(&pixels, if has_alpha { 4 } else { 3 })
        }
    };
    let px = Pixels { data: &pixels, width: tw, height: th, has_alpha };
    let config = EncodeConfig { low_memory, ..encode_config(opts, format, lossless) };
    let encoded = webp::encode_still(&px, &config, cancel).map_err(|e| {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) { ConvertError::Cancelled } else { e.into() }
    })?;
    let icc = still.metadata.icc.is_some();
    let webp = webp::add_metadata(&encoded, &still.metadata)?;
    Ok(Converted {
        webp,
        format,
        width: tw,
        height: th,
        frames: 1,
        lossless,
        orientation: still.orientation,
        icc,
        source_megapixels,
    })
}

fn convert_animation(
    anim: decode::Animation<'_>,
    format: SourceFormat,
    opts: &ConvertOptions,
    resize: Option<ResizeSpec>,
    cancel: &webp::Cancel,
) -> Result<Converted, ConvertError> {
    let (w, h) = (anim.width, anim.height);
    let (tw, th) = output_size(w, h, resize, &opts.limits)?;
    // GIFs are palette images: `auto` encodes them lossless, as gif2webp does.
    let lossless = !matches!(opts.effective(format).1, LosslessPolicy::Never);
    let max_frames = opts.limits.max_frames;
    // Work cap: decoding and encoding cost grows with frames × pixels.
    let pixel_budget = opts.limits.max_pixels.saturating_mul(10);
    let mut count: u32 = 0;
    let mut limit_error: Option<ConvertError> = None;
    let frames = anim.first.into_iter().map(Ok).chain(anim.rest).map(|frame| {
        count += 1;
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            limit_error = Some(ConvertError::Cancelled);
            return Err(EncodeError("cancelled".into()));
        }
        if count > max_frames {
            limit_error = Some(ConvertError::TooManyFrames { max: max_frames });
            return Err(EncodeError("frame limit".into()));
        }
        if u64::from(count) * u64::from(w) * u64::from(h) > pixel_budget {
            limit_error = Some(animation_over_pixel_budget(&opts.limits));
            return Err(EncodeError("pixel budget".into()));
        }
        let frame = frame.map_err(|e| {
            limit_error = Some(decode_error(format, e));
            EncodeError("decode".into())
        })?;
        let duration_ms = frame_duration_ms(&frame);
        let mut buffer = frame.into_buffer();
        if (tw, th) != (w, h) {
            buffer = image::imageops::resize(&buffer, tw, th, FilterType::Lanczos3);
        }
        Ok((buffer.into_raw(), duration_ms))
    });
    // Frames are decoded, encoded and dropped one at a time.
    let frames = frames.map(|r| r.map(|(rgba, duration_ms)| AnimFrame { rgba, duration_ms }));
    let result = webp::encode_animation(tw, th, frames, anim.loop_count, &encode_config(opts, format, lossless));
    let encoded = match result {
        Ok(v) => v,
        Err(e) => return Err(limit_error.unwrap_or(ConvertError::Encode(e))),
    };
    Ok(Converted {
        webp: encoded,
        format,
        width: tw,
        height: th,
        frames: count,
        lossless,
        orientation: 1,
        icc: false,
        source_megapixels: f64::from(count) * f64::from(w) * f64::from(h) / 1e6,
    })
}

/// Peak signal-to-noise ratio (dB) between two images of one size, over RGB with
/// transparent pixels composited on black: how closely a WebP resembles its source.
/// `None` when the sizes differ; infinity when identical.
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> Option<f64> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let (a, b) = (a.to_rgba8(), b.to_rgba8());
    let mut se = 0f64;
    for (p, q) in a.pixels().zip(b.pixels()) {
        for c in 0..3 {
            let x = f64::from(p[c]) * f64::from(p[3]) / 255.0;
            let y = f64::from(q[c]) * f64::from(q[3]) / 255.0;
            se += (x - y) * (x - y);
        }
    }
    let mse = se / (a.len() as f64 / 4.0 * 3.0);
    Some(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() })
}

/// The decoded pixels of a still WebP as an image (tests and quality checks).
pub fn decode_webp(webp: &[u8]) -> Option<DynamicImage> {
    let (w, h, rgba) = webp::decode_rgba(webp)?;
    image::RgbaImage::from_raw(w, h, rgba).map(DynamicImage::ImageRgba8)
}

#[cfg(test)]
mod tests;
