//! A source's colours brought into sRGB for an output that carries no ICC profile.
//!
//! The WebP keeps the source's ICC profile as its ICCP chunk (`conversion.keep_icc`), so
//! its pixels stay as they were. ravif writes an AVIF tagged sRGB (its `nclx` colour
//! box) with no room for a profile, so the pixels of a Display P3 or Adobe RGB photo
//! would be shown as if they were sRGB: dull, shifted. Before the AVIF encode they are
//! turned into sRGB through the profile with qcms (Firefox's colour management), in
//! place. A profile qcms cannot read, or one that is not RGB (a CMYK JPEG's, a grey
//! image's: the decoder has already made RGB of those), leaves the pixels as they are,
//! as a browser shows such a file without its profile.

/// Turns `pixels` (RGB8, or RGBA8 when `has_alpha`; alpha untouched) from the colour
/// space `icc` describes into sRGB. Returns whether they were transformed.
pub fn icc_to_srgb(pixels: &mut [u8], has_alpha: bool, icc: &[u8]) -> bool {
    let Some(input) = qcms::Profile::new_from_slice(icc, false) else {
        return false;
    };
    if input.is_sRGB() {
        return false;
    }
    let mut output = qcms::Profile::new_sRGB();
    output.precache_output_transform();
    let ty = if has_alpha { qcms::DataType::RGBA8 } else { qcms::DataType::RGB8 };
    let Some(transform) = qcms::Transform::new(&input, &output, ty, qcms::Intent::Perceptual) else {
        return false;
    };
    transform.apply(pixels);
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ICC v2 display profile with matrix/TRC tags: `colorants` the red, green and blue
    /// XYZ (D50), each channel's tone curve a gamma of 2.2.
    pub(crate) fn matrix_profile(colorants: [[f64; 3]; 3]) -> Vec<u8> {
        let s15 = |v: f64| ((v * 65536.0).round() as i32).to_be_bytes();
        let xyz = |c: [f64; 3]| {
            let mut t = b"XYZ \0\0\0\0".to_vec();
            c.iter().for_each(|v| t.extend(s15(*v)));
            t
        };
        let curv = b"curv\0\0\0\0\0\0\0\x01\x02\x33\0\0".to_vec(); // gamma 2.2 (u8Fixed8), padded
        let d50 = [0.9642, 1.0, 0.8249];
        let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
            (b"wtpt", xyz(d50)),
            (b"rXYZ", xyz(colorants[0])),
            (b"gXYZ", xyz(colorants[1])),
            (b"bXYZ", xyz(colorants[2])),
            (b"rTRC", curv.clone()),
            (b"gTRC", curv.clone()),
            (b"bTRC", curv),
        ];
        let mut body = Vec::new();
        let mut table = (tags.len() as u32).to_be_bytes().to_vec();
        let data_start = 128 + 4 + 12 * tags.len();
        for (sig, data) in &tags {
            table.extend(*sig);
            table.extend(((data_start + body.len()) as u32).to_be_bytes());
            table.extend((data.len() as u32).to_be_bytes());
            body.extend(data);
        }
        let mut header = vec![0u8; 128];
        header[0..4].copy_from_slice(&((128 + table.len() + body.len()) as u32).to_be_bytes());
        header[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
        header[12..16].copy_from_slice(b"mntr");
        header[16..20].copy_from_slice(b"RGB ");
        header[20..24].copy_from_slice(b"XYZ ");
        header[36..40].copy_from_slice(b"acsp");
        for (i, v) in d50.iter().enumerate() {
            header[68 + 4 * i..72 + 4 * i].copy_from_slice(&s15(*v));
        }
        [header, table, body].concat()
    }

    /// sRGB's colorants adapted to D50, as ICC profiles carry them.
    const SRGB: [[f64; 3]; 3] = [[0.4361, 0.2225, 0.0139], [0.3851, 0.7169, 0.0971], [0.1431, 0.0606, 0.7141]];

    #[test]
    fn a_profile_that_swaps_red_and_green_swaps_them_back() {
        // The file says its red is sRGB's green and its green sRGB's red.
        let swapped = matrix_profile([SRGB[1], SRGB[0], SRGB[2]]);
        let mut px = vec![200, 40, 60, 30, 180, 90];
        assert!(icc_to_srgb(&mut px, false, &swapped));
        let near = |got: &[u8], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 6);
        assert!(near(&px[0..3], [40, 200, 60]), "{px:?}");
        assert!(near(&px[3..6], [180, 30, 90]), "{px:?}");
    }

    #[test]
    fn alpha_is_left_alone_and_srgb_stays_srgb() {
        let swapped = matrix_profile([SRGB[1], SRGB[0], SRGB[2]]);
        let mut px = vec![200, 40, 60, 77];
        assert!(icc_to_srgb(&mut px, true, &swapped));
        assert_eq!(px[3], 77);
        // A profile of sRGB's own colorants (gamma 2.2 against sRGB's curve): nearly unchanged.
        let mut px = vec![200, 40, 60];
        assert!(icc_to_srgb(&mut px, false, &matrix_profile(SRGB)));
        assert!(px.iter().zip([200u8, 40, 60]).all(|(g, w)| g.abs_diff(w) <= 8), "{px:?}");
    }

    #[test]
    fn a_profile_that_cannot_be_read_leaves_the_pixels() {
        let mut px = vec![1, 2, 3];
        for bad in [&b""[..], b"not a profile", &matrix_profile(SRGB)[..100]] {
            assert!(!icc_to_srgb(&mut px, false, bad));
        }
        assert_eq!(px, [1, 2, 3]);
        // The repository's lcms sRGB profile (jpeg_icc.icc) reads.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/images/jpeg_icc.icc");
        let mut px = vec![200, 40, 60];
        icc_to_srgb(&mut px, false, &std::fs::read(path).unwrap());
        assert!(px.iter().zip([200u8, 40, 60]).all(|(g, w)| g.abs_diff(w) <= 3), "{px:?}");
    }
}
