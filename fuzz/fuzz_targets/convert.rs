//! Fuzzes `ics::convert::convert`: it must return `Ok` or `Err`, never panic, abort or
//! blow up memory. The first two bytes pick the options, the rest is the image.
//!
//! Byte 0: bits 0-1 lossless (auto, never, always, auto), bits 2-3 resize (none,
//! width, height, both), bit 4 oversize downscale, bit 5 keep EXIF, bit 6 keep XMP,
//! bit 7 drop ICC. Byte 1: the requested side, 1-256 px. Limits are small (4 MP,
//! 8 frames, 256 KiB) so the fuzzer spends its time on parsing, not on huge images.
#![no_main]

use ics::convert::{ConvertOptions, Limits, LosslessPolicy, Oversize, ResizeSpec, convert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, image @ ..] = data else { return };
    let opts = ConvertOptions {
        method: 0, // libwebp is not instrumented: spend the time in the decoders.
        lossless: [LosslessPolicy::Auto, LosslessPolicy::Never, LosslessPolicy::Always, LosslessPolicy::Auto]
            [usize::from(a & 3)],
        keep_exif: a & 0x20 != 0,
        keep_xmp: a & 0x40 != 0,
        keep_icc: a & 0x80 == 0,
        limits: Limits {
            max_input_bytes: 256 * 1024,
            max_pixels: 4_000_000,
            max_frames: 8,
            oversize: if a & 0x10 != 0 { Oversize::Downscale } else { Oversize::Fail },
            // Small, so that the budget check is exercised too (4 MP of RGBA at 22 B/px
            // is 88 MB).
            memory_budget_mb: 64,
        },
        ..ConvertOptions::default()
    };
    let side = u32::from(*b) + 1;
    let (width, height) = match (a >> 2) & 3 {
        0 => (None, None),
        1 => (Some(side), None),
        2 => (None, Some(side)),
        _ => (Some(side), Some(u32::from(b.wrapping_mul(7)) + 1)),
    };
    let resize = (width.is_some() || height.is_some()).then_some(ResizeSpec { width, height });
    let _ = convert(image, &opts, resize);
});
