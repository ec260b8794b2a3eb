"""64 concurrent SSE streams against `kvfold serve`, a third of whose clients hang up mid-stream:
every other stream completes with its finish reason, the server stays up, and once all is over
every KV block is free again (the dropped clients' generations were aborted, not leaked)."""
import json
import random
import socket
import sys
import threading
import unittest

from serve_testlib import NAME, Server, sse_events

STREAMS = 64
MAX_TOKENS = 128


class ConcurrentStreamsTest(unittest.TestCase):
    def test_disconnects_do_not_disturb_the_rest(self):
        server = Server("--max-num-seqs", "64")
        try:
            rng = random.Random(8)
            plan = [rng.random() < 1 / 3 for _ in range(STREAMS)]  # True: hang up mid-stream
            cut_after = [rng.randint(1, 8) for _ in range(STREAMS)]
            outcomes = [None] * STREAMS
            chat = [i % 2 == 1 for i in range(STREAMS)]

            def run(i):
                c = server.conn(timeout=120)
                if chat[i]:
                    path, body = "/v1/chat/completions", {
                        "messages": [{"role": "user", "content": "Story %d" % i}]}
                else:
                    path, body = "/v1/completions", {"prompt": "Once upon a time %d" % i}
                # The clients that hang up ask for the most, so their generations are surely
                # still running when they go.
                body.update(model=NAME, max_tokens=480 if plan[i] else MAX_TOKENS,
                            ignore_eos=True, stream=True, temperature=0.8, seed=i)
                c.request("POST", path, body=json.dumps(body))
                r = c.getresponse()
                if r.status != 200:
                    outcomes[i] = ("status", r.status)
                    return
                events, finish, done = 0, None, False
                for event in sse_events(r):
                    if event == "[DONE]":
                        done = True
                        break
                    events += 1
                    if plan[i] and events >= cut_after[i]:
                        # Hang up: RST-free close of the socket under the response.
                        c.sock.shutdown(socket.SHUT_RDWR)
                        c.close()
                        outcomes[i] = ("cut", events)
                        return
                    for choice in event["choices"]:
                        if choice["finish_reason"]:
                            finish = choice["finish_reason"]
                outcomes[i] = ("done", finish, done)
                c.close()

            threads = [threading.Thread(target=run, args=(i,)) for i in range(STREAMS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for i, outcome in enumerate(outcomes):
                if plan[i]:
                    self.assertEqual(outcome[0], "cut", (i, outcome))
                else:
                    self.assertEqual(outcome, ("done", "length", True), i)
            # The server is up and serves, and every KV block is free again.
            self.assertEqual(server.request("GET", "/health")[0], 200)
            ready = server.wait_kv_free()
            self.assertEqual(ready["kv_free_blocks"], ready["kv_blocks"], ready)
            self.assertEqual(ready["num_running"], 0, ready)
            status, _, body = server.request(
                "POST", "/v1/completions", {"model": NAME, "prompt": "Hi", "max_tokens": 4})
            self.assertEqual(status, 200, body)
        finally:
            self.assertEqual(server.stop(), 0, server.log())


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
