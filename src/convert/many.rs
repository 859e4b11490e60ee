//! Several outputs of one source (`conversion.outputs`): the source is decoded once and
//! each output encoded from the decoded picture, widths resized from it, largest first.
//!
//! One output that is the plain full-size WebP takes [`super::convert_cancellable`]'s
//! path unchanged. An animation is decoded once per output (its frames stream through
//! the encoder and are not kept). An output whose width the source is not wider than is
//! not made ([`ConvertError::NotWider`]); the others go on. Whatever fails for the
//! source itself (its bytes, its limits) fails every output alike, as the outer error.

use image::GenericImageView;

use super::decode::{self, Decoded};
use super::{ConvertError, ConvertOptions, Converted, ResizeSpec, convert_cancellable, convert_still, cost, webp};
use crate::outputs::Format;

/// One output to make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub format: Format,
    /// Resized to this size (one side: aspect kept).
    pub resize: Option<ResizeSpec>,
    /// Whether it may be larger than the source: an API resize may (as in Go); a
    /// configured width may not, and a source no wider than it gets no such output.
    pub upscale: bool,
    /// Its own quality, over `conversion.quality` and `per_format`.
    pub quality: Option<f32>,
}

impl Target {
    /// The Go server's one output: the full-size WebP at the configured quality.
    pub const WEBP: Target = Target { format: Format::Webp, resize: None, upscale: false, quality: None };

    /// The width it must not exceed the source's, if any.
    fn no_wider_than(&self) -> Option<u32> {
        if self.upscale { None } else { self.resize.and_then(|r| r.width) }
    }

    fn options(&self, opts: &ConvertOptions) -> ConvertOptions {
        let mut o = opts.clone();
        if let Some(q) = self.quality {
            o.quality = q;
            for ov in o.per_format.values_mut() {
                ov.quality = None;
            }
        }
        o
    }
}

impl From<&crate::outputs::OutputSpec> for Target {
    fn from(s: &crate::outputs::OutputSpec) -> Self {
        let resize = s.width.map(|w| ResizeSpec { width: Some(w), height: None });
        Target { format: s.format, resize, upscale: false, quality: s.quality }
    }
}

/// Makes each of `targets` from `input`; the answers in `targets`' order.
pub fn convert_targets(
    input: &[u8],
    opts: &ConvertOptions,
    targets: &[Target],
    cancel: &webp::Cancel,
) -> Result<Vec<Result<Converted, ConvertError>>, ConvertError> {
    if let [only] = targets
        && only.format == Format::Webp
        && only.no_wider_than().is_none()
    {
        return Ok(vec![convert_cancellable(input, &only.options(opts), only.resize, cancel)]);
    }
    if input.len() as u64 > opts.limits.max_input_bytes {
        return Err(ConvertError::TooLarge { size: input.len() as u64, max: opts.limits.max_input_bytes });
    }
    let format = super::sniff(input)?;
    super::admit(input, None, opts)?;
    let header = cost::read_header(input).ok();
    if header.as_ref().is_some_and(|h| h.is_animation()) {
        let (w, _) = header.as_ref().map_or((0, 0), |h| (h.width, h.height));
        return Ok(targets.iter().map(|t| animation_target(input, opts, t, w, cancel)).collect());
    }
    let Decoded::Still(still) = decode::decode(input, format, opts)? else {
        // The header said still but the decoder found frames: one output at a time.
        return Ok(targets.iter().map(|t| animation_target(input, opts, t, u32::MAX, cancel)).collect());
    };
    let (source_width, _) = still.image.dimensions();
    // Largest first: full size, then the widths from the widest down.
    let mut order: Vec<usize> = (0..targets.len()).collect();
    let width = |t: &Target| t.resize.map_or(u32::MAX, |r| r.width.unwrap_or(u32::MAX));
    order.sort_by_key(|&i| std::cmp::Reverse(width(&targets[i])));
    let mut answers: Vec<Option<Result<Converted, ConvertError>>> = vec![None; targets.len()];
    for i in order {
        let t = &targets[i];
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            answers[i] = Some(Err(ConvertError::Cancelled));
            continue;
        }
        if let Some(w) = t.no_wider_than()
            && source_width <= w
        {
            answers[i] = Some(Err(ConvertError::NotWider { width: w, source_width }));
            continue;
        }
        let copy = decode::Still {
            image: still.image.clone(),
            metadata: still.metadata.clone(),
            orientation: still.orientation,
        };
        answers[i] = Some(match t.format {
            Format::Webp => convert_still(copy, format, &t.options(opts), t.resize, cancel, false),
            Format::Avif => encode_avif(copy, format, t, cancel),
        });
    }
    Ok(answers.into_iter().map(|a| a.expect("every target answered")).collect())
}

/// An AVIF of a decoded still: resized as asked, its colours turned into sRGB through its
/// ICC profile ([`super::srgb`]: ravif writes sRGB and embeds no profile), then ravif
/// ([`super::avif`]). EXIF orientation is already applied.
fn encode_avif(
    still: decode::Still,
    format: super::SourceFormat,
    t: &Target,
    cancel: &webp::Cancel,
) -> Result<Converted, ConvertError> {
    let (w, h) = still.image.dimensions();
    let (tw, th) = t.resize.and_then(|r| r.target(w, h)).unwrap_or((w, h));
    let mut image = still.image;
    if (tw, th) != (w, h) {
        image = image.resize_exact(tw, th, image::imageops::FilterType::Lanczos3);
    }
    let has_alpha = image.color().has_alpha();
    let mut pixels: Vec<u8> = if has_alpha { image.into_rgba8().into_raw() } else { image.into_rgb8().into_raw() };
    if let Some(icc) = still.metadata.icc.as_deref() {
        super::srgb::icc_to_srgb(&mut pixels, has_alpha, icc);
    }
    let config = avif_config(t);
    let px = webp::Pixels { data: &pixels, width: tw, height: th, has_alpha };
    let bytes = super::avif::encode_still(&px, &config, cancel).map_err(|e| {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) { ConvertError::Cancelled } else { e.into() }
    })?;
    Ok(Converted {
        webp: bytes,
        format,
        width: tw,
        height: th,
        frames: 1,
        lossless: false,
        orientation: still.orientation,
        icc: false,
        source_megapixels: f64::from(w) * f64::from(h) / 1e6,
    })
}

/// The AVIF encoder's settings for `t`: its quality over the measured default.
fn avif_config(t: &Target) -> super::avif::AvifConfig {
    let default = super::avif::AvifConfig::default();
    super::avif::AvifConfig { quality: t.quality.unwrap_or(default.quality), ..default }
}

/// One output of an animation, decoded afresh.
fn animation_target(
    input: &[u8],
    opts: &ConvertOptions,
    t: &Target,
    source_width: u32,
    cancel: &webp::Cancel,
) -> Result<Converted, ConvertError> {
    if t.format != Format::Webp {
        return Err(ConvertError::StillsOnly { format: t.format });
    }
    if let Some(w) = t.no_wider_than()
        && source_width <= w
    {
        return Err(ConvertError::NotWider { width: w, source_width });
    }
    convert_cancellable(input, &t.options(opts), t.resize, cancel)
}

/// Which of `targets` fit a work pool of `pool` bytes together: when all of them do not,
/// AVIF outputs (the costliest, and never the Go server's) are left out, the largest
/// first, until the rest fit; each left out is answered `OverMemoryBudget` on its own,
/// so a WebP is still made where its AVIF cannot be. Answers the indexes kept and the
/// refusals. The kept may still not fit: then their reservation refuses them all.
pub fn fit_targets(
    input: &[u8],
    opts: &ConvertOptions,
    targets: &[Target],
    pool: u64,
) -> (Vec<usize>, Vec<(usize, ConvertError)>) {
    let mut kept: Vec<usize> = (0..targets.len()).collect();
    let mut refused = Vec::new();
    // One output (the Go default): nothing to choose; its reservation decides.
    if !targets.iter().any(|t| t.format == Format::Avif) || targets.len() == 1 {
        return (kept, refused);
    }
    let cost = |kept: &[usize]| {
        let chosen: Vec<Target> = kept.iter().map(|&i| targets[i]).collect();
        targets_cost(input, opts, &chosen).ok().flatten().unwrap_or(0)
    };
    loop {
        let total = cost(&kept);
        if total <= pool || kept.len() <= 1 {
            break;
        }
        let widest_avif = kept
            .iter()
            .copied()
            .filter(|&i| targets[i].format == Format::Avif)
            .max_by_key(|&i| targets[i].resize.map_or(u32::MAX, |r| r.width.unwrap_or(u32::MAX)));
        let Some(drop) = widest_avif else { break };
        kept.retain(|&i| i != drop);
        let alone = cost(&[drop]).max(total - cost(&kept));
        refused.push((drop, super::over_memory_budget(alone, opts.limits.memory_budget_mb)));
    }
    (kept, refused)
}

/// The working memory making every one of `targets` may need at once: the decoded source
/// (held while each output is encoded) and each output's own conversion — an upper bound,
/// as each output's estimate counts the decode again.
pub fn targets_cost(input: &[u8], opts: &ConvertOptions, targets: &[Target]) -> Result<Option<u64>, ConvertError> {
    if let [only] = targets {
        let Some(cost) = super::admit(input, only.resize, opts)? else { return Ok(None) };
        if only.format == Format::Avif
            && let Ok(header) = cost::read_header(input)
        {
            let (w, h) = only
                .resize
                .and_then(|r| r.target(header.width, header.height))
                .unwrap_or((header.width, header.height));
            return Ok(Some(cost + avif_work_bytes(w, h)));
        }
        return Ok(Some(cost));
    }
    let full = super::admit(input, None, opts)?;
    let (Some(full), Ok(header)) = (full, cost::read_header(input)) else { return Ok(full) };
    // An output no narrower than the source is not made (whichever way it is turned).
    let widest = header.width.max(header.height);
    let mut total = full;
    for t in targets.iter().filter(|t| t.no_wider_than().is_none_or(|w| w < widest)) {
        total += super::admit(input, t.resize, opts)?.unwrap_or(0);
        if t.format == Format::Avif {
            let (w, h) =
                t.resize.and_then(|r| r.target(header.width, header.height)).unwrap_or((header.width, header.height));
            total += avif_work_bytes(w, h);
        }
    }
    Ok(Some(total))
}

/// The AVIF encoder's working memory for a `width`×`height` output (measured:
/// [`cost::avif_work_bytes`]); alpha counted always, as the header does not say.
fn avif_work_bytes(width: u32, height: u32) -> u64 {
    cost::avif_work_bytes(width, height, true, &super::avif::AvifConfig::default())
}
