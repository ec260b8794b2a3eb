"""`kvfold serve`'s error answers over raw sockets: bad bodies, limits, auth, unknown models and
paths, oversized and slow requests, a full queue (429), and SIGTERM's drain (503, exit 0)."""
import json
import signal
import socket
import sys
import threading
import time
import unittest

from serve_testlib import NAME, Server, post_json_raw, raw_exchange, sse_events


def error_of(body):
    return json.loads(body)["error"]


class HttpErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-request-bytes", "65536")

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def post(self, path, body_bytes):
        return post_json_raw(self.server.port, path, body_bytes)

    def assertError(self, response, status, type_=None, message=None, param=None):
        got_status, _, body = response
        self.assertEqual(got_status, status, body)
        e = error_of(body)
        self.assertEqual(e["code"], status)
        if type_:
            self.assertEqual(e["type"], type_)
        if message:
            self.assertIn(message, e["message"])
        if param:
            self.assertEqual(e["param"], param)
        return e

    def test_malformed_json(self):
        self.assertError(self.post("/v1/completions", b'{"model": "stories260K", "prompt": '),
                         400, "invalid_request_error")

    def test_wrong_types(self):
        body = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": "ten"}).encode()
        self.assertError(self.post("/v1/completions", body), 400, param="max_tokens")
        body = json.dumps({"model": NAME, "messages": "hi"}).encode()
        self.assertError(self.post("/v1/chat/completions", body), 400, param="messages")

    def test_invalid_utf8(self):
        body = b'{"model": "stories260K", "prompt": "caf\xc3"}'
        self.assertError(self.post("/v1/completions", body), 400, message="UTF-8")

    def test_prompt_longer_than_context(self):
        body = json.dumps({"model": NAME, "prompt": "the cat sat " * 400}).encode()
        self.assertError(self.post("/v1/completions", body), 400,
                         message="maximum context length")

    def test_max_tokens_too_large(self):
        body = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 100000}).encode()
        self.assertError(self.post("/v1/completions", body), 400, message="context")

    def test_n_over_limit(self):
        body = json.dumps({"model": NAME, "prompt": "hi", "n": 17}).encode()
        self.assertError(self.post("/v1/completions", body), 400, param="n")

    def test_prompt_logprobs_over_limit(self):
        body = json.dumps({"model": NAME, "prompt": "hi", "prompt_logprobs": 21}).encode()
        self.assertError(self.post("/v1/completions", body), 400, param="prompt_logprobs")

    def test_unknown_model(self):
        body = json.dumps({"model": "gpt-9", "prompt": "hi"}).encode()
        self.assertError(self.post("/v1/completions", body), 404, "not_found_error",
                         "The model `gpt-9` does not exist.")

    def test_unknown_path_and_wrong_method(self):
        status, _, body = raw_exchange(self.server.port,
                                       [b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n"])
        self.assertEqual(status, 404)
        self.assertEqual(error_of(body)["code"], 404)
        status, _, body = raw_exchange(self.server.port,
                                       [b"GET /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"])
        self.assertEqual(status, 405)

    def test_oversized_body(self):
        body = json.dumps({"model": NAME, "prompt": "x" * 70000}).encode()
        self.assertError(self.post("/v1/completions", body), 413, message="--max-request-bytes")

    def test_request_in_slow_pieces(self):
        body = json.dumps({"model": NAME, "prompt": "Once upon a time", "max_tokens": 5,
                           "temperature": 0}).encode()
        raw = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        pieces = [raw[i:i + 40] for i in range(0, len(raw), 40)]
        status, _, data = raw_exchange(self.server.port, pieces[:6] + [b"".join(pieces[6:])],
                                       delay=0.15)
        self.assertEqual(status, 200, data)
        self.assertEqual(json.loads(data)["usage"]["completion_tokens"], 5)

    def test_health_ready_and_tokenize(self):
        status, _, _ = self.server.request("GET", "/health")
        self.assertEqual(status, 200)
        status, _, ready = self.server.request("GET", "/ready")
        self.assertEqual(status, 200)
        self.assertTrue(ready["ready"])
        status, _, tok = self.server.request(
            "POST", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(status, 200)
        self.assertEqual(tok["count"], len(tok["tokens"]))
        self.assertEqual(tok["max_model_len"], 512)
        status, _, detok = self.server.request("POST", "/detokenize", {"tokens": tok["tokens"]})
        self.assertIn("hi", detok["prompt"])
        self.assertIn("[INST]", detok["prompt"])


class ApiKeyTest(unittest.TestCase):
    def test_bearer_key(self):
        server = Server(env={"KVFOLD_API_KEY": "s3cret"})
        try:
            self.assertEqual(server.request("GET", "/v1/models")[0], 401)
            self.assertEqual(server.request("GET", "/v1/models",
                                            headers={"Authorization": "Bearer nope"})[0], 401)
            status, _, body = server.request(
                "POST", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 2})
            self.assertEqual(status, 401)
            self.assertEqual(body["error"]["code"], 401)
            self.assertEqual(server.request("GET", "/v1/models",
                                            headers={"Authorization": "Bearer s3cret"})[0], 200)
            self.assertEqual(server.request("GET", "/health")[0], 200)
            self.assertEqual(server.request("GET", "/ready")[0], 200)
        finally:
            self.assertEqual(server.stop(), 0)


class SmallLimitsTest(unittest.TestCase):
    def test_429_with_retry_after_and_timeout_for_an_unfinished_request(self):
        server = Server("--max-queued-requests", "0", "--read-timeout", "1")
        try:
            # Half a request head, then silence past --read-timeout: the server hangs up.
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            self.assertEqual(s.recv(100), b"")
            s.close()
            status, headers, body = server.request(
                "POST", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 2})
            self.assertEqual(status, 429, body)
            self.assertGreaterEqual(int(headers["Retry-After"]), 1)
            self.assertEqual(body["error"]["code"], 429)
        finally:
            self.assertEqual(server.stop(), 0)


class DrainTest(unittest.TestCase):
    def test_sigterm_finishes_in_flight_then_exits_0(self):
        # One sequence at a time, so the queued generations keep the drain going for a while.
        server = Server("--max-num-seqs", "1", "--drain-timeout", "60")
        idle = server.conn()  # a kept-alive connection opened before the signal
        idle.request("GET", "/health")
        self.assertEqual(idle.getresponse().read(), b"{}")
        streams, results = [], []
        for _ in range(3):
            c = server.conn()
            c.request("POST", "/v1/completions", body=json.dumps(
                {"model": NAME, "prompt": "Once upon a time", "max_tokens": 480, "n": 4,
                 "ignore_eos": True, "stream": True}))
            r = c.getresponse()  # the head is written once the generations are queued
            self.assertEqual(r.status, 200)
            streams.append(r)

        def consume(r):
            finishes, done = {}, False
            for event in sse_events(r):
                if event == "[DONE]":
                    done = True
                    continue
                for choice in event["choices"]:
                    if choice["finish_reason"]:
                        finishes[choice["index"]] = choice["finish_reason"]
            results.append((finishes, done))

        threads = [threading.Thread(target=consume, args=(r,)) for r in streams]
        for t in threads:
            t.start()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        idle.request("POST", "/v1/completions",
                     body=json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 2}))
        r = idle.getresponse()
        self.assertEqual(r.status, 503)
        self.assertEqual(json.loads(r.read())["error"]["code"], 503)
        for t in threads:
            t.join(60)
        idle.close()
        for r in streams:
            r.close()
        self.assertEqual(server.stop(timeout=60), 0, server.log())
        self.assertEqual(len(results), 3)
        for finishes, done in results:
            self.assertTrue(done)
            self.assertEqual(finishes, {0: "length", 1: "length", 2: "length", 3: "length"})


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
