#!/usr/bin/env python3
"""A real Prometheus server scrapes `kvfold serve` under load (issue 9).

Starts `kvfold serve` on an ephemeral port with the bundled stories260K model, starts Debian's
`prometheus` on loopback scraping it every second, sends a burst of concurrent completions, and
checks with PromQL that the generated-token counter equals what the clients counted and that its
rate over the load agrees. Also checks that every metric docs/metrics.md lists is exported.

The binary comes from $KVFOLD_BIN (ctest sets it), as for the other serve tests.
"""
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from serve_testlib import NAME, REPO, Server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def query(prom_port, expr):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        data = json.loads(r.read())
    assert data["status"] == "success", data
    return data["data"]["result"]


def documented_metrics(source_dir):
    text = open(os.path.join(source_dir, "docs/metrics.md")).read()
    return sorted(set(re.findall(r"^\| `(kvfold_[a-z_]+)`", text, re.M)))


def main():
    source_dir = REPO
    if shutil.which("prometheus") is None:
        print("SKIP: prometheus is absent (scripts/setup.sh installs Debian's package)")
        return 77
    server = Server("--max-model-len", "256")
    port = server.port
    tmp = tempfile.mkdtemp()
    prom = None
    try:
        # Every documented metric is exported (names of histograms as their _count series).
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        exposition = exposition.decode()
        exported = set(re.findall(r"^(kvfold_[a-z_]+?)(?:_bucket|_sum|_count)?[{ ]", exposition,
                                  re.M))
        missing = [m for m in documented_metrics(source_dir) if m not in exported]
        assert not missing, f"documented but not exported: {missing}"

        prom_port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kvfold\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{port}']\n")
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:  # until Prometheus has scraped kvfold once
            try:
                if query(prom_port, 'up{job="kvfold"} == 1'):
                    break
            except OSError:
                pass
            assert time.time() < deadline, "prometheus never scraped kvfold"
            time.sleep(0.5)

        start = time.time()
        prompts = ["Once upon a time", "The little dog", "Lily and Tom", "One day"] * 6
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda p: post(port, "/v1/completions",
                               {"model": NAME, "prompt": p, "max_tokens": 48,
                                "temperature": 0.8, "seed": 1}), prompts))
        load_seconds = time.time() - start
        counted = sum(r["usage"]["completion_tokens"] for r in results)
        assert counted > 0

        time.sleep(3)  # two more scrapes after the load
        total = query(prom_port, "sum(kvfold_generation_tokens_total)")
        assert total, "no kvfold_generation_tokens_total series"
        assert float(total[0]["value"][1]) == counted, (total, counted)

        # The rate over a window holding the whole load, times the window, is the count, up to
        # Prometheus's extrapolation at the window's edges.
        window = int(load_seconds + 6)
        rate = query(prom_port, f"sum(rate(kvfold_generation_tokens_total[{window}s]))")
        assert rate, "no rate"
        estimate = float(rate[0]["value"][1]) * window
        assert abs(estimate - counted) <= 0.35 * counted, (estimate, counted, window)

        done = query(prom_port, 'sum(kvfold_request_success_total{finished_reason="length"}) '
                                '+ sum(kvfold_request_success_total{finished_reason="stop"})')
        assert float(done[0]["value"][1]) == len(prompts), done
        print(f"ok: {counted} tokens counted by the clients, Prometheus says "
              f"{total[0]['value'][1]} (rate x {window}s = {estimate:.0f})")
        return 0
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        assert server.stop() == 0, server.log()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
