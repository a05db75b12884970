"""A keep-alive HTTP load generator, run as its own process: ``python -m bench.http_client SPEC.json``.

The spec names the base URL, the requests (method, path, body, the expected
JSON field values) and either a request count (latency mode, one connection)
or a duration and a concurrency (throughput mode, one connection per
thread). Every response is checked: status 200 and the expected values;
a mismatch is counted as an error and reported. The result (latencies in
seconds, the ``took_ms`` the server reported, errors) is printed as one
JSON line. Only the standard library is used, so the client's own overhead
stays small (``http.client``, one ``HTTPConnection`` per thread).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit


class Worker:
    def __init__(self, host: str, port: int, requests: list[dict[str, Any]]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.requests = requests
        self.latencies: list[float] = []
        self.took_ms: list[float] = []
        self.errors: list[str] = []

    def one(self, index: int) -> None:
        req = self.requests[index % len(self.requests)]
        body = req.get("body")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        t0 = time.perf_counter()
        self.conn.request(req["method"], req["path"], body=data, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - t0
        self.latencies.append(elapsed)
        if response.status != 200:
            self.errors.append(f"{req['path']}: HTTP {response.status} {payload[:200]!r}")
            return
        parsed = json.loads(payload)
        for key, want in req.get("expect", {}).items():
            if parsed.get(key) != want:
                self.errors.append(f"{req['path']}: {key}={parsed.get(key)!r}, expected {want!r}")
        if "took_ms" in parsed:
            self.took_ms.append(float(parsed["took_ms"]))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["base_url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = spec["requests"]
    concurrency = int(spec.get("concurrency", 1))
    workers = [Worker(host, port, requests) for _ in range(concurrency)]
    for w in workers:  # connect and warm every connection
        for i in range(int(spec.get("warmup", 0))):
            w.one(i)
        w.latencies.clear()
        w.took_ms.clear()
    started = time.perf_counter()
    if concurrency == 1 and "count" in spec:
        w = workers[0]
        for i in range(int(spec["count"])):
            w.one(i)
    else:
        deadline = started + float(spec["seconds"])

        def loop(w: Worker, offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                w.one(i)
                i += 1

        threads = [threading.Thread(target=loop, args=(w, k * 7919)) for k, w in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - started
    latencies = [x for w in workers for x in w.latencies]
    return {
        "latencies": latencies,
        "took_ms": [x for w in workers for x in w.took_ms],
        "errors": [e for w in workers for e in w.errors][:20],
        "error_count": sum(len(w.errors) for w in workers),
        "seconds": elapsed,
        "requests": len(latencies),
        "concurrency": concurrency,
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = run(json.load(f))
    print(json.dumps(result))
