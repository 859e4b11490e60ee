//! What a JPEG's markers say before any pixel is decoded: whether its decoder will hold
//! every coefficient (a progressive JPEG) and how finely it was quantised (its quality),
//! which the cost model ([`super::cost`]) needs to tell a detailed photo from a large file.

/// What a JPEG's header says about its decoding and its detail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JpegFrame {
    /// The coefficients a progressive JPEG's decoder keeps until its last scan: 2 bytes
    /// a sample of every component at its sampling (4:2:0 is 1.5 samples a pixel, 4:4:4
    /// three); 0 for a baseline JPEG, decoded a row of blocks at a time.
    pub coefficients: u64,
    /// Luma quantisation table 0, its 64 values summed (0 when absent).
    pub luma_quant: u32,
}

/// Walks a JPEG's markers up to its first scan (lengths only, no entropy-coded data);
/// a header that cannot be walked gives what was read (the decoder then refuses it).
pub fn jpeg_frame(jpeg: &[u8]) -> JpegFrame {
    let mut frame = JpegFrame::default();
    let mut i = 2; // after SOI
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let body = jpeg.get(i + 4..(i + 2 + len).min(jpeg.len())).unwrap_or(&[]);
        match marker {
            0xDA | 0xD9 => break, // start of scan, end of image
            0xDB => frame.luma_quant = frame.luma_quant.max(luma_table(body)),
            // SOF2, 6, 10, 14: progressive (C4, C8, CC are not frames).
            0xC2 | 0xC6 | 0xCA | 0xCE => frame.coefficients = coefficients(body),
            _ => {}
        }
        i += 2 + len;
    }
    frame
}

/// The sum of table 0 in a DQT segment's body (8- or 16-bit entries).
fn luma_table(mut body: &[u8]) -> u32 {
    while let Some(&pq_tq) = body.first() {
        let wide = pq_tq >> 4 != 0;
        let size = if wide { 128 } else { 64 };
        let Some(table) = body.get(1..1 + size) else { return 0 };
        if pq_tq & 15 == 0 {
            return if wide {
                table.chunks(2).map(|v| u32::from(u16::from_be_bytes([v[0], v[1]]))).sum()
            } else {
                table.iter().map(|&v| u32::from(v)).sum()
            };
        }
        body = &body[1 + size..];
    }
    0
}

/// A progressive frame's coefficient buffers, from its SOF body.
fn coefficients(sof: &[u8]) -> u64 {
    let (Some(&[h1, h0]), Some(&[w1, w0]), Some(&n)) = (sof.get(1..3), sof.get(3..5), sof.get(5)) else {
        return 0;
    };
    let (h, w) = (u64::from(u16::from_be_bytes([h1, h0])), u64::from(u16::from_be_bytes([w1, w0])));
    let factors: Vec<(u64, u64)> = (0..usize::from(n))
        .filter_map(|c| sof.get(6 + 3 * c + 1).map(|f| (u64::from(f >> 4).max(1), u64::from(f & 15).max(1))))
        .collect();
    let (hmax, vmax) = factors.iter().fold((1, 1), |(a, b), &(x, y)| (a.max(x), b.max(y)));
    // Each component's blocks, padded to whole MCUs, 64 coefficients of 2 bytes.
    let (mcus_w, mcus_h) = (w.div_ceil(8 * hmax), h.div_ceil(8 * vmax));
    factors.iter().map(|&(x, y)| mcus_w * x * mcus_h * y * 128).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn a_jpeg_s_frame_is_read_from_its_markers_without_decoding() {
        let baseline = jpeg_frame(&fixture("jpeg_baseline.jpg"));
        assert_eq!(baseline.coefficients, 0);
        assert!(baseline.luma_quant >= 64, "{baseline:?}");
        let progressive = fixture("jpeg_progressive.jpg");
        let frame = jpeg_frame(&progressive);
        let h = super::super::cost::read_header(&progressive).unwrap();
        let px = u64::from(h.width) * u64::from(h.height);
        // 1.5 to 3 samples a pixel of 2 bytes, padded to whole blocks.
        assert!(frame.coefficients >= px * 3 && frame.coefficients <= px * 7, "{frame:?} for {px} px");
        assert_eq!((h.decoder_bytes, h.luma_quant), (frame.coefficients, frame.luma_quant));
        // Cut anywhere: never a panic, never more than the whole file says.
        for cut in (0..progressive.len().min(4096)).step_by(7) {
            assert!(jpeg_frame(&progressive[..cut]).coefficients <= frame.coefficients);
        }
    }
}
