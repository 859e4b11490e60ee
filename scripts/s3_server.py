"""moto's S3 server, as `moto.server` runs it, plus two test hooks under /_ics/.

    python s3_server.py -H 127.0.0.1 -p PORT

- POST /_ics/fill  {"bucket": B, "bodies": [hex, ...], "objects": [[key, body_index], ...]}
  stores the objects straight into moto's backend (no HTTP request per object), in list
  order: scale tests fill 100,000 objects in seconds instead of minutes.
- GET /_ics/stats?bucket=B  the S3 requests served for bucket B so far, by kind
  ("LIST", "GET", "HEAD", "PUT", "DELETE", "POST", ...), so a test can prove a run makes
  no per-object requests; GET /_ics/stats/reset?bucket=B returns them and zeroes them.
- GET /_ics/puts?bucket=B  the object PUTs that succeeded (2xx), by key: a scale-out
  test proves no WebP was stored twice.
- GET /_ics/latency?bucket=B&ms=N  delays every later S3 request on bucket B by N ms
  (a sleep, no CPU), as a remote R2 or S3 endpoint's round trip would.
- GET /_ics/race?bucket=B&ms=N  sleeps N ms inside every later object write on bucket B,
  between moto's precondition check and its store: the window in which two unserialised
  conditional writes could both pass their check. A test widens it to prove they cannot.
- POST /_ics/notify  {"bucket": B, "queue": Q, "visibility": S}  creates SQS queue Q (its
  visibility timeout S seconds, default 30) and sends bucket B's ObjectCreated and
  ObjectRemoved events to it, as `aws s3api put-bucket-notification-configuration` does;
  answers {"queue_url": ...}. Setting it puts an s3:TestEvent message in the queue. With
  "dead_letter": D (and "max_receive_count": N, default 5) Q gets a RedrivePolicy moving
  what was received more than N times to a new queue D.
- GET /_ics/queue?name=Q  {"visible": N, "in_flight": M}: the messages queue Q holds.
- POST /_ics/send?name=Q  puts the request body in queue Q as one message (a message no
  bucket would send, for the tests of bad input).

Conditional writes are atomic, as on S3 and R2: moto checks `If-None-Match: *` and
`If-Match` and then stores, in a threaded server, so two truly concurrent creates of one
key could both succeed (measured without the lock below: 2 of 32 `If-Match` writers on one
ETag won, in 1 of 70 rounds; every round once the window is widened). Every write to an
object (PUT, DELETE, POST on a key) therefore runs under a lock of its key (one of 256
striped locks), so of concurrent conditional writes exactly one wins.

Listing is made fast: moto sorts the whole bucket for every ListObjectsV2 page and
renders each page through its generic botocore-model serializer (~1 s a page: a
100,000-object listing took minutes). Here a bucket's sorted keys are cached until the
next write request, pages are found by bisection, and plain pages (no delimiter, owner
or checksum; encoding-type=url or none) are written as moto would write them. Everything
else goes to moto as is. Only ever bound to 127.0.0.1 by scripts/s3-server.sh.
"""

import argparse
import bisect
import collections
import json
import threading
import time
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.models import FakeDeleteMarker, S3Backend, s3_backends
from moto.s3.responses import S3Response
from werkzeug.serving import run_simple

STATS = collections.defaultdict(collections.Counter)
PUTS = collections.defaultdict(collections.Counter)
LATENCY = {}
RACE_DELAY = {}
LOCK = threading.Lock()
# Object writes are serialised per key (striped): a precondition check and its store are
# one step, as S3 and R2 guarantee.
WRITE_LOCKS = [threading.Lock() for _ in range(256)]
# Sorted keys per (bucket, prefix), dropped before and after every write request.
LISTINGS = {}
MOTO_LIST_V2 = S3Backend.list_objects_v2


def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
    if delimiter:
        return MOTO_LIST_V2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    prefix = prefix or ""
    cached = LISTINGS.get((bucket.name, prefix))
    if cached is None:
        keys = sorted(
            (k for name, k in bucket.keys.items() if name.startswith(prefix) and not isinstance(k, FakeDeleteMarker)),
            key=lambda k: k.name,
        )
        cached = (keys, [k.name for k in keys])
        LISTINGS[(bucket.name, prefix)] = cached
    keys, names = cached
    after = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
    start = bisect.bisect_right(names, after) if after else 0
    return self._truncate_result(keys[start : start + max_keys + 1], max_keys)


S3Backend.list_objects_v2 = list_objects_v2
MOTO_PUT_OBJECT = S3Backend.put_object


def put_object(self, bucket_name, *args, **kwargs):
    # The test hook's widened window between moto's precondition check and its store.
    delay = RACE_DELAY.get(bucket_name)
    if delay:
        time.sleep(delay)
    return MOTO_PUT_OBJECT(self, bucket_name, *args, **kwargs)


S3Backend.put_object = put_object
MOTO_SERIALIZED = S3Response.serialized
# EncodingType: with encoding-type=url (the daemon's listing asks for it) moto has
# already URL-encoded each key; the page is written the same way.
PLAIN_PAGE = {
    "Name",
    "Prefix",
    "MaxKeys",
    "KeyCount",
    "IsTruncated",
    "Contents",
    "NextContinuationToken",
    "StartAfter",
    "EncodingType",
}
PLAIN_ITEM = {"Key", "LastModified", "ETag", "Size", "StorageClass"}


def serialized(self, action_result):
    r = action_result.result
    plain = (
        self.data.get("Action") == "ListObjectsV2"
        and isinstance(r, dict)
        and set(r) <= PLAIN_PAGE
        and all(set(c) <= PLAIN_ITEM for c in r["Contents"])
    )
    if not plain:
        return MOTO_SERIALIZED(self, action_result)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<IsTruncated>{'true' if r['IsTruncated'] else 'false'}</IsTruncated>",
    ]
    for c in r["Contents"]:
        out.append(
            f"<Contents><Key>{escape(c['Key'])}</Key><LastModified>{c['LastModified']}</LastModified>"
            f"<ETag>{escape(c['ETag'])}</ETag><Size>{c['Size']}</Size>"
            f"<StorageClass>{c['StorageClass']}</StorageClass></Contents>"
        )
    out.append(f"<Name>{escape(r['Name'])}</Name>")
    out.append(f"<Prefix>{escape(r['Prefix'])}</Prefix>" if r["Prefix"] else "<Prefix/>")
    out.append(f"<MaxKeys>{r['MaxKeys']}</MaxKeys><KeyCount>{r['KeyCount']}</KeyCount>")
    for field in ("NextContinuationToken", "StartAfter", "EncodingType"):
        if field in r:
            out.append(f"<{field}>{escape(r[field])}</{field}>")
    out.append("</ListBucketResult>")
    headers = {"Content-Type": "application/xml"}
    headers.update(self.response_headers)
    return 200, headers, "".join(out)


S3Response.serialized = serialized


def backend():
    return s3_backends[DEFAULT_ACCOUNT_ID]["global"]


def kind(method, path, query):
    """LIST for a bucket-level GET without a sub-resource, else the method."""
    parts = path.lstrip("/").split("/", 1)
    if method == "GET" and (len(parts) == 1 or parts[1] == "") and "uploads" not in query:
        return parts[0], "LIST"
    return parts[0], method


def reply(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def fill(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    req = json.loads(environ["wsgi.input"].read(size))
    bodies = [bytes.fromhex(b) for b in req["bodies"]]
    b = backend()
    LISTINGS.clear()
    for key, index in req["objects"]:
        b.put_object(req["bucket"], key, bodies[index])
    LISTINGS.clear()
    return reply(start_response, "200 OK", {"stored": len(req["objects"])})


def aws(environ, service):
    """A boto3 client of this very server (threaded: it may call itself)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url="http://" + environ["HTTP_HOST"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def notify(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    req = json.loads(environ["wsgi.input"].read(size))
    sqs = aws(environ, "sqs")
    attrs = {"VisibilityTimeout": str(req.get("visibility", 30))}
    if req.get("dead_letter"):
        # A dead-letter queue taking what was received more than max_receive_count times.
        dlq = sqs.create_queue(QueueName=req["dead_letter"])["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(req.get("max_receive_count", 5))}
        attrs["RedrivePolicy"] = json.dumps(policy)
    url = sqs.create_queue(QueueName=req["queue"], Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    config = {"QueueConfigurations": [{"QueueArn": arn, "Events": events}]}
    aws(environ, "s3").put_bucket_notification_configuration(Bucket=req["bucket"], NotificationConfiguration=config)
    return reply(start_response, "200 OK", {"queue_url": url})


def queue_depth(environ, start_response, name):
    sqs = aws(environ, "sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    depth = {"visible": int(a[names[0]]), "in_flight": int(a[names[1]])}
    return reply(start_response, "200 OK", depth)


def send(environ, start_response, name):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size).decode()
    sqs = aws(environ, "sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return reply(start_response, "200 OK", {"id": sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]})


def make_app():
    moto = DomainDispatcherApplication(create_backend_app)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if path == "/_ics/fill" and environ["REQUEST_METHOD"] == "POST":
            return fill(environ, start_response)
        if path == "/_ics/notify" and environ["REQUEST_METHOD"] == "POST":
            return notify(environ, start_response)
        if path == "/_ics/send" and environ["REQUEST_METHOD"] == "POST":
            return send(environ, start_response, query.get("name", [""])[0])
        if path == "/_ics/queue":
            return queue_depth(environ, start_response, query.get("name", [""])[0])
        if path == "/_ics/latency":
            bucket = query.get("bucket", [""])[0]
            LATENCY[bucket] = int(query.get("ms", ["0"])[0]) / 1000.0
            return reply(start_response, "200 OK", {"bucket": bucket, "seconds": LATENCY[bucket]})
        if path == "/_ics/race":
            bucket = query.get("bucket", [""])[0]
            RACE_DELAY[bucket] = int(query.get("ms", ["0"])[0]) / 1000.0
            return reply(start_response, "200 OK", {"bucket": bucket, "seconds": RACE_DELAY[bucket]})
        if path == "/_ics/puts":
            bucket = query.get("bucket", [""])[0]
            with LOCK:
                puts = dict(PUTS.get(bucket, {}))
            return reply(start_response, "200 OK", puts)
        if path.startswith("/_ics/stats"):
            bucket = query.get("bucket", [""])[0]
            with LOCK:
                counts = dict(STATS.get(bucket, {}))
                if path.endswith("/reset"):
                    STATS.pop(bucket, None)
            return reply(start_response, "200 OK", counts)
        bucket, what = kind(environ["REQUEST_METHOD"], path, query)
        with LOCK:
            STATS[bucket][what] += 1
        if LATENCY.get(bucket):
            time.sleep(LATENCY[bucket])
        if what in ("LIST", "GET", "HEAD"):
            return moto(environ, start_response)
        LISTINGS.clear()
        key = path.lstrip("/").split("/", 1)[1] if path.lstrip("/").count("/") else ""

        def counting(status, headers, *rest):
            if what == "PUT" and key and status.startswith("2") and "uploadId" not in query:
                with LOCK:
                    PUTS[bucket][unquote(key)] += 1
            return start_response(status, headers, *rest)

        if not key:
            try:
                return moto(environ, counting)
            finally:
                LISTINGS.clear()
        # The whole request under its key's lock: check and store are one step. The body
        # is consumed inside (moto reads it while handling), so the response is complete.
        with WRITE_LOCKS[hash((bucket, key)) % len(WRITE_LOCKS)]:
            try:
                return list(moto(environ, counting))
            finally:
                LISTINGS.clear()

    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket before serving (repeatable)")
    args = parser.parse_args()
    for name in args.bucket:
        backend().create_bucket(name, "us-east-1")
    run_simple(args.host, args.port, make_app(), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
