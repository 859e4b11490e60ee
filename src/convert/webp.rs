//! The one safe wrapper around libwebp (`libwebp-sys`, vendored libwebp 1.6.0).
//!
//! Every `unsafe` block of the crate lives here. Still images go through `WebPEncode`
//! with the same settings `cwebp` would use (from the same pixels, equal settings give
//! byte-identical files; JPEG decoders differ slightly in their pixels), animations through `WebPAnimEncoder`, and metadata chunks (ICC, EXIF, XMP)
//! are added with `WebPMux`. Every libwebp allocation is owned by a guard that frees it.

use std::ffi::{CStr, c_int};
use std::ptr;

use libwebp_sys as sys;

/// Encoder settings for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeConfig {
    pub quality: f32,
    pub method: u8,
    pub lossless: bool,
    /// 0–100; 100 = off.
    pub near_lossless: u8,
    pub alpha_quality: u8,
    pub exact: bool,
    pub sharp_yuv: bool,
    pub multithread: bool,
    /// libwebp's `low_memory`: a lossy encode writes its tokens out as it goes instead of
    /// holding them all (a noise photo's tokens are 10+ bytes a pixel) and takes about
    /// twice as long. Set only where it is the difference between converting and
    /// refusing ([`super::cost::plan`]).
    pub low_memory: bool,
}

/// Pixels handed to the encoder: tightly packed RGB or RGBA rows.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub has_alpha: bool,
}

/// One frame of an animation: a full-canvas RGBA picture and how long it shows.
#[derive(Debug, Clone)]
pub struct AnimFrame {
    pub rgba: Vec<u8>,
    pub duration_ms: u32,
}

/// libwebp refused; the message is libwebp's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebP encoding failed: {0}")]
pub struct EncodeError(pub String);

fn err(msg: impl Into<String>) -> EncodeError {
    EncodeError(msg.into())
}

impl EncodeConfig {
    fn to_sys(self) -> Result<sys::WebPConfig, EncodeError> {
        let mut c = sys::WebPConfig::new_with_preset(sys::WebPPreset::WEBP_PRESET_DEFAULT, self.quality)
            .map_err(|_| err("libwebp version mismatch"))?;
        c.method = c_int::from(self.method);
        c.alpha_quality = c_int::from(self.alpha_quality);
        c.exact = c_int::from(self.exact);
        c.use_sharp_yuv = c_int::from(self.sharp_yuv);
        c.thread_level = c_int::from(self.multithread);
        c.low_memory = c_int::from(self.low_memory);
        if self.lossless {
            // As cwebp -lossless -q Q -m M: the lossless preset maps (method, quality).
            c.lossless = 1;
            c.quality = self.quality;
            if self.near_lossless < 100 {
                c.near_lossless = c_int::from(self.near_lossless);
            }
        }
        if unsafe { sys::WebPValidateConfig(&c) } == 0 {
            return Err(err(format!("invalid encoder settings {self:?}")));
        }
        Ok(c)
    }
}

/// A `WebPPicture` that frees its buffers when dropped.
struct Picture(sys::WebPPicture);

impl Picture {
    fn import(px: &Pixels<'_>, use_argb: bool) -> Result<Self, EncodeError> {
        let channels = if px.has_alpha { 4 } else { 3 };
        let expected = px.width as usize * px.height as usize * channels;
        if px.data.len() != expected || px.width == 0 || px.height == 0 {
            return Err(err(format!("pixel buffer is {} bytes, expected {expected}", px.data.len())));
        }
        let mut pic = sys::WebPPicture::new().map_err(|_| err("libwebp version mismatch"))?;
        pic.width = px.width as c_int;
        pic.height = px.height as c_int;
        pic.use_argb = c_int::from(use_argb);
        let mut guard = Picture(pic);
        let stride = (px.width as usize * channels) as c_int;
        // SAFETY: `data` holds exactly width*height*channels bytes (checked above);
        // libwebp copies them into buffers it allocates inside the picture.
        let ok = unsafe {
            if px.has_alpha {
                sys::WebPPictureImportRGBA(&mut guard.0, px.data.as_ptr(), stride)
            } else {
                sys::WebPPictureImportRGB(&mut guard.0, px.data.as_ptr(), stride)
            }
        };
        if ok == 0 {
            return Err(err(format!("cannot import a {}x{} picture (out of memory?)", px.width, px.height)));
        }
        Ok(guard)
    }
}

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised by WebPPictureInit; freeing twice is not possible.
        unsafe { sys::WebPPictureFree(&mut self.0) }
    }
}

/// A `WebPMemoryWriter` that frees its buffer when dropped.
struct MemoryWriter(sys::WebPMemoryWriter);

impl MemoryWriter {
    fn new() -> Self {
        let mut w = sys::WebPMemoryWriter { mem: ptr::null_mut(), size: 0, max_size: 0, pad: [0] };
        // SAFETY: initialises the plain struct in place.
        unsafe { sys::WebPMemoryWriterInit(&mut w) };
        Self(w)
    }

    fn to_vec(&self) -> Vec<u8> {
        if self.0.mem.is_null() {
            return Vec::new();
        }
        // SAFETY: libwebp wrote `size` bytes at `mem`.
        unsafe { std::slice::from_raw_parts(self.0.mem, self.0.size) }.to_vec()
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        // SAFETY: frees the buffer libwebp allocated (null is fine).
        unsafe { sys::WebPMemoryWriterClear(&mut self.0) }
    }
}

/// `WebPData` owned by libwebp, freed on drop.
struct OwnedData(sys::WebPData);

impl OwnedData {
    fn to_vec(&self) -> Vec<u8> {
        if self.0.bytes.is_null() {
            return Vec::new();
        }
        // SAFETY: libwebp filled `size` bytes at `bytes`.
        unsafe { std::slice::from_raw_parts(self.0.bytes, self.0.size) }.to_vec()
    }
}

impl Drop for OwnedData {
    fn drop(&mut self) {
        // SAFETY: the bytes were allocated by libwebp (or are null).
        unsafe { sys::WebPDataClear(&mut self.0) }
    }
}

/// Set by whoever no longer wants a conversion's result (an API request that timed
/// out); libwebp's progress hook reads it, so a still encode stops within a few rows.
pub type Cancel = std::sync::atomic::AtomicBool;

/// libwebp's progress hook: 0 aborts the encode (`VP8_ENC_ERROR_USER_ABORT`).
unsafe extern "C" fn keep_going(_percent: c_int, picture: *const sys::WebPPicture) -> c_int {
    // SAFETY: `user_data` is the `Cancel` that `encode_still` set, borrowed for the
    // whole `WebPEncode` call that invokes this hook.
    let cancel = unsafe { &*((*picture).user_data as *const Cancel) };
    c_int::from(!cancel.load(std::sync::atomic::Ordering::Relaxed))
}

/// Encodes one still image; gives up early once `cancel` is set.
pub fn encode_still(px: &Pixels<'_>, cfg: &EncodeConfig, cancel: &Cancel) -> Result<Vec<u8>, EncodeError> {
    let config = cfg.to_sys()?;
    // As cwebp: ARGB input for lossless (or sharp YUV), direct RGB→YUV import for lossy.
    let mut pic = Picture::import(px, cfg.lossless || cfg.sharp_yuv)?;
    let writer = Box::new(MemoryWriter::new());
    let writer_ptr = Box::into_raw(writer);
    pic.0.writer = Some(sys::WebPMemoryWrite);
    pic.0.custom_ptr = writer_ptr.cast();
    pic.0.progress_hook = Some(keep_going);
    pic.0.user_data = ptr::from_ref(cancel).cast_mut().cast();
    // SAFETY: config is valid; the picture owns its pixels; the writer and `cancel`
    // outlive the call.
    let ok = unsafe { sys::WebPEncode(&config, &mut pic.0) };
    // SAFETY: re-owns the writer leaked above, so it is freed on every path.
    let writer = unsafe { Box::from_raw(writer_ptr) };
    if ok == 0 {
        return Err(err(format!("{:?}", pic.0.error_code)));
    }
    Ok(writer.to_vec())
}

/// Encodes an animation. `loop_count` is WebP's: 0 = forever, n = play n times.
pub fn encode_animation(
    width: u32,
    height: u32,
    frames: impl IntoIterator<Item = Result<AnimFrame, EncodeError>>,
    loop_count: u16,
    cfg: &EncodeConfig,
) -> Result<Vec<u8>, EncodeError> {
    let config = cfg.to_sys()?;
    let mut opts: sys::WebPAnimEncoderOptions = unsafe { std::mem::zeroed() };
    // SAFETY: initialises the options struct for this ABI version.
    if unsafe { sys::WebPAnimEncoderOptionsInitInternal(&mut opts, sys::WebPGetMuxABIVersion()) } == 0 {
        return Err(err("libwebp mux version mismatch"));
    }
    opts.anim_params.loop_count = c_int::from(loop_count);
    // SAFETY: valid options; the returned encoder is owned by the guard below.
    let enc =
        unsafe { sys::WebPAnimEncoderNewInternal(width as c_int, height as c_int, &opts, sys::WebPGetMuxABIVersion()) };
    if enc.is_null() {
        return Err(err(format!("cannot create a {width}x{height} animation encoder")));
    }
    struct Enc(*mut sys::WebPAnimEncoder);
    impl Drop for Enc {
        fn drop(&mut self) {
            // SAFETY: created by WebPAnimEncoderNew, deleted once.
            unsafe { sys::WebPAnimEncoderDelete(self.0) }
        }
    }
    let enc = Enc(enc);
    let anim_error = |enc: &Enc| {
        // SAFETY: the encoder is live; the message is a NUL-terminated static string.
        let msg = unsafe { sys::WebPAnimEncoderGetError(enc.0) };
        if msg.is_null() {
            "unknown error".to_owned()
        } else {
            unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
        }
    };
    let mut timestamp: i64 = 0;
    for frame in frames {
        let frame = frame?;
        let px = Pixels { data: &frame.rgba, width, height, has_alpha: true };
        let mut pic = Picture::import(&px, true)?;
        // SAFETY: live encoder and picture; libwebp copies what it keeps.
        if unsafe { sys::WebPAnimEncoderAdd(enc.0, &mut pic.0, timestamp as c_int, &config) } == 0 {
            return Err(err(anim_error(&enc)));
        }
        timestamp += i64::from(frame.duration_ms);
        if timestamp > i64::from(i32::MAX) {
            return Err(err("animation longer than libwebp's timestamp range"));
        }
    }
    // SAFETY: a null frame marks the end; it sets the last frame's duration.
    if unsafe { sys::WebPAnimEncoderAdd(enc.0, ptr::null_mut(), timestamp as c_int, ptr::null()) } == 0 {
        return Err(err(anim_error(&enc)));
    }
    let mut out = OwnedData(sys::WebPData::default());
    // SAFETY: live encoder; `out` takes ownership of the assembled bytes.
    if unsafe { sys::WebPAnimEncoderAssemble(enc.0, &mut out.0) } == 0 {
        return Err(err(anim_error(&enc)));
    }
    Ok(out.to_vec())
}

/// Metadata chunks to embed.
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
    pub xmp: Option<Vec<u8>>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.icc.is_none() && self.exif.is_none() && self.xmp.is_none()
    }
}

/// Adds ICC / EXIF / XMP chunks to an encoded WebP (still or animated).
pub fn add_metadata(webp: &[u8], meta: &Metadata) -> Result<Vec<u8>, EncodeError> {
    if meta.is_empty() {
        return Ok(webp.to_vec());
    }
    let input = sys::WebPData { bytes: webp.as_ptr(), size: webp.len() };
    // SAFETY: `input` borrows `webp`; copy_data = 1 so the mux owns its copy.
    let mux = unsafe { sys::WebPMuxCreateInternal(&input, 1, sys::WebPGetMuxABIVersion()) };
    if mux.is_null() {
        return Err(err("cannot parse the encoded WebP for metadata"));
    }
    struct Mux(*mut sys::WebPMux);
    impl Drop for Mux {
        fn drop(&mut self) {
            // SAFETY: created by WebPMuxCreate, deleted once.
            unsafe { sys::WebPMuxDelete(self.0) }
        }
    }
    let mux = Mux(mux);
    for (fourcc, chunk) in [(c"ICCP", &meta.icc), (c"EXIF", &meta.exif), (c"XMP ", &meta.xmp)] {
        let Some(bytes) = chunk else { continue };
        let data = sys::WebPData { bytes: bytes.as_ptr(), size: bytes.len() };
        // SAFETY: live mux; copy_data = 1 copies the chunk.
        let rc = unsafe { sys::WebPMuxSetChunk(mux.0, fourcc.as_ptr(), &data, 1) };
        if rc != sys::WebPMuxError::WEBP_MUX_OK {
            return Err(err(format!("cannot add the {} chunk: {rc:?}", fourcc.to_string_lossy())));
        }
    }
    let mut out = OwnedData(sys::WebPData::default());
    // SAFETY: live mux; `out` owns the assembled bytes.
    let rc = unsafe { sys::WebPMuxAssemble(mux.0, &mut out.0) };
    if rc != sys::WebPMuxError::WEBP_MUX_OK {
        return Err(err(format!("cannot assemble the WebP: {rc:?}")));
    }
    Ok(out.to_vec())
}

/// Size and frame facts read back from a WebP, for checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebpInfo {
    pub width: u32,
    pub height: u32,
    pub has_alpha: bool,
    pub animated: bool,
    pub frames: u32,
    pub loop_count: u32,
    /// Each frame's duration in ms (animations only).
    pub durations: Vec<u32>,
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
}

/// Parses a WebP's container: canvas size, frame count, loop count, ICC chunk.
pub fn inspect(webp: &[u8]) -> Option<WebpInfo> {
    let input = sys::WebPData { bytes: webp.as_ptr(), size: webp.len() };
    // SAFETY: `input` borrows `webp` for the mux's lifetime (copy_data = 0, dropped below).
    let mux = unsafe { sys::WebPMuxCreateInternal(&input, 0, sys::WebPGetMuxABIVersion()) };
    if mux.is_null() {
        return None;
    }
    let (mut w, mut h, mut flags, mut n) = (0, 0, 0u32, 0);
    let mut params = sys::WebPMuxAnimParams { bgcolor: 0, loop_count: 0 };
    let mut icc = sys::WebPData::default();
    // SAFETY: live mux; outputs are plain values or borrowed views into `webp`.
    let info = unsafe {
        sys::WebPMuxGetCanvasSize(mux, &mut w, &mut h);
        sys::WebPMuxGetFeatures(mux, &mut flags);
        sys::WebPMuxNumChunks(mux, sys::WebPChunkId::WEBP_CHUNK_ANMF, &mut n);
        let animated = flags & sys::WebPFeatureFlags::ANIMATION_FLAG as u32 != 0;
        if animated {
            sys::WebPMuxGetAnimationParams(mux, &mut params);
        }
        let icc = (sys::WebPMuxGetChunk(mux, c"ICCP".as_ptr(), &mut icc) == sys::WebPMuxError::WEBP_MUX_OK)
            .then(|| std::slice::from_raw_parts(icc.bytes, icc.size).to_vec());
        let mut exif = sys::WebPData::default();
        let exif = (sys::WebPMuxGetChunk(mux, c"EXIF".as_ptr(), &mut exif) == sys::WebPMuxError::WEBP_MUX_OK)
            .then(|| std::slice::from_raw_parts(exif.bytes, exif.size).to_vec());
        let mut durations = Vec::new();
        if animated {
            for nth in 1..=n.max(0) as u32 {
                let mut frame: sys::WebPMuxFrameInfo = std::mem::zeroed();
                if sys::WebPMuxGetFrame(mux, nth, &mut frame) == sys::WebPMuxError::WEBP_MUX_OK {
                    durations.push(frame.duration as u32);
                    // The frame's bitstream is a copy the caller must free.
                    sys::WebPDataClear(&mut frame.bitstream);
                }
            }
        }
        let info = WebpInfo {
            width: w as u32,
            height: h as u32,
            has_alpha: flags & sys::WebPFeatureFlags::ALPHA_FLAG as u32 != 0,
            animated,
            frames: if animated { n as u32 } else { 1 },
            loop_count: params.loop_count as u32,
            durations,
            icc,
            exif,
        };
        sys::WebPMuxDelete(mux);
        info
    };
    Some(info)
}

/// Decodes a still WebP to RGBA (for quality checks in tests and benchmarks).
pub fn decode_rgba(webp: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let (mut w, mut h) = (0, 0);
    // SAFETY: reads `webp`; the returned buffer is freed below after copying.
    unsafe {
        let p = sys::WebPDecodeRGBA(webp.as_ptr(), webp.len(), &mut w, &mut h);
        if p.is_null() {
            return None;
        }
        let v = std::slice::from_raw_parts(p, w as usize * h as usize * 4).to_vec();
        sys::WebPFree(p.cast());
        Some((w as u32, h as u32, v))
    }
}

/// libwebp's version as `major.minor.patch`.
pub fn version() -> String {
    // SAFETY: a plain getter.
    let v = unsafe { sys::WebPGetEncoderVersion() };
    format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
}
