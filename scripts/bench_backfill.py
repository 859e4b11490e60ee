"""Backfill throughput through the queue against one run-once (scripts/bench-backfill.sh
runs it). Printed, never asserted.

    python bench_backfill.py BINARY ENDPOINT CORPUS_DIR ROUNDS COPIES

Every round and mode starts from a fresh bucket on the S3 test server holding the same
objects: each JPEG, PNG and GIF of CORPUS_DIR, COPIES times under different keys. Modes,
in an order that rotates each round:
  run-once   `BINARY run-once --json`, timed from start to exit.
  queue-1    one `serve` consuming a fresh SQS queue (started and listening first), then
             `BINARY backfill --to-queue --rate 0`, timed from the backfill's start until
             the queue holds no message (each is deleted once its image is done).
  queue-2    the same with two consumers.
Each mode is checked: every source has its WebP (skip_if_larger off, so none is kept).
Prints a row per round and mode, then medians, images/s and ratios (median of per-round).
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import boto3

MODES = ["run-once", "queue-1", "queue-2"]
FORMATS = (".jpg", ".jpeg", ".png", ".gif")


def main():
    binary, endpoint, corpus, rounds, copies = sys.argv[1:6]
    rounds, copies = int(rounds), int(copies)
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
    files = sorted(f for f in os.listdir(corpus) if f.lower().endswith(FORMATS))
    bodies = {f: open(os.path.join(corpus, f), "rb").read() for f in files}
    count = len(files) * copies
    mb = sum(len(b) for b in bodies.values()) * copies / 1e6
    print(f"set: {count} objects ({len(files)} files of {corpus} x {copies}), {mb:.1f} MB; {rounds} round(s)")
    work = tempfile.mkdtemp(prefix="bench-backfill-")
    results = {m: [] for m in MODES}
    for r in range(rounds):
        order = MODES[r % len(MODES):] + MODES[: r % len(MODES)]
        for mode in order:
            bucket = f"bench-backfill-{os.getpid()}-{r}-{mode}"
            s3.create_bucket(Bucket=bucket)
            for c in range(copies):
                for f in files:
                    s3.put_object(Bucket=bucket, Key=f"c{c}/{f}", Body=bodies[f])
            env = env_for(endpoint, bucket, os.path.join(work, f"state-{r}-{mode}"))
            if mode == "run-once":
                seconds, note = run_once(binary, env, work)
            else:
                seconds, note = through_queue(binary, env, sqs, work, bucket, int(mode[-1]))
            webps = sum(
                1
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])
                if o["Key"].endswith(".webp")
            )
            check = "" if webps == count else f" [ONLY {webps} of {count} WebPs]"
            results[mode].append(seconds)
            print(f"  round {r + 1} {mode:9s} {seconds:7.2f} s  {count / seconds:6.2f} images/s  {note}{check}", flush=True)
    print(f"\n== medians over {rounds} round(s), {count} images ==")
    print(f"{'mode':10s} {'wall s':>8s} {'images/s':>9s}")
    for m in MODES:
        med = statistics.median(results[m])
        print(f"{m:10s} {med:8.2f} {count / med:9.2f}")
    print("\nthroughput ratios (median of per-round ratios; > 1 = the first is faster):")
    for a, b in [("queue-1", "run-once"), ("queue-2", "run-once"), ("queue-2", "queue-1")]:
        per = [y / x for x, y in zip(results[a], results[b])]
        print(f"  {a}/{b:9s} {statistics.median(per):.3f}x   rounds: " + " ".join(f"{p:.3f}" for p in per))


def env_for(endpoint, bucket, state):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICS__", "R2_"))}
    env.update(
        ICS__STORAGE__BACKEND="r2", R2_ENDPOINT=endpoint, R2_BUCKET=bucket, R2_ACCESS_KEY="testing",
        R2_SECRET_KEY="testing", ICS__R2__REGION="us-east-1", ICS__SERVER__PORT="0", ICS__STATE__DIR=state,
        ICS__LOG__LEVEL="warn", ICS__CONVERSION__SKIP_IF_LARGER="false",
    )
    return env


def run_once(binary, env, work):
    t0 = time.monotonic()
    out = subprocess.run([binary, "run-once", "--json"], env=env, cwd=work, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    s = json.loads(out.stdout)
    return seconds, f"[exit {out.returncode}, converted {s['converted']}, duration_ms {s['duration_ms']}]"


def through_queue(binary, env, sqs, work, bucket, consumers):
    url = sqs.create_queue(QueueName="q-" + bucket, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    env = dict(env, ICS__EVENTS__SQS__QUEUE_URL=url, ICS__EVENTS__SQS__WAIT_SECONDS="1",
               ICS__CRON__ENABLED="false", ICS__CRON__RUN_ON_START="false", ICS__LOG__LEVEL="info")
    procs, logs = [], []
    for i in range(consumers):
        log_path = os.path.join(work, f"{bucket}-serve-{i}.log")
        logs.append(log_path)
        c_env = dict(env, ICS__STATE__DIR=env["ICS__STATE__DIR"] + f"-serve-{i}")
        procs.append(subprocess.Popen([binary, "serve"], env=c_env, cwd=work, stderr=open(log_path, "w"),
                                      stdout=subprocess.DEVNULL))
    for log_path in logs:
        deadline = time.monotonic() + 60
        while "Consuming bucket events from SQS" not in open(log_path).read():
            if time.monotonic() > deadline:
                sys.exit(f"a consumer did not start: {log_path}")
            time.sleep(0.05)
    t0 = time.monotonic()
    out = subprocess.run([binary, "backfill", "--to-queue", "--json", "--rate", "0"], env=env, cwd=work,
                         capture_output=True, text=True)
    enqueued = time.monotonic() - t0
    s = json.loads(out.stdout)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    while True:
        a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        if int(a[names[0]]) + int(a[names[1]]) == 0:
            break
        time.sleep(0.1)
    seconds = time.monotonic() - t0
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait()
    return seconds, f"[backfill exit {out.returncode}, sent {s['sent']} in {enqueued:.2f} s]"


if __name__ == "__main__":
    main()
