"""The explorer's speed: server time of one slider update, the first move's step search, and
8 concurrent clients making 50 edits each (issue 20's targets).

``attri-ssc serve`` runs as its own process on a free 127.0.0.1 port (the command users run);
this script is its client (httpx), as the page would be:

* **first move**: for each measured attribute of one held-out image, the first move of its
  slider with the ``feedback`` rule. That move runs the rule's per-image step search (Adam on
  the re-read, 60 iterations per sign) once; target <= 2 s.
* **slider update**: the following moves of the same sliders, each to an α not visited before
  (the 0.05 grid of the page's slider, so no answer comes from the server's frame cache), as
  the page sends them while a slider is dragged: edit, decode, re-read and PNGs (no saliency,
  no judge). Targets: median <= 150 ms, p95 <= 300 ms. Reported both as the client's wall time
  per request (HTTP and JSON included) and as the handler's own ``server_ms``.
* **release update**: what the page asks when a slider is released: the same with the saliency
  map (a Jacobian-vector product through the decoder) and the judge's read (every 3rd move).
* **concurrency**: 8 clients, each on its own image and attribute, each making 50 edits one
  after another (a new request when the previous answer arrives, as the page does), with α
  drawn uniformly from [-1, 1] (seeded; no cache hits), as drag updates. Reports p50/p95 latency and errors (a
  4xx/5xx or no answer within 60 s); target 0 errors. Each client's first edit includes its
  step search; the model runs one request at a time, so a request waits behind the others.

The run: ``--run`` or the demo model (``runs/demo/runs/attri_ssc`` from ``make demo``); without
one, a smoke run is trained in a temporary folder and the records say so (``model``: the
demo figures are then pending). The machine is shared: every record carries the load average.

Usage: python bench/bench_serve.py [--run RUN --data DIR] [--attributes 2] [--clients 8 --edits 50] [--rule shift]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import ROOT, emit, load_avg

DEMO_RUN = ROOT / "runs" / "demo" / "runs" / "attri_ssc"
DEMO_DATA = ROOT / "runs" / "demo" / "phantoms"
GRID = [round(-1.0 + 0.05 * i, 2) for i in range(41)]


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if xs else float("nan")


def smoke_run(folder: Path) -> tuple[Path, Path]:
    """A smoke run (18 steps, 32×32) on six phantoms, trained here: (run, data)."""
    from attri_ssc.cli import main
    from attri_ssc.data.phantoms import generate_phantoms

    data = folder / "phantoms"
    generate_phantoms(data, 6, seed=123)
    run = folder / "attri_ssc"
    argv = ["train", "--data", str(data), "--config", "smoke", "--out", str(run), "--no-progress",
            "--set", "data.attributes=[lv_area, myo_area, wall_thickness, infarct_area]",
            "--set", "data.spacing_mm=4.0", "--set", "model.input_size=32", "--set", f"data.cache_dir={folder / 'cache'}"]
    if main(argv) != 0:
        raise SystemExit("could not train the smoke run")
    return run, data


class Server:
    """``python -m attri_ssc serve RUN --port 0`` as a child process."""

    def __init__(self, run: Path, data: Path | None, threads: int):
        argv = [sys.executable, "-m", "attri_ssc", "serve", str(run), "--port", "0"]
        if data is not None:
            argv += ["--data", str(data)]
        if threads:
            argv += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        # from the repository root, where make demo's relative paths (data.cache_dir) point
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.proc.kill()
            raise SystemExit(f"attri-ssc serve did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def edit(client, body: dict) -> tuple[float, dict | None, int]:
    """(wall seconds, reply or None, HTTP status; 0 for no answer)."""
    import httpx

    t0 = time.perf_counter()
    try:
        reply = client.post("/api/edit", json=body)
    except httpx.HTTPError:
        return time.perf_counter() - t0, None, 0
    wall = time.perf_counter() - t0
    return wall, (reply.json() if reply.status_code == 200 else None), reply.status_code


def slider_updates(url: str, items: list[dict], attributes: list[str], moves: int, model: str, rule: str) -> None:
    import httpx

    first, wall, server, release = [], [], [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        item = items[0]["id"]
        edit(client, {"item": item, "attribute": attributes[0], "alpha": 0.0})  # select the image (reconstruction)
        order = [a for a in GRID if a != 0.0]
        random.Random(0).shuffle(order)
        for attribute in attributes:
            seconds, reply, status = edit(client, {"item": item, "attribute": attribute, "alpha": order[0],
                                                   "rule": rule})
            if reply is None:
                raise SystemExit(f"first move failed with HTTP {status}")
            first.append(seconds)
            for k, alpha in enumerate(order[1:moves + 1]):
                drag = {"item": item, "attribute": attribute, "alpha": alpha, "rule": rule, "saliency": False,
                        "judge": False}
                seconds, reply, status = edit(client, drag)
                if reply is None:
                    raise SystemExit(f"slider update failed with HTTP {status}")
                wall.append(seconds)
                server.append(reply["server_ms"] / 1000)
                if k % 3 == 0:
                    seconds, reply, status = edit(client, {**drag, "saliency": True, "judge": True})
                    if reply is None:
                        raise SystemExit(f"release update failed with HTTP {status}")
                    release.append(seconds)
    emit({"bench": "serve_first_move", "model": model, "rule": rule, "attributes": attributes,
          "s": [round(x, 3) for x in first], "median_s": round(statistics.median(first), 3),
          "target_s": 2.0, "met": statistics.median(first) <= 2.0})
    med, p95 = statistics.median(wall) * 1000, percentile(wall, 95) * 1000
    emit({"bench": "serve_slider_update", "model": model, "rule": rule, "n": len(wall),
          "median_ms": round(med, 1), "p95_ms": round(p95, 1),
          "server_median_ms": round(statistics.median(server) * 1000, 1),
          "server_p95_ms": round(percentile(server, 95) * 1000, 1),
          "target_median_ms": 150, "target_p95_ms": 300, "met": med <= 150 and p95 <= 300})
    emit({"bench": "serve_release_update", "model": model, "rule": rule, "n": len(release),
          "median_ms": round(statistics.median(release) * 1000, 1), "p95_ms": round(percentile(release, 95) * 1000, 1),
          "includes": "saliency (JVP through the decoder) and the judge's read"})


def concurrency(url: str, items: list[dict], attributes: list[str], clients: int, edits: int, model: str,
                rule: str) -> None:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        rng = random.Random(100 + k)
        item = items[k % len(items)]["id"]
        attribute = attributes[k % len(attributes)]
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(edits):
                body = {"item": item, "attribute": attribute, "alpha": round(rng.uniform(-1, 1), 4), "rule": rule,
                        "saliency": False, "judge": False}  # as the page sends while a slider moves
                seconds, reply, status = edit(client, body)
                with lock:
                    latencies.append(seconds)
                    if reply is None:
                        errors.append(f"client {k}: HTTP {status or 'no answer within 60 s'}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    emit({"bench": "serve_concurrency", "model": model, "rule": rule, "clients": clients, "edits_per_client": edits,
          "requests": len(latencies), "errors": len(errors), "error_examples": errors[:3],
          "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p95_ms": round(percentile(latencies, 95) * 1000, 1),
          "max_ms": round(max(latencies) * 1000, 1), "seconds": round(total, 1),
          "edits_per_s": round(len(latencies) / total, 2), "target_errors": 0, "met": not errors})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run folder (default: the demo model, if present)")
    parser.add_argument("--data", type=Path, default=None, help="its data folder (default: the one it recorded)")
    parser.add_argument("--attributes", type=int, default=2, help="sliders to move on the timed image (default 2)")
    parser.add_argument("--moves", type=int, default=30, help="slider updates per attribute after the first (<= 39)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (0: skip that part)")
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the server (0: torch's default)")
    parser.add_argument("--rule", default="feedback", help="edit rule (default feedback, the page's default)")
    args = parser.parse_args()

    temp = None
    if args.run is not None:
        run, data, model = args.run, args.data, f"given run {args.run}"
    elif (DEMO_RUN / "model.json").exists():
        run, data, model = DEMO_RUN, args.data or (DEMO_DATA if DEMO_DATA.is_dir() else None), "demo"
    else:
        temp = tempfile.TemporaryDirectory(prefix="bench-serve-")
        run, data = smoke_run(Path(temp.name))
        model = "smoke (no demo model: run `make demo` first; the demo figures are pending)"
        emit({"bench": "serve_note", "note": "no demo model at runs/demo/runs/attri_ssc; measured on a smoke run "
                                             "(tiny preset, 32x32), not the demo model"})
    import httpx

    server = Server(run, data, args.threads)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            info = client.get("/api/info").json()
            items = client.get("/api/items").json()["items"]
        if len(items) < 1:
            raise SystemExit("the run has no held-out items to edit")
        names = [a["name"] for a in info["attributes"]]
        emit({"bench": "serve_setup", "model": model, "run": str(run), "image_shape": info["image_shape"],
              "items": len(items), "server_threads": args.threads or "torch default", "load_at_start": load_avg()})
        slider_updates(server.url, items, names[:max(1, args.attributes)], min(args.moves, 39), model, args.rule)
        if args.clients > 0:
            concurrency(server.url, items[1:] or items, names, args.clients, args.edits, model, args.rule)
    finally:
        server.close()
        if temp is not None:
            temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
