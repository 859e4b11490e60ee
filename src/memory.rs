//! Admission by memory: images reserve what they will take from `pipeline.memory_budget_mb`
//! before they take it, and give it back when their WebP is made.
//!
//! A count of images in flight bounds nothing when one 100 MP photo needs the memory of
//! a thousand thumbnails; reserving by pixels does. The budget has two pools, so that
//! waiting in one never blocks the other (no deadlock):
//! - **files** (a quarter): a source's listed size, reserved before it is downloaded;
//! - **work** (the rest): its decode and encode, [`bytes_per_pixel`] × pixels, read from
//!   the header once downloaded and reserved before decoding.
//!
//! A cost larger than its whole pool takes all of it and runs alone. Reservations queue
//! in FIFO order, so a big image is not starved by a stream of small ones. Peak RSS is
//! then at most the process's own ~100 MB plus the budget — provided freed pixel buffers
//! go back to the OS, which [`return_large_frees_to_the_os`] sees to.

use std::io::Cursor;
use std::sync::Arc;

use image::ImageReader;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::convert::{SourceFormat, image_format, sniff};

const MIB: u64 = 1 << 20;

/// One pool, in MiB units.
#[derive(Debug, Clone)]
struct Pool {
    units: Arc<Semaphore>,
    total: u32,
}

impl Pool {
    fn new(megabytes: u32) -> Self {
        let total = megabytes.max(1);
        Self { units: Arc::new(Semaphore::new(total as usize)), total }
    }

    async fn take(&self, bytes: u64) -> OwnedSemaphorePermit {
        let units = bytes.div_ceil(MIB).clamp(1, u64::from(self.total)) as u32;
        self.units.clone().acquire_many_owned(units).await.expect("the semaphore is never closed")
    }

    fn reserved_bytes(&self) -> u64 {
        u64::from(self.total - self.units.available_permits() as u32) * MIB
    }
}

/// The shared budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    files: Pool,
    work: Pool,
}

/// A downloaded (or downloading) source's share of the budget.
#[derive(Debug)]
pub struct FileReservation {
    _permit: OwnedSemaphorePermit,
}

/// Everything one image holds while it converts; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _file: Option<FileReservation>,
    _work: OwnedSemaphorePermit,
}

impl MemoryBudget {
    pub fn new(megabytes: u32) -> Self {
        let files = (megabytes / 4).max(1);
        Self { files: Pool::new(files), work: Pool::new(megabytes.saturating_sub(files).max(1)) }
    }

    /// Waits until a file of `size` bytes may be downloaded.
    pub async fn reserve_file(&self, size: u64) -> FileReservation {
        FileReservation { _permit: self.files.take(size).await }
    }

    /// Waits until the image in `bytes` may be decoded and encoded, and reserves that.
    pub async fn reserve_work(&self, file: Option<FileReservation>, bytes: &[u8]) -> Reservation {
        let work = self.work.take(estimate(bytes)).await;
        Reservation { _file: file, _work: work }
    }

    /// Bytes reserved right now (files, work).
    pub fn reserved_bytes(&self) -> (u64, u64) {
        (self.files.reserved_bytes(), self.work.reserved_bytes())
    }
}

/// Peak bytes per pixel of decoding and encoding an image whose decoder yields
/// `decoded` bytes a pixel: the decoded image and the decoder's working planes (2×), our
/// 8-bit copy when the decoder's is not (≤ 4), libwebp's YUV 4:2:0 picture (1.5) and its
/// encoder state. Measured: a 17.9 MP 8-bit RGB JPEG peaks at 174 MB over the process's
/// base and the file, 9.7 bytes a pixel; this gives 12.
pub fn bytes_per_pixel(decoded: u64) -> u64 {
    2 * decoded + 6
}

/// Animations hold several RGBA canvases in the encoder: their canvas costs 3 times more.
const ANIMATION_FACTOR: u64 = 3;

/// What decoding and encoding `bytes` will take at its peak, from the header alone; an
/// unreadable header costs nothing (its conversion fails before decoding).
pub fn estimate(bytes: &[u8]) -> u64 {
    let Ok(format) = sniff(bytes) else { return 0 };
    let Ok(decoder) = ImageReader::with_format(Cursor::new(bytes), image_format(format)).into_decoder() else {
        return 0;
    };
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let decoded = u64::from(image::ImageDecoder::color_type(&decoder).bytes_per_pixel());
    let factor = if format == SourceFormat::Gif { ANIMATION_FACTOR } else { 1 };
    u64::from(w) * u64::from(h) * bytes_per_pixel(decoded) * factor
}

/// Makes glibc give every freed block of 1 MiB or more back to the OS at once.
///
/// By default glibc raises its mmap threshold after each large free (up to 32 MiB), so
/// a 27 MB pixel buffer freed by one converter thread stays in that thread's arena: RSS
/// then grows to the sum of every thread's largest image, whatever the budget admitted.
/// A fixed threshold turns that off; pixel buffers are few and large, so the extra
/// mmap/munmap calls cost nothing measurable.
pub fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_cost_follows_the_pixels_and_their_depth_not_the_file() {
        assert_eq!(estimate(&fixture("jpeg_baseline.jpg")), 640 * 427 * 12); // 8-bit RGB
        assert_eq!(estimate(&fixture("png_rgba16.png")), estimate(&fixture("png_alpha.png")) * 22 / 14);
        // The 100000x100000 bomb is a tiny file with a huge cost: it would take the
        // whole pool (it is refused by the pixel cap before decoding anyway).
        assert!(estimate(&fixture("bad/bomb.png")) > 100_000 * 100_000 * 6);
        assert_eq!(estimate(b"not an image"), 0);
    }

    #[tokio::test]
    async fn a_reservation_waits_until_its_pool_has_room() {
        let budget = MemoryBudget::new(40); // files 10 MiB, work 30 MiB
        let big = budget.reserve_file(8 * MIB).await;
        assert_eq!(budget.reserved_bytes(), (8 * MIB, 0));
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve_file(4 * MIB).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "4 MiB more does not fit in 10 with 8 taken");
        // The work pool is separate: an image can still start converting.
        let work = budget.reserve_work(Some(big), &fixture("jpeg_baseline.jpg")).await;
        // (the waiter already holds the 2 MiB that were free: tokio hands permits out
        // to the head of the queue as they come)
        assert_eq!(budget.reserved_bytes(), (10 * MIB, 4 * MIB));
        drop(work);
        let file = waiting.await.unwrap();
        assert_eq!(budget.reserved_bytes(), (4 * MIB, 0));
        drop(file);
        // More than a whole pool: takes all of it, and still runs.
        let huge = budget.reserve_file(64 * MIB).await;
        assert_eq!(budget.reserved_bytes(), (10 * MIB, 0));
        drop(huge);
        assert_eq!(budget.reserved_bytes(), (0, 0));
    }
}
