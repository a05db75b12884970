"""``/metrics`` during a store outage: ``segments_store_up`` drops to 0, the failure is logged, the scrape answers.

An Aerospike test server is stopped while ``segments serve`` runs on it. The
scrape keeps answering 200 with every other metric (a failing scrape would
hide the HTTP and cache metrics exactly when they matter),
``segments_store_up`` is 0 and a warning line names the store error; once the
server is started again the gauge returns to 1 by itself.
"""

from __future__ import annotations

import json
import re

import httpx

import segments
from tests.api.test_metrics import samples
from tests.faults.conftest import wait_for
from tests.support.api_server import start_api_server


def test_a_store_outage_shows_in_the_metrics_and_in_the_log(aerospike_server: object) -> None:
    from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url

    assert isinstance(aerospike_server, AerospikeTarget)
    server = aerospike_server.require_server()
    store = aerospike_url(aerospike_server, None, timeout_ms=300, connect_timeout_s=1)
    with segments.connect(store) as segs:
        segs.replace("a", [1, 2, 3])
        segs.replace("b", [4])
    with start_api_server(store) as api, httpx.Client(base_url=api.base_url, timeout=60) as c:
        up = c.get("/metrics")
        assert up.status_code == 200
        assert samples(up.text)["segments_store_up"] == 1
        assert samples(up.text)["segments_segments"] == 2
        server.stop()
        down = c.get("/metrics")
        print(
            f"\nscrape during the outage: {down.status_code}, store_up={samples(down.text).get('segments_store_up')}"
        )
        assert down.status_code == 200
        assert samples(down.text)["segments_store_up"] == 0
        assert "segments_http_requests_total" in down.text  # the other metrics are still there
        server.start()
        wait_for(
            lambda: samples(c.get("/metrics").text)["segments_store_up"] == 1, 60, "store_up to return to 1"
        )
        api.stop()
        lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
    failures = [e for e in lines if e.get("logger") == "api.metrics" and e.get("level") == "warning"]
    print(f"logged: {[e['msg'] for e in failures][:2]}")
    assert failures, "the outage was not logged"
    assert any(re.search(r"storage_(unavailable|timeout)", e["msg"]) for e in failures)
