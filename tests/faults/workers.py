"""Functions the fault and load tests run in separate processes (importable under ``spawn``)."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

SEGMENTS = ("c0", "c1", "c2")
#: each writer owns the IDs ``[writer << 28, (writer + 1) << 28)``; IDs are spread over many shards
STRIDE = 7919


def writer_ids(writer: int, step: int, count: int = 10) -> list[int]:
    base = writer << 28
    return [base + (step * count + k) * STRIDE for k in range(count)]


def plan(writer: int, steps: int, seed: int) -> list[tuple[str, str, list[int]]]:
    """The ops of one writer: adds of fresh IDs; every 4th op removes some IDs it added to that segment."""
    rng = random.Random(seed * 1000 + writer)
    ops: list[tuple[str, str, list[int]]] = []
    added: dict[str, list[int]] = {name: [] for name in SEGMENTS}
    for step in range(steps):
        name = SEGMENTS[rng.randrange(len(SEGMENTS))]
        if step % 4 == 3 and len(added[name]) >= 5:
            victims = rng.sample(added[name], 5)
            for uid in victims:
                added[name].remove(uid)
            ops.append(("remove", name, victims))
        else:
            ids = writer_ids(writer, step)
            added[name] += ids
            ops.append(("add", name, ids))
    return ops


def expected(ops: list[tuple[str, str, list[int]]]) -> dict[str, set[int]]:
    model: dict[str, set[int]] = {name: set() for name in SEGMENTS}
    for op, name, ids in ops:
        if op == "add":
            model[name].update(ids)
        else:
            model[name].difference_update(ids)
    return model


def api_writer(base_url: str, writer: int, steps: int, seed: int, start: Any) -> dict[str, Any]:
    """Apply :func:`plan` through the API; retry 409/503 (not applied); report the versions seen."""
    ops = plan(writer, steps, seed)
    versions: dict[str, list[int]] = {name: [] for name in SEGMENTS}
    retries = {"409": 0, "503": 0}
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        start.wait(60)
        for op, name, ids in ops:
            while True:
                response = client.post(f"/v1/segments/{name}/{op}", json={"ids": ids})
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                if response.status_code in (409, 503):
                    retries[str(response.status_code)] += 1
                    time.sleep(0.01 * random.random())
                    continue
                if response.status_code != 200:
                    raise AssertionError(f"{op} {name}: {response.status_code} {response.text}")
                versions[name].append(int(response.json()["version"]))
                break
    return {
        "writer": writer,
        "ops": ops,
        "versions": versions,
        "retries": retries,
        "statuses": statuses,
    }


def load_client(
    base_url: str, seconds: float, threads: int, seed: int, segments: list[str], users: int, start: Any
) -> dict[str, Any]:
    """Mixed traffic for ``seconds``: reach 60 %, membership 30 %, small updates 10 %.

    Returns per-kind latencies (seconds) and every error (status >= 500 or a transport error).
    """
    import threading

    latencies: dict[str, list[float]] = {"reach": [], "membership": [], "update": []}
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    start.wait(60)
    deadline = time.monotonic() + seconds

    def run(thread: int) -> None:
        rng = random.Random(seed * 100 + thread)
        local: dict[str, list[float]] = {k: [] for k in latencies}
        local_status: dict[str, int] = {}
        local_errors: list[str] = []
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while time.monotonic() < deadline:
                roll = rng.random()
                try:
                    if roll < 0.6:
                        kind = "reach"
                        a, b, c = rng.sample(segments, 3)
                        expr = rng.choice(
                            [f"{a} & {b}", f"({a} | {b}) & ~{c}", f"{a} - {b} - {c}", f"{a} ^ {b}"]
                        )
                        began = time.perf_counter()
                        response = client.post("/v1/reach", json={"expr": expr})
                    elif roll < 0.9:
                        kind = "membership"
                        uid = rng.randrange(users)
                        began = time.perf_counter()
                        if rng.random() < 0.5:
                            response = client.get(f"/v1/users/{uid}/segments")
                        else:
                            response = client.get(f"/v1/segments/{rng.choice(segments)}/members/{uid}")
                    else:
                        kind = "update"
                        name = f"load_{rng.randrange(4)}"
                        op = "add" if rng.random() < 0.7 else "remove"
                        ids = [rng.randrange(users) for _ in range(rng.randint(1, 20))]
                        began = time.perf_counter()
                        response = client.post(f"/v1/segments/{name}/{op}", json={"ids": ids})
                    elapsed = time.perf_counter() - began
                except httpx.HTTPError as exc:
                    local_errors.append(f"{kind}: {exc!r}")
                    continue
                local[kind].append(elapsed)
                code = str(response.status_code)
                local_status[code] = local_status.get(code, 0) + 1
                if response.status_code >= 400:  # every request is valid: any error status is an error
                    local_errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
        with lock:
            for key, values in local.items():
                latencies[key] += values
            for key, count in local_status.items():
                statuses[key] = statuses.get(key, 0) + count
            errors.extend(local_errors)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"latencies": latencies, "statuses": statuses, "errors": errors}
