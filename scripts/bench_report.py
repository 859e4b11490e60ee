#!/usr/bin/env python3
"""Helpers of scripts/bench.sh (standard library only).

  bench_report.py s3-mkbucket ENDPOINT BUCKET          create a bucket (PUT /BUCKET)
  bench_report.py s3-put ENDPOINT BUCKET LIST          upload each file in LIST (one path a
                                                       line) as its base name
  bench_report.py s3-get ENDPOINT BUCKET SUFFIX DIR    download every key ending in SUFFIX
  bench_report.py s3-rmbucket ENDPOINT BUCKET          delete every object, then the bucket
  bench_report.py s3-latency ENDPOINT BUCKET MS        delay every later request on BUCKET
                                                       by MS (scripts/s3_server.py's hook)
  bench_report.py report WORKDIR                       print the summary table
  bench_report.py latency WORKDIR                      print the latency scenario's table

The S3 requests are path-style and not really signed: the test server (moto, see
scripts/s3-server.sh and scripts/s3-smoke.py) accepts any signature but wants an
Authorization header to be present.

`report` reads WORKDIR/runs.tsv (one line per timed run, written by bench.sh), the GNU
`time -v` files it names, WORKDIR/meta.tsv and WORKDIR/quality.txt (examples/quality.rs).
"""
import http.client
import os
import re
import statistics
import sys
import urllib.parse
import xml.etree.ElementTree as ET

DUMMY_AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, "
              "SignedHeaders=host, Signature=" + "0" * 64)
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
TOOLS = ["limit", "daemon-local", "daemon-s3", "cwebp", "vips", "base-local"]


# ------------------------------------------------------------------- S3 ---

def s3_request(endpoint, method, path, body=None, query=None):
    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
    url = urllib.parse.quote(path)
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Authorization": DUMMY_AUTH}
    if body is not None:
        headers["Content-Length"] = str(len(body))
    try:
        conn.request(method, url, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status // 100 != 2:
            raise SystemExit(f"{method} {path}: HTTP {r.status}: {data[:300]!r}")
        return data
    finally:
        conn.close()


def s3_keys(endpoint, bucket):
    keys, token = [], None
    while True:
        q = {"list-type": "2"}
        if token:
            q["continuation-token"] = token
        root = ET.fromstring(s3_request(endpoint, "GET", f"/{bucket}", query=q))
        keys += [c.find(f"{NS}Key").text for c in root.findall(f"{NS}Contents")]
        token_el = root.find(f"{NS}NextContinuationToken")
        if token_el is None or not token_el.text:
            return keys
        token = token_el.text


def cmd_s3(args):
    op, endpoint, bucket = args[0], args[1], args[2]
    if op == "s3-mkbucket":
        s3_request(endpoint, "PUT", f"/{bucket}")
    elif op == "s3-put":
        with open(args[3]) as f:
            for path in filter(None, (line.rstrip("\n") for line in f)):
                with open(path, "rb") as src:
                    s3_request(endpoint, "PUT", f"/{bucket}/{os.path.basename(path)}", body=src.read())
    elif op == "s3-latency":
        s3_request(endpoint, "GET", "/_ics/latency", query={"bucket": bucket, "ms": args[3]})
    elif op == "s3-rmbucket":
        for key in s3_keys(endpoint, bucket):
            s3_request(endpoint, "DELETE", f"/{bucket}/{key}")
        s3_request(endpoint, "DELETE", f"/{bucket}")
    elif op == "s3-get":
        suffix, out = args[3], args[4]
        os.makedirs(out, exist_ok=True)
        for key in s3_keys(endpoint, bucket):
            if key.endswith(suffix):
                with open(os.path.join(out, os.path.basename(key)), "wb") as f:
                    f.write(s3_request(endpoint, "GET", f"/{bucket}/{key}"))


# --------------------------------------------------------------- report ---

def parse_time(path):
    """GNU time -v: (user s, sys s, max RSS KiB)."""
    text = open(path).read()

    def field(label):
        m = re.search(re.escape(label) + r":\s*([0-9.:]+)", text)
        return m.group(1) if m else None
    user, system, rss = field("User time (seconds)"), field("System time (seconds)"), field(
        "Maximum resident set size (kbytes)")
    return float(user or "nan"), float(system or "nan"), int(rss or 0)


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(v, spec):
    return "-" if v != v else format(v, spec)


def report(work):
    meta = {}
    for line in open(os.path.join(work, "meta.tsv")):
        k, _, v = line.rstrip("\n").partition("\t")
        meta[k] = v
    images, mp = int(meta["images"]), float(meta["megapixels"])
    runs = {t: [] for t in TOOLS}
    for line in open(os.path.join(work, "runs.tsv")):
        rnd, tool, wall, timefile, nbytes, extra = line.rstrip("\n").split("\t")
        user, system, rss = parse_time(timefile)
        runs[tool].append({"round": int(rnd), "wall": float(wall), "cpu": user + system, "rss": rss,
                           "bytes": int(nbytes), "extra": extra})
    quality = {}
    qpath = os.path.join(work, "quality.txt")
    if os.path.exists(qpath):
        for line in open(qpath).read().splitlines()[1:]:
            f = line.split()
            if len(f) >= 7:
                quality[f[0]] = {"files": int(f[1]), "ssim": float(f[2]), "wssim": float(f[3]),
                                 "min": float(f[4]), "skipped": int(f[6]), "min_file": " ".join(f[7:])}

    rounds = int(meta["rounds"])
    print()
    print(f"== results: {images} images, {mp:.1f} MP, {rounds} round(s), medians over rounds ==")
    head = (f"{'tool':<13} {'images/s':>9} {'MP/s':>8} {'MP/CPU-s':>9} {'CPU s':>8} {'wall s':>8} "
            f"{'out bytes':>12} {'mean SSIM':>9} {'MPw SSIM':>9} {'peak RSS':>10}")
    print(head)
    print("-" * len(head))
    med = {}
    for tool in TOOLS:
        rs = runs[tool]
        if not rs:
            continue
        wall = median([r["wall"] for r in rs])
        cpu = median([r["cpu"] for r in rs])
        rss = max(r["rss"] for r in rs)
        nbytes = rs[-1]["bytes"]
        q = quality.get(tool, {})
        med[tool] = wall
        print(f"{tool:<13} {images / wall:>9.2f} {mp / wall:>8.2f} {fmt(mp / cpu, '>9.2f')} {fmt(cpu, '>8.1f')} "
              f"{wall:>8.2f} {nbytes:>12} {fmt(q.get('ssim', float('nan')), '>9.5f')} "
              f"{fmt(q.get('wssim', float('nan')), '>9.5f')} {rss / 1024:>7.0f} MiB")
    print()
    print("per round, wall seconds (order rotates each round):")
    for rnd in range(1, rounds + 1):
        cells = []
        for tool in TOOLS:
            for r in runs[tool]:
                if r["round"] == rnd:
                    extra = f" [{r['extra']}]" if r["extra"] else ""
                    cells.append(f"{tool} {r['wall']:.2f}{extra}")
        print(f"  round {rnd}: " + "; ".join(cells))

    def ratio(a, b):
        pairs = {}
        for r in runs[a]:
            pairs.setdefault(r["round"], {})["a"] = r["wall"]
        for r in runs[b]:
            pairs.setdefault(r["round"], {})["b"] = r["wall"]
        per = [p["b"] / p["a"] for p in pairs.values() if "a" in p and "b" in p]
        return median(per), per

    print()
    print("throughput ratios (median of per-round ratios; > 1 = the first is faster):")
    for daemon in ("daemon-local", "daemon-s3", "base-local"):
        for peer in ("limit", "cwebp", "vips", "base-local"):
            if peer == daemon:
                continue
            if runs[daemon] and runs[peer]:
                m, per = ratio(daemon, peer)
                shown = " ".join(f"{v:.3f}" for v in per)
                label = f"{daemon}/{peer}"
                print(f"  {label:<19} {m:6.3f}x   rounds: {shown}")
    print()
    print("notes:")
    print("  images/s and MP/s: source images and decoded source megapixels per wall second; MP/CPU-s: per")
    print("  CPU second (user+sys from GNU time -v). limit's wall time is the conversion only (files already")
    print("  in memory), its CPU time includes reading them. daemon rows time the whole run-once process")
    print("  (start-up, listing, state, download/convert/upload); its own duration_ms is in [..] above.")
    print("  peak RSS: max over rounds; for cwebp and vips (xargs -P) it is the largest single process")
    print("  (the kernel's max RSS of xargs' children), not their sum. daemon-s3 excludes the S3 server's")
    print("  memory and CPU; the moto CPU seconds used during each run are in [..] above — moto is a")
    print("  Python mock on the same cores, so daemon-s3 measures it as much as us.")
    for line in meta.get("notes", "").split("|"):
        if line:
            print(f"  {line}")


def latency(work):
    """WORKDIR/latency.tsv: round, set, images, latency ms, wall s, time file, extra."""
    runs = {}
    for line in open(os.path.join(work, "latency.tsv")):
        rnd, name, n, ms, wall, timefile, extra = line.rstrip("\n").split("\t")
        _, _, rss = parse_time(timefile)
        runs.setdefault(name, {}).setdefault(int(ms), []).append(
            {"round": int(rnd), "n": int(n), "wall": float(wall), "rss": rss, "extra": extra})
    print()
    print("== latency: run-once through the S3 test server, N ms added to every request; medians over rounds ==")
    head = (f"{'set':<8} {'images':>6} {'latency':>8} {'images/s':>9} {'wall s':>8} {'peak RSS':>10}   "
            f"{'vs 0 ms':>8}   per round")
    print(head)
    print("-" * len(head))
    for name, by_ms in runs.items():
        base = {r["round"]: r["wall"] for r in by_ms.get(0, [])}
        for ms in sorted(by_ms):
            rs = by_ms[ms]
            wall = median([r["wall"] for r in rs])
            rss = max(r["rss"] for r in rs)
            per = [base[r["round"]] / r["wall"] for r in rs if r["round"] in base]
            shown = " ".join(f"{v:.3f}" for v in per)
            print(f"{name:<8} {rs[0]['n']:>6} {ms:>5} ms {rs[0]['n'] / wall:>9.2f} {wall:>8.2f} "
                  f"{rss / 1024:>7.0f} MiB   {median(per):>7.3f}x   {shown}")
    print()
    print("  vs 0 ms: throughput at that latency over the same set's at 0 ms in the same round (median of")
    print("  per-round ratios; 1 = latency hidden). Wall time is the whole run-once process; peak RSS is the")
    print("  max over rounds (GNU time -v). Per run [duration_ms, moto CPU s]:")
    for name, by_ms in runs.items():
        for ms in sorted(by_ms):
            cells = "; ".join(f"r{r['round']} {r['wall']:.2f}s [{r['extra']}]" for r in by_ms[ms])
            print(f"    {name} {ms} ms: {cells}")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd = sys.argv[1]
    if cmd.startswith("s3-"):
        cmd_s3(sys.argv[1:])
    elif cmd == "report":
        report(sys.argv[2])
    elif cmd == "latency":
        latency(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
