//! What the conversion core can be asked to do: encoder settings, per-format policy,
//! limits and metadata handling. Built once from the validated config.

use std::collections::BTreeMap;
use std::fmt;

/// The image formats we convert from, as sniffed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceFormat {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Tiff,
}

impl SourceFormat {
    /// All of them, in a stable order.
    pub const ALL: [SourceFormat; 5] = [Self::Jpeg, Self::Png, Self::Gif, Self::Bmp, Self::Tiff];

    /// The lower-case name used in config and reports (`jpeg`, `png`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
        }
    }

    /// The format a file extension names (case-insensitive), if it is one of ours.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" | "jpe" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "gif" => Some(Self::Gif),
            "bmp" => Some(Self::Bmp),
            "tif" | "tiff" => Some(Self::Tiff),
            _ => None,
        }
    }

    /// Formats whose pixels are stored losslessly, where `lossless: auto` may pick
    /// lossless WebP for graphics.
    pub fn is_lossless_source(self) -> bool {
        !matches!(self, Self::Jpeg)
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When to encode lossless WebP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LosslessPolicy {
    /// Always lossy (the Go server's behaviour).
    Never,
    /// Always lossless.
    Always,
    /// Lossless for graphics: a lossless source (PNG, GIF, BMP, TIFF) with at most 256
    /// distinct colours, where lossless WebP is both exact and smaller; lossy otherwise.
    Auto,
}

impl LosslessPolicy {
    /// Parses `never`/`false`, `always`/`true`, `auto`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "never" | "false" | "no" | "off" => Some(Self::Never),
            "always" | "true" | "yes" | "on" => Some(Self::Always),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// What to do with an image wider or taller than WebP's 16383 px limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Fail with a clear error (the default).
    Fail,
    /// Scale it down to fit, keeping the aspect ratio.
    Downscale,
}

/// Settings one source format may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormatOverride {
    pub quality: Option<f32>,
    pub lossless: Option<LosslessPolicy>,
    pub near_lossless: Option<u8>,
}

/// Caps checked from the header, before any pixel is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Input size cap in bytes (`conversion.max_size_mb`).
    pub max_input_bytes: u64,
    /// Decompression-bomb guard: width × height.
    pub max_pixels: u64,
    /// Most frames an animation may have.
    pub max_frames: u32,
    pub oversize: Oversize,
    /// `pipeline.memory_budget_mb`: a conversion whose working memory exceeds the part
    /// of it left for decoding and encoding is refused (`over_memory_budget`).
    pub memory_budget_mb: u32,
}

/// Canvases an animation keeps alive at once (the decoder's and the encoder's): its
/// canvas counts this many times against the pixel cap.
pub const ANIMATION_CANVASES: u64 = 3;

impl Limits {
    /// The largest working memory, in bytes, one conversion may need.
    pub fn max_work_bytes(&self) -> u64 {
        u64::from(super::cost::work_pool_mb(self.memory_budget_mb)) * super::cost::MIB
    }

    /// The largest canvas (width × height) an animation may have.
    pub fn max_animation_canvas(&self) -> u64 {
        self.max_pixels / ANIMATION_CANVASES
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 50 * 1024 * 1024,
            max_pixels: 100_000_000,
            max_frames: 1000,
            oversize: Oversize::Fail,
            memory_budget_mb: super::cost::DEFAULT_BUDGET_MB,
        }
    }
}

/// Everything [`super::convert`] needs besides the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertOptions {
    /// Lossy quality, 0–100 (default 85, as the Go server).
    pub quality: f32,
    /// Effort, 0 (fast) – 6 (small); default 4, as cwebp.
    pub method: u8,
    pub lossless: LosslessPolicy,
    /// Near-lossless preprocessing for lossless encodes, 0–100 (100 = off).
    pub near_lossless: u8,
    /// Quality of the alpha plane, 0–100.
    pub alpha_quality: u8,
    /// Keep RGB values under fully transparent pixels.
    pub exact: bool,
    /// Sharper (slower) RGB→YUV conversion.
    pub sharp_yuv: bool,
    pub per_format: BTreeMap<SourceFormat, FormatOverride>,
    pub limits: Limits,
    pub keep_icc: bool,
    pub keep_exif: bool,
    pub keep_xmp: bool,
    /// Let libwebp use a second thread for one image (useful when few images are in flight).
    pub multithread: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            quality: 85.0,
            method: 4,
            lossless: LosslessPolicy::Auto,
            near_lossless: 100,
            alpha_quality: 100,
            exact: false,
            sharp_yuv: false,
            per_format: BTreeMap::new(),
            limits: Limits::default(),
            keep_icc: true,
            keep_exif: false,
            keep_xmp: false,
            multithread: false,
        }
    }
}

impl ConvertOptions {
    /// Quality, lossless policy and near-lossless level in force for one source format.
    pub fn effective(&self, format: SourceFormat) -> (f32, LosslessPolicy, u8) {
        let o = self.per_format.get(&format);
        (
            o.and_then(|o| o.quality).unwrap_or(self.quality),
            o.and_then(|o| o.lossless).unwrap_or(self.lossless),
            o.and_then(|o| o.near_lossless).unwrap_or(self.near_lossless),
        )
    }
}

/// A requested output size: one side keeps the aspect ratio, both is exact (as the Go server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeSpec {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl ResizeSpec {
    /// The output size for a `w`×`h` image; `None` when nothing is asked.
    pub fn target(&self, w: u32, h: u32) -> Option<(u32, u32)> {
        let scale = |num: u32, a: u32, b: u32| ((num as u64 * a as u64 + b as u64 / 2) / b as u64).max(1) as u32;
        match (self.width, self.height) {
            (None, None) => None,
            (Some(tw), Some(th)) => Some((tw, th)),
            (Some(tw), None) => Some((tw, scale(tw, h, w))),
            (None, Some(th)) => Some((scale(th, w, h), th)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_aspect_with_one_side_and_is_exact_with_both() {
        let one = ResizeSpec { width: Some(150), height: None };
        assert_eq!(one.target(3000, 2000), Some((150, 100)));
        let other = ResizeSpec { width: None, height: Some(100) };
        assert_eq!(other.target(3000, 2000), Some((150, 100)));
        let both = ResizeSpec { width: Some(150), height: Some(150) };
        assert_eq!(both.target(3000, 2000), Some((150, 150)));
        assert_eq!(ResizeSpec { width: None, height: None }.target(10, 10), None);
        // Never rounds a side down to zero.
        assert_eq!(ResizeSpec { width: Some(1), height: None }.target(10_000, 1), Some((1, 1)));
    }

    #[test]
    fn per_format_overrides_apply_only_to_their_format() {
        let mut o = ConvertOptions::default();
        o.per_format
            .insert(SourceFormat::Png, FormatOverride { lossless: Some(LosslessPolicy::Always), ..Default::default() });
        assert_eq!(o.effective(SourceFormat::Png).1, LosslessPolicy::Always);
        assert_eq!(o.effective(SourceFormat::Jpeg).1, LosslessPolicy::Auto);
        assert_eq!(o.effective(SourceFormat::Jpeg).0, 85.0);
    }

    #[test]
    fn extensions_map_case_insensitively() {
        assert_eq!(SourceFormat::from_extension("JPG"), Some(SourceFormat::Jpeg));
        assert_eq!(SourceFormat::from_extension("tif"), Some(SourceFormat::Tiff));
        assert_eq!(SourceFormat::from_extension("webp"), None);
    }
}
