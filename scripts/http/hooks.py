"""Schemathesis hooks: sign every request as docs/api.md specifies.

The signature is computed on the prepared request, so it covers the exact
method, path, query and body bytes sent.
"""
import hashlib
import hmac
import os
import time
from urllib.parse import urlsplit

import requests
import schemathesis

SECRET = os.environ["MUSTER_SHARED_SECRET"].encode()


class MusterSignature(requests.auth.AuthBase):
    def __call__(self, r):
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        url = urlsplit(r.url)
        pairs = sorted(p for p in url.query.split("&") if p)
        ts = str(int(time.time()))
        text = "\n".join(
            [
                "MUSTER-HMAC-SHA256",
                r.method.upper(),
                url.path,
                "&".join(pairs),
                ts,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        r.headers["X-Muster-Timestamp"] = ts
        r.headers["X-Muster-Signature"] = (
            "sha256=" + hmac.new(SECRET, text.encode(), hashlib.sha256).hexdigest()
        )
        return r


schemathesis.auth.set_from_requests(MusterSignature())
