"""Upload-to-WebP latency of event-driven conversion (scripts/bench-events.sh runs it).

    python bench_events.py BINARY ENDPOINT COUNT SECONDS IMAGE_DIR

Makes a bucket and an SQS queue on the S3 test server, has the bucket notify the queue,
starts `BINARY serve` consuming it (cron off), uploads COUNT images spread evenly over
SECONDS, and lists the bucket every 50 ms to see when each WebP appears. Prints
p50/p95/max of (WebP first listed − upload finished) and how many WebPs were stored.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import boto3


def main():
    binary, endpoint, count, seconds, image_dir = sys.argv[1:6]
    count, seconds = int(count), float(seconds)
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = boto3.client("s3", **kw)
    bucket = f"bench-events-{os.getpid()}-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    req = urllib.request.Request(
        endpoint + "/_ics/notify", data=json.dumps({"bucket": bucket, "queue": "q-" + bucket}).encode(), method="POST"
    )
    queue_url = json.load(urllib.request.urlopen(req))["queue_url"]
    images = sorted(
        os.path.join(image_dir, f)
        for f in os.listdir(image_dir)
        if f.lower().endswith((".jpg", ".jpeg", ".png")) and os.path.getsize(os.path.join(image_dir, f)) < 2_000_000
    )
    bodies = [open(p, "rb").read() for p in images]
    work = tempfile.mkdtemp(prefix="bench-events-")
    with open(os.path.join(work, "c.yaml"), "w") as f:
        f.write("cron: {enabled: false, run_on_start: false}\n")
        # Every upload gets a WebP (none kept for being smaller than its WebP).
        f.write("conversion: {skip_if_larger: false}\n")
        f.write(f'events: {{sqs: {{queue_url: "{queue_url}", wait_seconds: 20}}}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICS__", "R2_"))}
    env.update(
        ICS__STORAGE__BACKEND="r2", R2_ENDPOINT=endpoint, R2_BUCKET=bucket, R2_ACCESS_KEY="testing",
        R2_SECRET_KEY="testing", ICS__R2__REGION="us-east-1", ICS__SERVER__PORT="0",
        ICS__STATE__DIR=os.path.join(work, "state"), ICS__LOG__LEVEL="warn",
    )
    log = open(os.path.join(work, "serve.log"), "w")
    daemon = subprocess.Popen([binary, "--config", os.path.join(work, "c.yaml"), "serve"], env=env, stderr=log, cwd=work)
    time.sleep(2)
    uploaded, seen = {}, {}
    done = threading.Event()

    def watch():
        paginator = s3.get_paginator("list_objects_v2")
        while not done.is_set():
            now = time.monotonic()
            for page in paginator.paginate(Bucket=bucket):
                for o in page.get("Contents", []):
                    if o["Key"].endswith(".webp") and o["Key"] not in seen:
                        seen[o["Key"]] = now
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.monotonic()
    for i in range(count):
        body = bodies[i % len(bodies)]
        ext = os.path.splitext(images[i % len(images)])[1]
        key = f"up/{i:04d}{ext}"
        target = start + i * seconds / count
        time.sleep(max(0.0, target - time.monotonic()))
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded[f"up/{i:04d}.webp"] = time.monotonic()
    deadline = time.monotonic() + 120
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    watcher.join()
    daemon.terminate()
    daemon.wait(timeout=60)
    lat = sorted(seen[k] - t for k, t in uploaded.items() if k in seen)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    puts = json.load(urllib.request.urlopen(f"{endpoint}/_ics/puts?bucket={bucket}"))
    twice = sum(1 for k, n in puts.items() if k.endswith(".webp") and n > 1)
    print(f"images: {count} uploads over {seconds:.0f} s ({len(images)} distinct files from {image_dir})")
    print(f"converted: {len(lat)} of {count}; WebPs stored twice: {twice}")
    print(f"upload -> WebP latency: p50 {pick(0.5):.2f} s, p95 {pick(0.95):.2f} s, max {lat[-1] if lat else float('nan'):.2f} s")


if __name__ == "__main__":
    main()
