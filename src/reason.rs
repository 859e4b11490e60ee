//! Why an image was not converted: one enum for the ledger, the metrics and the API.
//!
//! [`Reason::code`] is the stable snake_case name the ledger records, run summaries and
//! `ics_images_failed_total{reason}` carry; [`Reason::answer`] is the HTTP status and
//! code the API answers with — the Go server's wire codes where it had one
//! (`image_not_found`, `unsupported_image`, `payload_too_large`, …), since Go clients
//! match on them. Every failure, whichever path met it (a run, `convert`, the API),
//! is classified here once.

/// Why an image was not converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // The bytes.
    EmptyFile,
    NotAnImage,
    UnsupportedFormat,
    DecodeFailed,
    EmptyImage,
    // Limits.
    TooLarge,
    TooManyPixels,
    TooWide,
    TooManyFrames,
    LimitExceeded,
    OverMemoryBudget,
    InvalidResize,
    /// An output that does not apply to its source (a width it is not wider than; an
    /// AVIF of an animation): not made, on purpose.
    NotApplicable,
    // The conversion itself.
    EncodeFailed,
    WorkerFailed,
    Cancelled,
    // The bucket.
    NotFound,
    UnsafeKey,
    InvalidKey,
    DownloadFailed,
    UploadFailed,
    StorageError,
    // What to convert.
    OutputCollision,
    NotCandidate,
    MissingSource,
    UnknownBucket,
    InvalidSource,
}

impl Reason {
    /// Every reason, for the metrics (each series exists at 0 before its first failure).
    pub const ALL: &[Reason] = &[
        Self::EmptyFile,
        Self::NotAnImage,
        Self::UnsupportedFormat,
        Self::DecodeFailed,
        Self::EmptyImage,
        Self::TooLarge,
        Self::TooManyPixels,
        Self::TooWide,
        Self::TooManyFrames,
        Self::LimitExceeded,
        Self::OverMemoryBudget,
        Self::InvalidResize,
        Self::NotApplicable,
        Self::EncodeFailed,
        Self::WorkerFailed,
        Self::Cancelled,
        Self::NotFound,
        Self::UnsafeKey,
        Self::InvalidKey,
        Self::DownloadFailed,
        Self::UploadFailed,
        Self::StorageError,
        Self::OutputCollision,
        Self::NotCandidate,
        Self::MissingSource,
        Self::UnknownBucket,
        Self::InvalidSource,
    ];

    /// The ledger's, the run summary's and the metrics' name.
    /// The reason whose [`Reason::code`] is `code` (as the ledger stores it).
    pub fn from_code(code: &str) -> Option<Reason> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::NotAnImage => "not_an_image",
            Self::UnsupportedFormat => "unsupported_format",
            Self::DecodeFailed => "decode_failed",
            Self::EmptyImage => "empty_image",
            Self::TooLarge => "too_large",
            Self::TooManyPixels => "too_many_pixels",
            Self::TooWide => "too_wide",
            Self::TooManyFrames => "too_many_frames",
            Self::LimitExceeded => "limit_exceeded",
            Self::OverMemoryBudget => "over_memory_budget",
            Self::InvalidResize => "invalid_resize",
            Self::NotApplicable => "not_applicable",
            Self::EncodeFailed => "encode_failed",
            Self::WorkerFailed => "worker_failed",
            Self::Cancelled => "cancelled",
            Self::NotFound => "not_found",
            Self::UnsafeKey => "unsafe_key",
            Self::InvalidKey => "invalid_key",
            Self::DownloadFailed => "download_failed",
            Self::UploadFailed => "upload_failed",
            Self::StorageError => "storage_error",
            Self::OutputCollision => "output_collision",
            Self::NotCandidate => "not_candidate",
            Self::MissingSource => "missing_source",
            Self::UnknownBucket => "unknown_bucket",
            Self::InvalidSource => "invalid_source",
        }
    }

    /// The API's answer: HTTP status and error code (the Go server's codes where it had
    /// one; ours, such as `unknown_bucket` or `over_memory_budget`, where it had none).
    pub fn answer(self) -> (u16, &'static str) {
        match self {
            Self::EmptyFile | Self::NotAnImage | Self::UnsupportedFormat | Self::DecodeFailed | Self::EmptyImage => {
                (422, "unsupported_image")
            }
            Self::TooLarge | Self::TooManyPixels | Self::TooWide | Self::TooManyFrames | Self::LimitExceeded => {
                (413, "payload_too_large")
            }
            // Its own code: the remedy is a setting (named in the message), not the file.
            Self::OverMemoryBudget => (413, "over_memory_budget"),
            Self::InvalidResize => (400, "invalid_resize_params"),
            Self::NotApplicable => (422, "not_applicable"),
            Self::EncodeFailed | Self::WorkerFailed => (500, "conversion_failed"),
            // Only a request that already timed out cancels its conversion.
            Self::Cancelled => (504, "timeout"),
            Self::NotFound => (404, "image_not_found"),
            Self::UnsafeKey | Self::InvalidKey => (400, "invalid_request"),
            Self::DownloadFailed | Self::StorageError => (502, "storage_error"),
            Self::UploadFailed => (500, "upload_failed"),
            Self::OutputCollision => (409, "output_collision"),
            // As the Go server: an unsupported scheme, an address without a key, or an
            // extension not in conversion.formats.
            Self::NotCandidate | Self::InvalidSource => (400, "invalid_source_format"),
            Self::MissingSource => (400, "missing_source"),
            Self::UnknownBucket => (400, "unknown_bucket"),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_all_listed() {
        let codes: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn the_api_keeps_the_go_servers_wire_codes_where_the_ledger_has_its_own() {
        assert_eq!(Reason::NotFound.code(), "not_found");
        assert_eq!(Reason::NotFound.answer(), (404, "image_not_found"));
        assert_eq!(Reason::DecodeFailed.answer(), (422, "unsupported_image"));
        assert_eq!(Reason::TooManyPixels.answer(), (413, "payload_too_large"));
        assert_eq!(Reason::NotCandidate.answer(), (400, "invalid_source_format"));
    }
}
