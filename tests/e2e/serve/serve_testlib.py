"""Starts the real `kvfold serve` on an ephemeral port for the e2e tests, and raw HTTP helpers.

The binary comes from $KVFOLD_BIN (ctest sets it); the model is the bundled stories260K with the
Llama 2 chat template from the fixtures.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("KVFOLD_BIN", os.path.join(REPO, "build", "kvfold"))
MODEL = os.path.join(REPO, "models", "stories260K")
TEMPLATE = os.path.join(REPO, "tests", "fixtures", "chat", "templates", "llama2.jinja")
NAME = "stories260K"


class Server:
    """`kvfold serve --port 0 ...`; waits for its "serving NAME on http://HOST:PORT" line."""

    def __init__(self, *extra, env=None, on_started=None):
        """`on_started(self)`, when given, runs once the process is started and before its
        "serving" line is awaited (e.g. to start the other node of a multi-node group)."""
        self.stderr = tempfile.TemporaryFile()
        cmd = [BIN, "serve", "--model", MODEL, "--chat-template", TEMPLATE, "--port", "0",
               "--grpc-port", "0", "--threads", "1", "--kv-cache-memory", "64MiB", *extra]
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=full_env, text=True)
        timer = threading.Timer(60, self.proc.kill)
        timer.start()
        if on_started is not None:
            on_started(self)
        line = self.proc.stdout.readline()
        timer.cancel()
        if not line.startswith("serving "):
            raise RuntimeError("kvfold serve did not start: %r\n%s" % (line, self.log()))
        assert line.strip().startswith("serving %s on http://" % NAME), line
        self.port = int(line.rsplit(":", 1)[1])
        self.base_url = "http://127.0.0.1:%d" % self.port

    def log(self):
        if self.stderr.closed:
            return self.final_log
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends `sig` and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.final_log = self.log()
            self.stderr.close()
            self.proc.stdout.close()

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        """One request on a fresh connection: (status, headers dict, parsed JSON or raw bytes)."""
        c = self.conn()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return r.status, dict(r.getheaders()), data

    def ready(self):
        return self.request("GET", "/ready")[2]

    def wait_kv_free(self, timeout=20):
        """Waits until no sequence runs and every KV block is free again; returns /ready's body."""
        deadline = time.time() + timeout
        while True:
            body = self.ready()
            if body["kv_free_blocks"] == body["kv_blocks"] and body["num_running"] == 0 \
                    and body["num_waiting"] == 0:
                return body
            if time.time() > deadline:
                return body
            time.sleep(0.05)


def raw_exchange(port, pieces, delay=0.0, timeout=30):
    """Writes `pieces` (bytes) on a new socket, `delay` seconds apart; returns everything the
    server sends until it closes or a full response has arrived: (status, headers, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        for i, piece in enumerate(pieces):
            if i and delay:
                time.sleep(delay)
            s.sendall(piece)
        return read_response(s)
    finally:
        s.close()


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def post_json_raw(port, path, body_bytes, extra_headers=b""):
    head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body_bytes)).encode() + b"\r\n" + extra_headers +
            b"\r\n")
    return raw_exchange(port, [head + body_bytes])


def sse_events(response):
    """Yields the JSON of each `data:` event of an http.client streaming response; the string
    "[DONE]" for the end marker."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        yield payload if payload == "[DONE]" else json.loads(payload)
