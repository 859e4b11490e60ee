#!/usr/bin/env bash
# AVIF against this project's WebP on the photo corpus, in one run (issue 24, item 3):
#
#   bash scripts/bench-avif.sh CORPUS_DIR            # e.g. the shared corpus
#   ICS_AVIF_PHOTOS=4 bash scripts/bench-avif.sh CORPUS_DIR     # quick check
#
# CORPUS_DIR holds the images and a MANIFEST.tsv (columns file, format, width, height,
# megapixels, ...). The photos are its JPEG rows of at most ICS_AVIF_MAX_MP megapixels
# (default 8: rav1e takes seconds a megapixel), sorted by megapixels; ICS_AVIF_PHOTOS
# (default 6) of them are taken evenly spaced over that order, smallest and largest
# included. Without a MANIFEST.tsv every *.jpg / *.jpeg of the directory is taken.
#
# examples/avif_compare.rs (built with --release --features avif-bench) then prints, for
# every encoder setting, the AVIF bytes against the default WebP's and both mean
# SSIMULACRA2 scores, the CPU seconds per megapixel of each output, each encoder and speed
# at the WebP's mean score, and whether AvifConfig::default() meets the goal (at least 25%
# fewer bytes, mean score at most 1 point below). Output also goes to target/bench-avif.txt,
# one line per output to target/bench-avif.tsv.
#
# Environment:
#   ICS_AVIF_PHOTOS    photos to take (default 6)
#   ICS_AVIF_MAX_MP    largest photo to take, megapixels (default 8)
#   ICS_AVIF_RAVIF     ravif speeds:qualities (default 6:75,80,82,85;8,10:75,85)
#   ICS_AVIF_AOM       libaom speeds:quantizers through avifenc (default 6,8:16,20,24)
#   ICS_AVIF_SVT       SVT-AV1 speeds:quantizers through avifenc (default 8:30,38,46)
#   ICS_AVIF_THREADS   threads for the default setting's threaded timing (default nproc)
#   ICS_BENCH_FEATURES more cargo features (e.g. avif-asm: rav1e's assembly, needs nasm)
#   ICS_AVIF_PROFILE   cargo profile: release (default) or dev (dependencies are built at
#                      opt-level 3 there too, and rav1e without debug assertions: the
#                      encoders' figures are close to release's, without its long cold build)
#
# Installs, when missing (apt-get, as root or with sudo): Debian's `libavif-bin` (avifenc,
# avifdec: libavif with libaom, SVT-AV1, rav1e and dav1d) and, with avif-asm, `nasm`.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

corpus=${1:?usage: bash scripts/bench-avif.sh CORPUS_DIR}
[ -d "$corpus" ] || { echo "no directory $corpus" >&2; exit 64; }
photos=${ICS_AVIF_PHOTOS:-6}
max_mp=${ICS_AVIF_MAX_MP:-8}
features="avif-bench ${ICS_BENCH_FEATURES:-}"

apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}
command -v avifdec >/dev/null && command -v avifenc >/dev/null || apt_install libavif-bin
case " $features " in *" avif-asm "*) command -v nasm >/dev/null || apt_install nasm ;; esac

# The photos: evenly spaced over the JPEGs sorted by megapixels.
mapfile -t all < <(
    if [ -f "$corpus/MANIFEST.tsv" ]; then
        awk -F'\t' -v max="$max_mp" 'NR > 1 && $2 == "JPEG" && $5 <= max { print $5 "\t" $1 }' "$corpus/MANIFEST.tsv" | sort -g | cut -f2
    else
        find "$corpus" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' \) -printf '%f\n' | sort
    fi
)
n=${#all[@]}
[ "$n" -gt 0 ] || { echo "no JPEG photos in $corpus" >&2; exit 66; }
[ "$photos" -le "$n" ] || photos=$n
files=()
for ((i = 0; i < photos; i++)); do
    if [ "$photos" -eq 1 ]; then j=0; else j=$(( (i * (n - 1) + (photos - 1) / 2) / (photos - 1) )); fi
    files+=("$corpus/${all[$j]}")
done

profile=${ICS_AVIF_PROFILE:-release}
case "$profile" in release) dir=release ;; dev) dir=debug ;; *) echo "ICS_AVIF_PROFILE: release or dev, not $profile" >&2; exit 64 ;; esac
nice -n 10 cargo build --profile "$profile" --features "$features" --example avif_compare
mkdir -p target
{
    echo "# bench-avif: ${#files[@]} of $n JPEG photos in $(basename "$corpus"), $(date -u +%F), $(nproc) cores, features: $features, profile: $profile"
    printf '#   %s\n' "${files[@]##*/}"
    nice -n 10 "target/$dir/examples/avif_compare" \
        --ravif "${ICS_AVIF_RAVIF:-6:75,80,82,85;8,10:75,85}" \
        --aom "${ICS_AVIF_AOM:-6,8:16,20,24}" \
        --svt "${ICS_AVIF_SVT:-8:30,38,46}" \
        --threads "${ICS_AVIF_THREADS:-$(nproc)}" \
        --detail target/bench-avif.tsv \
        "${files[@]}"
} | tee target/bench-avif.txt
