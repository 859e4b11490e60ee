"""Time until a bucket is WebP-complete with AVIF outputs on, against AVIF off.

Usage: python3 scripts/bench_webp_first.py BINARY CORPUS_DIR [ROUNDS] [COUNT]

COUNT JPEG photos of CORPUS_DIR (by MANIFEST.tsv when present, the largest first) are
copied into a fresh local bucket for each run; `run-once` runs with
`conversion.outputs: [{format: webp}]` (off) or `[{format: webp}, {format: avif}]` (on),
alternating each round. The directory is polled every 20 ms: "WebP-complete" is the
moment every source has its .webp. Prints each run, the medians, and the median of the
per-round ratios off/on (1 = AVIF costs the WebPs nothing; the goal is >= 0.9). Printed,
never asserted.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

OUTPUTS = {
    "off": "  outputs: [{format: webp}]\n",
    "on": "  outputs: [{format: webp}, {format: avif}]\n",
}


def photos(corpus, count):
    names = [n for n in os.listdir(corpus) if n.lower().endswith((".jpg", ".jpeg"))]
    names.sort(key=lambda n: -os.path.getsize(os.path.join(corpus, n)))
    # Evenly spread over the sizes, not only the largest.
    step = max(1, len(names) // count)
    return names[::step][:count]


def one(binary, corpus, names, mode):
    work = tempfile.mkdtemp(prefix="bench-webp-first-")
    try:
        bucket = os.path.join(work, "bucket")
        os.makedirs(bucket)
        for n in names:
            shutil.copy(os.path.join(corpus, n), os.path.join(bucket, n))
        config = os.path.join(work, "c.yaml")
        with open(config, "w") as f:
            # skip_if_larger off: every source gets its WebP, so "WebP-complete" is reached.
            f.write(f"storage: {{local_root: {bucket}}}\nstate: {{dir: {work}/state}}\nlog: {{level: warn}}\n")
            f.write("conversion:\n  skip_if_larger: false\n")
            f.write(OUTPUTS[mode])
        stems = [os.path.splitext(n)[0] for n in names]
        start = time.monotonic()
        proc = subprocess.Popen([binary, "--config", config, "run-once", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        webp_done = None
        while proc.poll() is None:
            if webp_done is None and all(os.path.exists(os.path.join(bucket, s + ".webp")) for s in stems):
                webp_done = time.monotonic() - start
            time.sleep(0.02)
        total = time.monotonic() - start
        if webp_done is None:
            webp_done = total
        avifs = sum(os.path.exists(os.path.join(bucket, s + ".avif")) for s in stems)
        if proc.returncode != 0:
            print(f"  {mode}: exit {proc.returncode}: {proc.stderr.read().decode()[-400:]}")
        return webp_done, total, avifs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    binary, corpus = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    names = photos(corpus, count)
    print(f"== WebP first: {len(names)} JPEGs of {corpus}, {rounds} round(s), {binary} ==")
    times = {"off": [], "on": []}
    ratios = []
    for r in range(rounds):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        got = {}
        for mode in order:
            webp, total, avifs = one(binary, corpus, names, mode)
            got[mode] = webp
            times[mode].append((webp, total))
            print(f"  round {r + 1} AVIF {mode:3}: WebP-complete {webp:7.2f} s, run {total:7.2f} s, {avifs} AVIFs")
        ratios.append(got["off"] / got["on"])
    print("mode      WebP-complete s   run s  (medians)")
    for mode in ("off", "on"):
        print(f"AVIF {mode:3}   {statistics.median(t[0] for t in times[mode]):12.2f} {statistics.median(t[1] for t in times[mode]):8.2f}")
    print(f"WebP-complete ratio off/on: {statistics.median(ratios):.3f}x  rounds: {' '.join(f'{x:.3f}' for x in ratios)}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
