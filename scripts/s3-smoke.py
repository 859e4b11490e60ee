#!/usr/bin/env python3
"""Smoke check of an S3-compatible test server (moto), standard library only.

Usage: python3 scripts/s3-smoke.py http://127.0.0.1:PORT

Sends path-style requests (http://host:port/bucket/key) that are not really
signed: moto accepts any signature, but it needs an Authorization header to be
present -- without one, a request on an EXISTING object counts as anonymous
and gets 403 (object ACL is private).  So every request carries a dummy SigV4
Authorization header (its Credential scope also tells moto the region).
Prints one line per check: PASS / FAIL / INFO.
Exit status is 1 if any check FAILs.
"""
import hashlib
import http.client
import re
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
DUMMY_AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, "
              "SignedHeaders=host, Signature=" + "0" * 64)
failures = 0


def report(ok, name, detail=""):
    global failures
    tag = {True: "PASS", False: "FAIL", None: "INFO"}[ok]
    if ok is False:
        failures += 1
    print(f"{tag:4}  {name}" + (f": {detail}" if detail else ""), flush=True)


class S3:
    def __init__(self, endpoint):
        u = urllib.parse.urlsplit(endpoint)
        if u.scheme != "http":
            raise SystemExit("endpoint must be http://host:port")
        self.host, self.port = u.hostname, u.port or 80

    def req(self, method, path, body=None, headers=None, query=None, auth=True):
        url = urllib.parse.quote(path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            hdrs = dict(headers or {})
            if auth:
                hdrs.setdefault("Authorization", DUMMY_AUTH)
            if body is not None:
                hdrs.setdefault("Content-Length", str(len(body)))
            conn.request(method, url, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()


def list_v2(s3, bucket, **params):
    q = {"list-type": "2"}
    q.update({k.replace("_", "-"): v for k, v in params.items()})
    st, h, body = s3.req("GET", f"/{bucket}", query=q)
    if st != 200:
        raise RuntimeError(f"ListObjectsV2 -> {st}: {body[:300]!r}")
    root = ET.fromstring(body)
    items = []
    for c in root.findall(f"{NS}Contents"):
        items.append({e.tag.replace(NS, ""): (e.text or "") for e in c})
    def text(tag):
        e = root.find(f"{NS}{tag}")
        return None if e is None else e.text
    return root, items, text


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    s3 = S3(sys.argv[1])
    bucket = "smoke-" + uuid.uuid4().hex[:12]

    # --- bucket ---------------------------------------------------------
    st, h, body = s3.req("PUT", f"/{bucket}")
    report(st == 200, "CreateBucket PUT /bucket", f"status {st}")
    if st != 200:
        print(body[:500])
        return

    # --- put / get --------------------------------------------------------
    key = "photos/cat.webp"
    payload = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(range(64))
    md5 = hashlib.md5(payload).hexdigest()
    t_before = time.time()
    st, h, _ = s3.req("PUT", f"/{bucket}/{key}", payload,
                      {"Content-Type": "image/webp", "x-amz-meta-source": "cat.png"})
    put_etag = h.get("etag")
    report(st == 200, "PutObject Content-Type image/webp", f"status {st}, ETag {put_etag}")
    report(put_etag == f'"{md5}"', "PutObject ETag is quoted hex MD5", f"{put_etag} vs \"{md5}\"")

    st, h, data = s3.req("GET", f"/{bucket}/{key}")
    report(st == 200 and data == payload, "GetObject body round-trips", f"status {st}, {len(data)} bytes")
    report(h.get("content-type") == "image/webp", "GetObject Content-Type", repr(h.get("content-type")))
    report(h.get("etag") == put_etag, "GetObject ETag == PutObject ETag", repr(h.get("etag")))
    report(h.get("x-amz-meta-source") == "cat.png", "GetObject user metadata x-amz-meta-source",
           repr(h.get("x-amz-meta-source")))
    report(None, "GetObject Last-Modified header", repr(h.get("last-modified")))

    st, h, _ = s3.req("GET", f"/{bucket}/{key}", auth=False)
    report(None, "GetObject WITHOUT Authorization header on existing key", f"status {st} (moto: 403 = anonymous)")

    st, h, _ = s3.req("HEAD", f"/{bucket}/{key}")
    report(st == 200 and h.get("content-type") == "image/webp", "HeadObject",
           f"status {st}, Content-Type {h.get('content-type')!r}, Content-Length {h.get('content-length')}")

    st, h, _ = s3.req("GET", f"/{bucket}/{key}", headers={"If-None-Match": put_etag})
    report(st == 304, "GetObject If-None-Match <etag> -> 304", f"status {st}")

    # --- listing ----------------------------------------------------------
    _, items, text = list_v2(s3, bucket)
    it = next((i for i in items if i.get("Key") == key), None)
    report(it is not None, "ListObjectsV2 contains key", repr(it))
    if it:
        report(it.get("ETag") == put_etag, "ListObjectsV2 ETag == PutObject ETag", repr(it.get("ETag")))
        lm = it.get("LastModified", "")
        m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", lm)
        report(bool(m), "ListObjectsV2 LastModified present (ISO 8601, Z)", repr(lm))
        if m:
            frac = m.group(2) or ""
            ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) - time.timezone
            report(abs(ts - t_before) < 120, "LastModified close to now (UTC)",
                   f"{lm}; fractional part {frac or 'none'!r}")
        report(it.get("Size") == str(len(payload)), "ListObjectsV2 Size", repr(it.get("Size")))
        report(None, "ListObjectsV2 StorageClass", repr(it.get("StorageClass")))

    # --- conditional writes -----------------------------------------------
    st, h, body = s3.req("PUT", f"/{bucket}/{key}", b"other", {"If-None-Match": "*"})
    report(st == 412, "PutObject If-None-Match: * on existing key -> 412", f"status {st} {body[:120]!r}")
    st, h, data = s3.req("GET", f"/{bucket}/{key}")
    report(data == payload, "object unchanged after rejected conditional put")

    new_key = "photos/new.webp"
    st, h, _ = s3.req("PUT", f"/{bucket}/{new_key}", b"x", {"If-None-Match": "*", "Content-Type": "image/webp"})
    report(st == 200, "PutObject If-None-Match: * on new key -> 200", f"status {st}")

    st, h, body = s3.req("PUT", f"/{bucket}/{key}", b"wrong", {"If-Match": '"00000000000000000000000000000000"'})
    report(st == 412, "PutObject If-Match <wrong etag> -> 412", f"status {st} {body[:120]!r}")
    st, h, _ = s3.req("PUT", f"/{bucket}/{key}", payload + b"2",
                      {"If-Match": put_etag, "Content-Type": "image/webp"})
    report(st == 200, "PutObject If-Match <current etag> -> 200", f"status {st}, new ETag {h.get('etag')}")
    st, h, body = s3.req("PUT", f"/{bucket}/no-such-key", b"z", {"If-Match": put_etag})
    report(None, "PutObject If-Match on missing key (AWS: 404 NoSuchKey)", f"status {st} {body[:120]!r}")

    # --- pagination -------------------------------------------------------
    pag = f"{bucket}"
    keys = ["p/e.png", "p/a.png", "p/c.jpg", "p/b.png", "p/d.gif"]
    for k in keys:
        s3.req("PUT", f"/{pag}/{k}", k.encode(), {"Content-Type": "image/png"})
    seen, pages, token = [], 0, None
    while True:
        params = {"prefix": "p/", "max_keys": "2"}
        if token:
            params["continuation_token"] = token
        root, items, text = list_v2(s3, pag, **params)
        pages += 1
        seen += [i["Key"] for i in items]
        trunc = text("IsTruncated")
        token = text("NextContinuationToken")
        if pages == 1:
            report(trunc == "true" and bool(token) and len(items) == 2,
                   "ListObjectsV2 max-keys=2 first page truncated with NextContinuationToken",
                   f"IsTruncated={trunc} KeyCount={text('KeyCount')} token={token!r}")
        if trunc != "true" or pages > 10:
            break
    report(seen == sorted(keys), "pagination returns all keys once, in lexicographic order",
           f"{pages} pages: {seen}")

    root, items, text = list_v2(s3, pag, prefix="p/", start_after="p/b.png")
    report([i["Key"] for i in items] == ["p/c.jpg", "p/d.gif", "p/e.png"], "ListObjectsV2 start-after",
           str([i["Key"] for i in items]))
    root, items, text = list_v2(s3, pag, delimiter="/")
    cps = [e.find(f"{NS}Prefix").text for e in root.findall(f"{NS}CommonPrefixes")]
    report(cps == ["p/", "photos/"], "ListObjectsV2 delimiter=/ CommonPrefixes", str(cps))

    # --- awkward key names (percent-encoded in the path) ------------------
    odd = ["odd/a b.png", "odd/a+b.png", "odd/ünï.png", "odd/x%y.png"]
    for k in odd:
        st, _, _ = s3.req("PUT", f"/{bucket}/{k}", k.encode(), {"Content-Type": "image/png"})
        st2, _, data = s3.req("GET", f"/{bucket}/{k}")
        report(st == 200 and st2 == 200 and data == k.encode(), f"PUT+GET key {k!r}", f"put {st}, get {st2}")
    _, items, _ = list_v2(s3, bucket, prefix="odd/")
    listed = [i["Key"] for i in items]
    report(sorted(listed) == sorted(odd), "ListObjectsV2 returns awkward keys verbatim", str(listed))
    _, items, _ = list_v2(s3, bucket, prefix="odd/", encoding_type="url")
    report(None, "ListObjectsV2 encoding-type=url keys", str([i["Key"] for i in items]))

    # --- delete -------------------------------------------------------------
    st, _, _ = s3.req("DELETE", f"/{bucket}/{new_key}")
    report(st == 204, "DeleteObject -> 204", f"status {st}")
    st, _, _ = s3.req("GET", f"/{bucket}/{new_key}")
    report(st == 404, "GetObject after delete -> 404", f"status {st}")
    st, _, _ = s3.req("GET", f"/nonexistent-{uuid.uuid4().hex[:8]}", query={"list-type": "2"})
    report(st == 404, "ListObjectsV2 on missing bucket -> 404", f"status {st}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # connection refused, bad XML, ...
        report(False, "unexpected error", f"{type(e).__name__}: {e}")
    print(f"{failures} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)
