"""Load test for `python -m project.serve`: does dynamic batching raise throughput?

Starts the server on a free loopback port once per `--batch-sizes` value (max_batch_size=1 is no
batching), sends a fixed number of requests from N concurrent clients (keep-alive connections, base64
JSON bodies of real digit images), and reports requests/s and p50/p99 latency per setting:

    python benchmarks/serve_load.py --bundle logs/train/runs/<run>/deploy
    python benchmarks/serve_load.py --requests 4000 --clients 32 --batch-sizes 1 8 32
    python benchmarks/serve_load.py --url http://127.0.0.1:8000      # an already running server, as is
    python benchmarks/serve_load.py --soak [--requests 10000]         # soak: malformed requests, memory, no 5xx

`--soak` (see benchmarks/serve_soak.py; `make soak`) exits 1 when the server fails it.

Bounded: `--requests` in total, a 30 s timeout per request, `--startup-timeout` for each server.
Client threads share the machine with the server, so on a small host the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any


def newest_bundle() -> str | None:
    bundles = sorted(glob.glob("logs/train/runs/*/deploy/manifest.json"), key=os.path.getmtime)
    return str(Path(bundles[-1]).parent) if bundles else None


def digit_bodies(count: int = 64) -> list[bytes]:
    """JSON request bodies of real digits."""
    return [json.dumps({"image": base64.b64encode(png).decode()}).encode() for png in digit_pngs(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not healthy after {timeout:.0f} s")


def start_server(args: argparse.Namespace, max_batch_size: int, log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "project.serve",
        f"bundle={args.bundle}",
        f"port={port}",
        f"max_batch_size={max_batch_size}",
        f"batch_timeout={args.batch_timeout}",
        f"paths.log_dir={log_dir}",
        *args.server_args,
    ]
    log = open(log_dir / f"server_bs{max_batch_size}.log", "w")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, args.startup_timeout)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this script started: the server's workers
    proc.wait(timeout=10)


def load(url: str, bodies: list[bytes], requests: int, clients: int) -> dict[str, Any]:
    """`requests` POSTs from `clients` threads, each on its own keep-alive connection."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        mine, failed = [], []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failed.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                failed.append(type(exc).__name__)
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            mine.append(time.perf_counter() - start)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    from serve_soak import run_clients

    seconds = run_clients(client, clients)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "errors": len(errors),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
    }


def digit_pngs(count: int = 64) -> list[bytes]:
    """Real digits (scaled 8×8 PNGs), so the server decodes real images."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    pngs = []
    for image in load_digits().images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image * 16, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def run_soak(args: argparse.Namespace) -> int:
    """Start a server, soak it, stop it; 0 when it passed."""
    from serve_soak import SERVER_SETTINGS, print_summary, soak

    from project import Predictor

    args.bundle = args.bundle or newest_bundle()
    if not args.bundle or not Path(args.bundle).is_dir():
        raise SystemExit("no bundle: pass --bundle PATH/TO/<run>/deploy (or train first: python -m project.train)")
    args.requests = args.requests or 10_000
    args.warmup = min(1000, args.requests // 5) if args.warmup is None else args.warmup
    predictor = Predictor.load(args.bundle)
    images = digit_pngs()
    labels = [p.label for p in predictor.predict(images)]
    given = {a.split("=", 1)[0] for a in args.server_args}
    args.server_args = [s for s in SERVER_SETTINGS if s.split("=", 1)[0] not in given] + args.server_args
    model = next((a.split("=", 1)[1] for a in args.server_args if a.startswith("model_name=")), None)
    log_dir = Path("logs/serve_load") / time.strftime("%Y-%m-%d_%H-%M-%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args, 16, log_dir)
    try:
        result = soak(url, proc.pid, model or predictor.bundle.model_name, images, labels, args)
    finally:
        stop_server(proc)
    print_summary(result, args.max_growth, args.json)
    return 0 if result["passed"] else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="deploy bundle (default: the newest logs/train/runs/*/deploy)")
    parser.add_argument("--url", default=None, help="load an already running server instead of starting one")
    parser.add_argument("--requests", type=int, default=None, help="requests per setting (2000; --soak: 10000)")
    parser.add_argument("--soak", action="store_true", help="soak test (malformed requests, memory growth, no 5xx)")
    parser.add_argument("--malformed", type=float, default=0.1, help="--soak: share of malformed requests")
    parser.add_argument("--stall", type=float, default=3.0, help="--soak: seconds a slow body stalls")
    parser.add_argument("--max-growth", type=float, default=0.10, help="--soak: allowed RSS growth after warm-up")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="max_batch_size values")
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds a batch waits to fill")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured requests first (100; --soak: 1000)")
    parser.add_argument("--startup-timeout", type=float, default=120)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--set",
        dest="server_args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for project.serve, repeatable (e.g. --set torch_threads=1)",
    )
    args = parser.parse_args()
    if args.soak:
        raise SystemExit(run_soak(args))
    args.requests = args.requests or 2000
    args.warmup = 100 if args.warmup is None else args.warmup

    bodies = digit_bodies()
    results = []
    if args.url:
        wait_healthy(args.url, None, args.startup_timeout)
        load(args.url, bodies, args.warmup, args.clients)
        results.append({"max_batch_size": "as configured", **load(args.url, bodies, args.requests, args.clients)})
    else:
        args.bundle = args.bundle or newest_bundle()
        if not args.bundle or not Path(args.bundle).is_dir():
            raise SystemExit("no bundle: pass --bundle PATH/TO/<run>/deploy (or train first: python -m project.train)")
        log_dir = Path("logs/serve_load") / time.strftime("%Y-%m-%d_%H-%M-%S")
        log_dir.mkdir(parents=True, exist_ok=True)
        for batch_size in args.batch_sizes:
            proc, url = start_server(args, batch_size, log_dir)
            try:
                load(url, bodies, args.warmup, args.clients)
                row = {"max_batch_size": batch_size, **load(url, bodies, args.requests, args.clients)}
            finally:
                stop_server(proc)
            results.append(row)
            print(json.dumps(row), file=sys.stderr)

    print(
        f"\n{args.requests} requests, {args.clients} concurrent clients, batch_timeout={args.batch_timeout}s, "
        f"{os.cpu_count()} CPUs (clients and server share them)\n"
    )
    print("| max_batch_size | requests/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['max_batch_size']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    if len(results) > 1 and results[0]["requests_per_s"]:
        print(
            f"\nthroughput ×{results[-1]['requests_per_s'] / results[0]['requests_per_s']:.2f} "
            f"with max_batch_size={results[-1]['max_batch_size']} vs {results[0]['max_batch_size']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
