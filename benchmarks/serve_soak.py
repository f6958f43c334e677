"""`python benchmarks/serve_load.py --soak`: a bounded soak of `python -m project.serve` on 127.0.0.1.

`--requests` (default 10,000) from `--clients` (16) threads, `--malformed` (10 %) of them bad in turn: a corrupt
image, a wrong Content-Type, a body above the size limit, a slow body that stalls past `body_timeout`, and
invalid JSON. Good requests alternate `/predict` (base64 JSON, multipart) and V2 infer (BYTES); each answer is
checked against `Predictor` run here on the same images. The first `--warmup` requests are not measured.

Passes (exit 0) when: no 5xx and no connection error, every good request answered correctly, every bad one
with its 4xx, and the RSS of the server's whole process tree grew < `--max-growth` (10 %) after warm-up.
Prints a summary table (and `--json`) with p50/p99 latency of the good requests.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

MALFORMED = ("bad_image", "wrong_type", "oversized", "slow_body", "bad_json")
EXPECTED = {"bad_image": 400, "wrong_type": 415, "oversized": 413, "slow_body": 408, "bad_json": 400}
SERVER_SETTINGS = ("max_payload_mb=1", "body_timeout=2", "max_batch_size=16")


def run_clients(client: Any, count: int) -> float:
    """Run `client` in `count` threads at once; the seconds until the last one finishes."""
    threads = [threading.Thread(target=client) for _ in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def tree_rss(pid: int) -> int:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def good_request(i: int, png: bytes) -> tuple[str, bytes, dict[str, str]]:
    if i % 3 == 0:
        return (
            "/predict",
            json.dumps({"image": base64.b64encode(png).decode()}).encode(),
            {"Content-Type": "application/json"},
        )
    if i % 3 == 1:
        boundary = "soakboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return "/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    v2 = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(png).decode()]}]}
    return "/v2/models/{model}/infer", json.dumps(v2).encode(), {"Content-Type": "application/json"}


def answered_label(path: str, body: bytes) -> str:
    answer = json.loads(body)
    if path == "/predict":
        return answer["label"]
    return next(o for o in answer["outputs"] if o["name"] == "labels")["data"][0]


def slow_body(port: int, stall_s: float) -> int:
    """Headers and a few bytes of a 10 kB body, then silence past the server's body timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=stall_s + 30) as s:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 10000\r\n\r\n"
        s.sendall(head + b"\x89PNG")
        answer = s.makefile("rb").readline().decode("latin-1")  # the server answers once it gives up
    return int(answer.split()[1]) if answer.startswith("HTTP/") else 0


def malformed(kind: str, host: str, port: int, png: bytes, stall_s: float) -> int:
    if kind == "slow_body":
        return slow_body(port, stall_s)
    body, content_type = {
        "bad_image": (png[: len(png) // 2] + b"garbage", "image/png"),
        "wrong_type": (b"hello", "text/plain"),
        "oversized": (b"\0" * ((1 << 20) + 1), "image/png"),
        "bad_json": (b'{"image": ', "application/json"),
    }[kind]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def soak(url: str, pid: int, model: str, images: list[bytes], labels: list[str], args: Any) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    total, warmup = args.requests, min(args.warmup, args.requests // 2)
    every = max(round(1 / args.malformed), 1) if args.malformed > 0 else 0
    lock = threading.Lock()
    counter = iter(range(total))
    latencies: list[float] = []
    problems: dict[str, int] = {"5xx": 0, "wrong_answer": 0, "wrong_status": 0, "connection_error": 0}
    examples: list[str] = []
    sent = {"good": 0, **dict.fromkeys(MALFORMED, 0)}
    rss: dict[str, int] = {}
    warm = threading.Event()

    def note(problem: str, detail: str) -> None:
        with lock:
            problems[problem] += 1
            if len(examples) < 10:
                examples.append(f"{problem}: {detail}")

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            if i == warmup:
                rss["after_warmup"] = tree_rss(pid)
                warm.set()
            image = images[i % len(images)]
            try:
                if every and i % every == every - 1:
                    kind = MALFORMED[(i // every) % len(MALFORMED)]
                    status = malformed(kind, host, int(port), image, args.stall)
                    with lock:
                        sent[kind] += 1
                    if status >= 500:
                        note("5xx", f"{kind} → {status}")
                    elif status != EXPECTED[kind]:
                        note("wrong_status", f"{kind} → {status}, expected {EXPECTED[kind]}")
                    continue
                path, body, headers = good_request(i, image)
                path = path.format(model=model)
                start = time.perf_counter()
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - start
                with lock:
                    sent["good"] += 1
                    if i >= warmup:
                        latencies.append(elapsed)
                if response.status >= 500:
                    note("5xx", f"{path} → {response.status} {data[:200]!r}")
                elif response.status != 200:
                    note("wrong_status", f"{path} → {response.status} {data[:200]!r}")
                elif answered_label(path, data) != labels[i % len(images)]:
                    note("wrong_answer", f"{path}: {data[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                note("connection_error", f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.close()

    seconds = run_clients(client, args.clients)
    rss["end"] = tree_rss(pid)
    ms = sorted(x * 1000 for x in latencies) or [0.0]
    growth = rss["end"] / rss.get("after_warmup", rss["end"]) - 1
    return {
        "requests": total,
        "clients": args.clients,
        "sent": sent,
        "seconds": round(seconds, 1),
        "requests_per_s": round(total / seconds, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "rss_after_warmup_mb": round(rss.get("after_warmup", 0) / 2**20, 1),
        "rss_end_mb": round(rss["end"] / 2**20, 1),
        "rss_growth_pct": round(100 * growth, 2),
        **problems,
        "examples": examples,
        "passed": not any(problems.values()) and growth < args.max_growth,
    }


def print_summary(result: dict[str, Any], max_growth: float, json_path: str | None) -> None:
    sent = ", ".join(f"{k} {v}" for k, v in result["sent"].items())
    print(f"\nsoak: {result['requests']} requests from {result['clients']} clients on 127.0.0.1 ({sent})\n")
    print("| check | value | limit |")
    print("|---|---:|---:|")
    for key, limit in (("5xx", 0), ("wrong_answer", 0), ("wrong_status", 0), ("connection_error", 0)):
        print(f"| {key} | {result[key]} | {limit} |")
    print(f"| RSS growth after warm-up (server tree) | {result['rss_growth_pct']} % | < {100 * max_growth:g} % |")
    print(f"| RSS after warm-up → end | {result['rss_after_warmup_mb']} → {result['rss_end_mb']} MB | |")
    print(f"| good requests p50 / p99 | {result['p50_ms']} / {result['p99_ms']} ms | |")
    print(f"| throughput | {result['requests_per_s']} requests/s | |")
    for example in result["examples"]:
        print(f"  {example}")
    print(f"\nsoak {'PASSED' if result['passed'] else 'FAILED'}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
