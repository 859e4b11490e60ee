//! Admission by memory: images reserve what they will take from `pipeline.memory_budget_mb`
//! before they take it, and give it back when their WebP is made.
//!
//! A count of images in flight bounds nothing when one 100 MP photo needs the memory of
//! a thousand thumbnails; reserving by pixels does. The budget has two pools, so that
//! waiting in one never blocks the other (no deadlock):
//! - **files** (a quarter): a source's listed size, reserved before it is downloaded and
//!   held until its WebP is uploaded;
//! - **work** (the rest): its decode, resize and encode ([`crate::convert::cost`]), read
//!   from the header once downloaded and reserved before decoding.
//!
//! Work that needs more than the whole work pool is refused (`over_memory_budget`, naming
//! the budget to raise) instead of waiting for a pool that can never hold it. A file
//! larger than the files pool takes all of it (its size is already capped by
//! `conversion.max_size_mb`). Reservations queue in FIFO order, so a big image is not
//! starved by a stream of small ones. Peak RSS is then at most the process's own
//! ~100 MB plus the budget — provided freed pixel buffers go back to the OS, which
//! [`return_large_frees_to_the_os`] sees to.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::convert::cost::{MIB, work_pool_mb};
use crate::convert::{ConvertError, ConvertOptions, ResizeSpec, Target, fit_targets, over_memory_budget, targets_cost};

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

    fn bytes(&self) -> u64 {
        u64::from(self.total) * MIB
    }

    fn reserved_bytes(&self) -> u64 {
        u64::from(self.total - self.units.available_permits() as u32) * MIB
    }
}

/// The shared budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    budget_mb: u32,
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

impl Reservation {
    /// The image is encoded: its working memory goes back to the pool, and the file's
    /// share stays with the WebP until it is uploaded (a WebP is about as large as its
    /// source or smaller, so the files pool also bounds the WebPs waiting for a PUT).
    pub fn into_file(self) -> Option<FileReservation> {
        self._file
    }
}

impl MemoryBudget {
    pub fn new(megabytes: u32) -> Self {
        let work = work_pool_mb(megabytes);
        let files = megabytes.saturating_sub(work).max(1);
        Self { budget_mb: megabytes, files: Pool::new(files), work: Pool::new(work) }
    }

    /// Waits until a file of `size` bytes may be downloaded.
    pub async fn reserve_file(&self, size: u64) -> FileReservation {
        FileReservation { _permit: self.files.take(size).await }
    }

    /// Waits until the image in `bytes` may be decoded, resized to `resize` and encoded,
    /// and reserves that; refuses at once work that the whole pool could never hold.
    pub async fn reserve_work(
        &self,
        file: Option<FileReservation>,
        bytes: &Bytes,
        resize: Option<ResizeSpec>,
        opts: &ConvertOptions,
    ) -> Result<Reservation, ConvertError> {
        // One WebP: its cost is `admit`'s (a limit the header breaks is refused with the
        // converter's own reason; an unreadable header costs nothing).
        let one = Target { format: crate::outputs::Format::Webp, resize, upscale: true, quality: None };
        self.reserve_targets(file, bytes, &[one], opts).await
    }

    /// [`MemoryBudget::reserve_work`] for making every one of `targets` from `bytes`
    /// (`conversion.outputs`, or a request's one output): the decoded source and each
    /// output's conversion. Off the async threads: reading a large PNG's rows for its
    /// colours takes up to a tenth of a second. A panic there is the converter's to
    /// catch and report.
    pub async fn reserve_targets(
        &self,
        file: Option<FileReservation>,
        bytes: &Bytes,
        targets: &[Target],
        opts: &ConvertOptions,
    ) -> Result<Reservation, ConvertError> {
        let (input, options, targets) = (bytes.clone(), opts.clone(), targets.to_vec());
        let costed = tokio::task::spawn_blocking(move || targets_cost(&input, &options, &targets)).await;
        let cost = costed.unwrap_or(Ok(None))?.unwrap_or(0);
        if cost > self.work.bytes() {
            return Err(over_memory_budget(cost, self.budget_mb));
        }
        let work = self.work.take(cost).await;
        Ok(Reservation { _file: file, _work: work })
    }

    /// Which of `targets` fit the work pool together ([`fit_targets`]: the indexes kept,
    /// and the outputs left out with their refusal), read off the async threads.
    pub async fn fit(
        &self,
        bytes: &Bytes,
        targets: &[Target],
        opts: &ConvertOptions,
    ) -> (Vec<usize>, Vec<(usize, ConvertError)>) {
        if targets.len() <= 1 || targets.iter().all(|t| t.format != crate::outputs::Format::Avif) {
            return ((0..targets.len()).collect(), Vec::new());
        }
        let (input, options, list, pool) = (bytes.clone(), opts.clone(), targets.to_vec(), self.work.bytes());
        let fitted = tokio::task::spawn_blocking(move || fit_targets(&input, &options, &list, pool)).await;
        fitted.unwrap_or_else(|_| ((0..targets.len()).collect(), Vec::new()))
    }

    /// The work pool's size: the most one conversion may reserve.
    pub fn work_bytes(&self) -> u64 {
        self.work.bytes()
    }

    /// Bytes reserved right now (files, work).
    pub fn reserved_bytes(&self) -> (u64, u64) {
        (self.files.reserved_bytes(), self.work.reserved_bytes())
    }
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
    use crate::convert::cost::estimate;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn cost(name: &str) -> u64 {
        estimate(&fixture(name), None, &ConvertOptions::default()).unwrap()
    }

    #[test]
    fn the_cost_follows_the_pixels_and_their_depth_not_the_file() {
        // 8-bit RGB, lossy: the RGB copy, libwebp's picture and tokens, far from the
        // 23 bytes a pixel of noise (this photo's file has 0.4 bytes a pixel).
        let jpeg = cost("jpeg_baseline.jpg");
        assert!(jpeg > 640 * 427 * 5 && jpeg < 640 * 427 * 15, "{jpeg}");
        // 16-bit RGBA costs more to decode; the lossless encoder dominates.
        let always = ConvertOptions { lossless: crate::convert::LosslessPolicy::Always, ..Default::default() };
        let lossless = |name: &str| estimate(&fixture(name), None, &always).unwrap();
        assert_eq!(lossless("png_rgba16.png"), lossless("png_alpha.png"));
        let lossy = ConvertOptions { lossless: crate::convert::LosslessPolicy::Never, ..Default::default() };
        // Under auto a PNG photo (more than 256 colours in its rows) is reserved for the
        // lossy encode it gets, a palette PNG for libwebp's palette encode: less than
        // the lossless encode of any picture, more than a lossy one.
        let photo = &fixture("reference_chelsea.png");
        assert_eq!(cost("reference_chelsea.png"), estimate(photo, None, &lossy).unwrap());
        assert!(cost("reference_chelsea.png") < estimate(photo, None, &always).unwrap() / 3);
        let palette = &fixture("png_palette.png");
        assert!(cost("png_palette.png") < lossless("png_palette.png"));
        assert!(cost("png_palette.png") > estimate(palette, None, &lossy).unwrap());
        // The 100000x100000 bomb is a tiny file with a huge cost; a size the limits
        // refuse anyway (16383 px a side) reserves nothing: it fails before decoding.
        let header = crate::convert::cost::read_header(&fixture("bad/bomb.png")).unwrap();
        assert!(crate::convert::cost::working_set(&header, (100_000, 100_000), true) > 100_000 * 100_000 * 6);
        assert_eq!(estimate(&fixture("bad/bomb.png"), None, &ConvertOptions::default()), None);
        assert_eq!(estimate(b"not an image", None, &ConvertOptions::default()), None);
    }

    #[tokio::test]
    async fn a_reservation_waits_until_its_pool_has_room() {
        let budget = MemoryBudget::new(40); // files 10 MiB, work 30 MiB
        let limits = ConvertOptions::default();
        let big = budget.reserve_file(8 * MIB).await;
        assert_eq!(budget.reserved_bytes(), (8 * MIB, 0));
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve_file(4 * MIB).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "4 MiB more does not fit in 10 with 8 taken");
        // The work pool is separate: an image can still start converting.
        let work = budget.reserve_work(Some(big), &fixture("jpeg_baseline.jpg").into(), None, &limits).await.unwrap();
        // (the waiter already holds the 2 MiB that were free: tokio hands permits out
        // to the head of the queue as they come)
        assert_eq!(budget.reserved_bytes(), (10 * MIB, cost("jpeg_baseline.jpg").div_ceil(MIB) * MIB));
        drop(work);
        let file = waiting.await.unwrap();
        assert_eq!(budget.reserved_bytes(), (4 * MIB, 0));
        drop(file);
        // A file larger than its whole pool takes all of it, and still downloads.
        let huge = budget.reserve_file(64 * MIB).await;
        assert_eq!(budget.reserved_bytes(), (10 * MIB, 0));
        drop(huge);
        assert_eq!(budget.reserved_bytes(), (0, 0));
    }

    #[tokio::test]
    async fn work_larger_than_the_whole_pool_is_refused_not_run_alone() {
        let budget = MemoryBudget::new(16); // work 12 MiB
        let limits = ConvertOptions::default();
        let jpeg = Bytes::from(fixture("jpeg_baseline.jpg")); // 4 MiB to convert as it is
        let upscale = Some(ResizeSpec { width: Some(2000), height: None });
        let e = budget.reserve_work(None, &jpeg, upscale, &limits).await.unwrap_err();
        assert_eq!(e.code(), "over_memory_budget");
        let message = e.to_string();
        assert!(message.contains("pipeline.memory_budget_mb (16)") && message.contains("at least"), "{message}");
        assert_eq!(budget.reserved_bytes(), (0, 0), "a refusal reserves nothing");
        // The same image at its own size fits.
        assert!(budget.reserve_work(None, &jpeg, None, &limits).await.is_ok());
    }
}
