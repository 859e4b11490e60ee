//! The conversion core over the real fixtures in `testdata/images` (see its README for
//! each file's origin and licence): every format and edge case, every bad input.

use std::path::PathBuf;

use image::DynamicImage;

use super::*;

fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    super::psnr(a, b).expect("same size")
}

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/images").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn opts() -> ConvertOptions {
    ConvertOptions::default()
}

fn ok(name: &str) -> Converted {
    convert(&fixture(name), &opts(), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fail(name: &str, o: &ConvertOptions) -> ConvertError {
    match convert(&fixture(name), o, None) {
        Ok(c) => panic!("{name} converted ({}x{}) but should fail", c.width, c.height),
        Err(e) => e,
    }
}

fn reference(name: &str) -> DynamicImage {
    image::load_from_memory(&fixture(name)).unwrap()
}

/// Every good fixture: converts, decodes, has the listed (displayed) size and frame
/// count, and a still one resembles its source.
#[test]
fn every_good_fixture_converts_to_a_faithful_webp() {
    let manifest = String::from_utf8(fixture("FIXTURES.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[1] != "good" {
            continue;
        }
        let (name, w, h, frames): (&str, u32, u32, u32) =
            (f[0], f[3].parse().unwrap(), f[4].parse().unwrap(), f[5].parse().unwrap());
        let c = ok(name);
        assert_eq!((c.width, c.height), (w, h), "{name}");
        let info = webp::inspect(&c.webp).unwrap_or_else(|| panic!("{name}: output is no WebP"));
        assert_eq!((info.width, info.height), (w, h), "{name}");
        assert_eq!(info.animated, frames > 1, "{name}");
        assert_eq!(c.frames, frames, "{name}");
        if frames == 1 {
            let out = decode_webp(&c.webp).unwrap();
            // Oriented sources compare against the upright ground truth.
            let source = if name.starts_with("jpeg_orient") || name.starts_with("jpeg_exif") {
                reference("orient_upright.png")
            } else {
                reference(name)
            };
            let bound = if c.lossless { 99.0 } else { 27.0 };
            let p = psnr(&source, &out);
            assert!(p > bound, "{name}: PSNR {p:.1} dB <= {bound}");
        }
        checked += 1;
    }
    assert!(checked >= 38, "only {checked} fixtures checked");
}

#[test]
fn exif_orientation_is_applied_for_all_eight_values() {
    let upright = reference("orient_upright.png");
    for n in 1..=8u8 {
        let c = ok(&format!("jpeg_orient{n}.jpg"));
        assert_eq!(c.orientation, n);
        assert_eq!((c.width, c.height), (300, 200), "orientation {n}");
        let p = psnr(&upright, &decode_webp(&c.webp).unwrap());
        assert!(p > 27.0, "orientation {n}: PSNR {p:.1}");
    }
    // A bad orientation value or a corrupt EXIF block leaves the image as stored.
    for name in ["jpeg_exif_bad_orientation.jpg", "jpeg_exif_garbage.jpg"] {
        let c = ok(name);
        assert_eq!(c.orientation, 1, "{name}");
        assert_eq!((c.width, c.height), (300, 200), "{name}");
    }
}

#[test]
fn icc_profile_is_kept_by_default_and_other_metadata_stripped() {
    let c = ok("jpeg_icc.jpg");
    let info = webp::inspect(&c.webp).unwrap();
    assert_eq!(info.icc.as_deref(), Some(&fixture("jpeg_icc.icc")[..]));
    assert!(c.icc);
    let stripped = convert(&fixture("jpeg_icc.jpg"), &ConvertOptions { keep_icc: false, ..opts() }, None).unwrap();
    assert_eq!(webp::inspect(&stripped.webp).unwrap().icc, None);
    // EXIF is dropped unless asked for; when kept, its orientation is reset to 1.
    let c = ok("jpeg_orient6.jpg");
    assert_eq!(webp::inspect(&c.webp).unwrap().exif, None);
    let kept = convert(&fixture("jpeg_orient6.jpg"), &ConvertOptions { keep_exif: true, ..opts() }, None).unwrap();
    let exif = webp::inspect(&kept.webp).unwrap().exif.expect("EXIF kept");
    assert_eq!(image::metadata::Orientation::from_exif_chunk(&exif), Some(image::metadata::Orientation::NoTransforms));
}

#[test]
fn cmyk_jpeg_keeps_its_colours() {
    let c = ok("jpeg_cmyk.jpg");
    let p = psnr(&reference("reference_chelsea.png"), &decode_webp(&c.webp).unwrap());
    assert!(p > 25.0, "CMYK colours off: PSNR {p:.1}");
}

#[test]
fn alpha_survives_from_png_bmp_and_gif() {
    for name in ["png_alpha.png", "png_rgba16.png", "png_graya.png", "png_palette_trns.png", "bmp_rgba32.bmp"] {
        let c = ok(name);
        assert!(webp::inspect(&c.webp).unwrap().has_alpha, "{name} lost its alpha");
    }
    let opaque = ok("jpeg_baseline.jpg");
    assert!(!webp::inspect(&opaque.webp).unwrap().has_alpha);
}

#[test]
fn animated_gifs_keep_frames_delays_and_loop_count() {
    let c = ok("gif_anim_loop3.gif");
    let info = webp::inspect(&c.webp).unwrap();
    assert!(info.animated);
    assert_eq!(info.frames, 4);
    assert_eq!(info.durations, [100, 200, 300, 400]);
    // GIF "repeat 3 times" is 4 plays; WebP counts plays (as gif2webp writes it).
    assert_eq!(info.loop_count, 4);
    let forever = webp::inspect(&ok("gif_anim_loop_forever.gif").webp).unwrap();
    assert_eq!((forever.loop_count, forever.frames), (0, 3));
    assert_eq!(forever.durations, [50, 50, 50]);
    // libwebp may merge identical frames, but the running time is kept.
    let fire = webp::inspect(&ok("gif_animated.gif").webp).unwrap();
    assert_eq!(fire.durations.iter().sum::<u32>(), 33 * 50);
    let welcome = webp::inspect(&ok("gif_animated_transparent.gif").webp).unwrap();
    assert!(welcome.has_alpha && welcome.animated);
}

#[test]
fn the_extension_does_not_decide_the_format() {
    assert_eq!(ok("png_as_jpg.jpg").format, SourceFormat::Png);
    assert_eq!(ok("jpeg_as_png.png").format, SourceFormat::Jpeg);
}

#[test]
fn lossless_auto_picks_lossless_for_graphics_only() {
    assert!(ok("png_palette.png").lossless);
    assert!(ok("gif_static.gif").lossless);
    assert!(!ok("png_rgb.png").lossless, "a photo PNG stays lossy");
    assert!(!ok("jpeg_baseline.jpg").lossless);
    let never = ConvertOptions { lossless: LosslessPolicy::Never, ..opts() };
    assert!(!convert(&fixture("png_palette.png"), &never, None).unwrap().lossless);
    let mut per = opts();
    per.per_format
        .insert(SourceFormat::Png, FormatOverride { lossless: Some(LosslessPolicy::Always), ..Default::default() });
    let c = convert(&fixture("png_rgb.png"), &per, None).unwrap();
    assert!(c.lossless);
    assert!(psnr(&reference("png_rgb.png"), &decode_webp(&c.webp).unwrap()).is_infinite(), "lossless is exact");
}

#[test]
fn quality_and_method_change_the_output() {
    let src = fixture("jpeg_baseline.jpg");
    let low = convert(&src, &ConvertOptions { quality: 30.0, ..opts() }, None).unwrap();
    let high = convert(&src, &ConvertOptions { quality: 95.0, ..opts() }, None).unwrap();
    assert!(low.webp.len() < high.webp.len(), "q30 {} >= q95 {}", low.webp.len(), high.webp.len());
    let near = ConvertOptions { lossless: LosslessPolicy::Always, near_lossless: 60, ..opts() };
    let exact = ConvertOptions { lossless: LosslessPolicy::Always, ..opts() };
    let a = convert(&fixture("png_rgb.png"), &near, None).unwrap();
    let b = convert(&fixture("png_rgb.png"), &exact, None).unwrap();
    assert!(a.webp.len() < b.webp.len(), "near-lossless {} >= lossless {}", a.webp.len(), b.webp.len());
}

#[test]
fn resize_keeps_the_aspect_ratio_with_one_side() {
    let src = fixture("jpeg_baseline.jpg"); // 640x427
    let c = convert(&src, &opts(), Some(ResizeSpec { width: Some(320), height: None })).unwrap();
    assert_eq!((c.width, c.height), (320, 214));
    let c = convert(&src, &opts(), Some(ResizeSpec { width: Some(150), height: Some(150) })).unwrap();
    assert_eq!((c.width, c.height), (150, 150));
    let anim = convert(&fixture("gif_anim_loop3.gif"), &opts(), Some(ResizeSpec { width: Some(32), height: None }));
    let info = webp::inspect(&anim.unwrap().webp).unwrap();
    assert_eq!((info.width, info.height, info.frames), (32, 24, 4));
    let bad = convert(&src, &opts(), Some(ResizeSpec { width: Some(0), height: None })).unwrap_err();
    assert_eq!(bad.code(), "invalid_resize");
}

#[test]
fn every_bad_input_fails_with_its_specific_error() {
    let o = opts();
    assert_eq!(fail("bad/empty.jpg", &o), ConvertError::Empty);
    let text = fail("bad/text.jpg", &o);
    assert_eq!(text.code(), "not_an_image");
    assert!(text.to_string().contains("looks like text"), "{text}");
    assert_eq!(fail("bad/not_image.bmp", &o).code(), "not_an_image");
    for name in ["bad/truncated.jpg", "bad/truncated.png", "bad/corrupt.png", "bad/truncated.gif"] {
        let e = fail(name, &o);
        assert_eq!(e.code(), "decode_failed", "{name}: {e}");
    }
    let bomb = fail("bad/bomb.png", &o);
    assert_eq!(bomb, ConvertError::TooManyPixels { width: 100_000, height: 100_000, max: 100_000_000 });
    assert!(bomb.to_string().contains("100000x100000"));
    let frames = fail("bad/bomb_gif_frames.gif", &o);
    assert_eq!(frames, ConvertError::TooManyFrames { max: 1000 });
    assert_eq!(fail("bad/wide.png", &o), ConvertError::TooWide { width: 20000, height: 4 });
}

#[test]
fn oversize_images_can_be_downscaled_instead() {
    let o = ConvertOptions { limits: Limits { oversize: Oversize::Downscale, ..Limits::default() }, ..opts() };
    let c = convert(&fixture("bad/wide.png"), &o, None).unwrap();
    assert_eq!((c.width, c.height), (16383, 3));
}

#[test]
fn limits_are_checked_before_decoding() {
    let small = |max_input_bytes, max_pixels, max_frames| ConvertOptions {
        limits: Limits { max_input_bytes, max_pixels, max_frames, ..Limits::default() },
        ..opts()
    };
    let src = fixture("jpeg_baseline.jpg");
    let e = convert(&src, &small(1000, 100_000_000, 10), None).unwrap_err();
    assert_eq!(e, ConvertError::TooLarge { size: src.len() as u64, max: 1000 });
    // Exactly at the limit is allowed.
    assert!(convert(&src, &small(src.len() as u64, 100_000_000, 10), None).is_ok());
    let e = convert(&src, &small(1 << 30, 640 * 427 - 1, 10), None).unwrap_err();
    assert_eq!(e.code(), "too_many_pixels");
    let e = convert(&fixture("gif_animated.gif"), &small(1 << 30, 100_000_000, 10), None).unwrap_err();
    assert_eq!(e, ConvertError::TooManyFrames { max: 10 });
}

#[test]
fn lossy_output_is_deterministic() {
    let src = fixture("jpeg_progressive.jpg");
    assert_eq!(convert(&src, &opts(), None).unwrap().webp, convert(&src, &opts(), None).unwrap().webp);
}

#[test]
fn libwebp_threads_do_not_change_the_output() {
    // The converter pool turns libwebp's second thread on when it is otherwise idle.
    let threaded = ConvertOptions { multithread: true, ..opts() };
    for name in ["jpeg_progressive.jpg", "png_alpha.png", "gif_animated.gif"] {
        let src = fixture(name);
        assert_eq!(convert(&src, &opts(), None).unwrap().webp, convert(&src, &threaded, None).unwrap().webp, "{name}");
    }
}

/// A GIF with a `w`×`h` logical screen and `frames` 1×1 frames (the canvas bomb's shape).
fn canvas_gif(w: u16, h: u16, frames: usize) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(w.to_le_bytes());
    g.extend(h.to_le_bytes());
    g.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    for _ in 0..frames {
        g.extend([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
        g.extend([2, 2, 0x44, 0x01, 0]); // one pixel of colour 0
    }
    g.push(0x3B);
    g
}

#[test]
fn resize_upscaling_bomb_is_refused_by_the_output_pixel_cap_before_decoding() {
    let src = fixture("jpeg_baseline.jpg"); // 640x427
    let huge = Some(ResizeSpec { width: Some(16383), height: Some(16383) });
    let e = convert(&src, &opts(), huge).unwrap_err();
    assert_eq!(e, ConvertError::OutputTooManyPixels { width: 16383, height: 16383, max: 100_000_000 });
    assert_eq!(e.code(), "too_many_pixels");
    // Within the cap but not within a small budget: refused, naming the budget to raise.
    let small = ConvertOptions { limits: Limits { memory_budget_mb: 64, ..Limits::default() }, ..opts() };
    let e = convert(&src, &small, Some(ResizeSpec { width: Some(8000), height: Some(8000) })).unwrap_err();
    assert_eq!(e.code(), "over_memory_budget");
    assert!(e.to_string().contains("raise pipeline.memory_budget_mb to at least"), "{e}");
    // An upscale that fits is made, as the Go server makes it.
    let c = convert(&src, &small, Some(ResizeSpec { width: Some(1200), height: None })).unwrap();
    assert_eq!((c.width, c.height), (1200, 801));
}

#[test]
fn gif_canvas_bomb_is_refused_by_its_canvas_not_its_frames() {
    let bomb = canvas_gif(10_000, 10_000, 3);
    let e = convert(&bomb, &opts(), None).unwrap_err();
    assert_eq!(e, ConvertError::CanvasTooLarge { width: 10_000, height: 10_000, max: 33_333_333 });
    assert_eq!(e.code(), "too_many_pixels");
    // A canvas within the cap still needs its canvases' memory: 9 MP is ~380 MB.
    let small = ConvertOptions { limits: Limits { memory_budget_mb: 64, ..Limits::default() }, ..opts() };
    assert_eq!(convert(&canvas_gif(3000, 3000, 3), &small, None).unwrap_err().code(), "over_memory_budget");
    // Frames are counted before decoding: too many frames × canvas is refused at once.
    let many = ConvertOptions { limits: Limits { max_pixels: 1_000_000, ..Limits::default() }, ..opts() };
    let e = convert(&canvas_gif(500, 500, 41), &many, None).unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
    // A small canvas converts, every frame kept.
    let c = convert(&canvas_gif(40, 30, 3), &small, None).unwrap();
    assert_eq!((c.width, c.height, c.frames), (40, 30, 3));
}

#[test]
fn a_cancelled_conversion_stops_with_its_reason() {
    let cancel = webp::Cancel::new(true);
    for name in ["jpeg_baseline.jpg", "gif_animated.gif"] {
        let e = convert_cancellable(&fixture(name), &opts(), None, &cancel).unwrap_err();
        assert_eq!(e, ConvertError::Cancelled, "{name}");
    }
    // Not cancelled: the same call converts.
    assert!(convert_cancellable(&fixture("jpeg_baseline.jpg"), &opts(), None, &webp::Cancel::new(false)).is_ok());
}

#[test]
fn an_avif_is_made_of_the_colours_its_sources_profile_means() {
    use image::ImageEncoder;
    // One picture as a JPEG twice: with a profile that swaps red and green, and without.
    let picture = image::load_from_memory(&fixture("jpeg_baseline.jpg")).unwrap().crop_imm(0, 0, 64, 48).to_rgb8();
    let jpeg = |icc: Option<Vec<u8>>| {
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        if let Some(p) = icc {
            enc.set_icc_profile(p).unwrap();
        }
        enc.write_image(picture.as_raw(), 64, 48, image::ExtendedColorType::Rgb8).unwrap();
        out
    };
    let srgb = [[0.4361, 0.2225, 0.0139], [0.3851, 0.7169, 0.0971], [0.1431, 0.0606, 0.7141]];
    let swapped = super::srgb::tests::matrix_profile([srgb[1], srgb[0], srgb[2]]);
    let avif = Target { format: crate::outputs::Format::Avif, resize: None, upscale: false, quality: None };
    let make = |bytes: &[u8]| {
        let cancel = std::sync::atomic::AtomicBool::new(false);
        convert_targets(bytes, &opts(), &[avif], &cancel).unwrap().remove(0).unwrap().webp
    };
    let (plain, tagged) = (make(&jpeg(None)), make(&jpeg(Some(swapped))));
    // The colours themselves are srgb.rs's tests; here, that the AVIF path applies them.
    assert_ne!(plain, tagged, "the profile was applied before the encode");
}
