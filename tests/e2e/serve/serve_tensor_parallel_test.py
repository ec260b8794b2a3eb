"""Tensor parallelism end to end with the real binary on stories260K (8 heads, 4 KV heads):

- `serve --tensor-parallel-size 2` (one node, a follower process) answers greedy completions with
  the same text as one rank, and sizes its KV pool per rank (each rank holds half the KV heads, so
  the same --kv-cache-memory holds twice the blocks);
- two "nodes" on this machine (two processes with --nnodes 2 and different --node-rank, the
  leader's Cluster service on 127.0.0.1 with an ephemeral port) give the same greedy text as one
  process, for `generate` and for `serve` over HTTP;
- killing the follower node mid-generation makes the leader fail loudly within a bound far above
  its --tensor-parallel-timeout (not a timing measurement: a hung leader would never exit): serve's
  in-flight request ends with an error, the server exits 1; generate exits 1.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from serve_testlib import BIN, MODEL, NAME, Server

PROMPTS = ["Once upon a time", "The cat sat on", "Lily and Ben"]
LEADER_LINE = re.compile(r"tensor-parallel leader on (\S+):(\d+)")


def completion(server, prompt, max_tokens=40):
    status, _, body = server.request("POST", "/v1/completions", {
        "model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert status == 200, body
    return body["choices"][0]["text"]


def wait_for_leader_port(read_log, proc, timeout=60):
    """The port the leader's Cluster service bound (it prints it before waiting for the nodes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = LEADER_LINE.search(read_log())
        if m:
            return int(m.group(2))
        if proc.poll() is not None:
            raise RuntimeError("the leader exited: %s" % read_log())
        time.sleep(0.05)
    raise RuntimeError("the leader printed no address: %s" % read_log())


class FollowerNode:
    """`kvfold COMMAND --nnodes 2 --node-rank 1 --leader-address 127.0.0.1:PORT`."""

    def __init__(self, command, port, *extra):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [BIN, command, "--model", MODEL, "--threads", "1", "--tensor-parallel-size", "2",
             "--nnodes", "2", "--node-rank", "1", "--leader-address", "127.0.0.1:%d" % port,
             *extra], stdout=subprocess.DEVNULL, stderr=self.stderr)

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def leader_flags(timeout=30):
    return ["--tensor-parallel-size", "2", "--nnodes", "2", "--node-rank", "0",
            "--leader-address", "127.0.0.1:0", "--tensor-parallel-timeout", str(timeout)]


def start_two_node_server(timeout=30):
    """A serving leader and its follower node; returns (server, follower)."""
    follower = []

    def start_follower(server):
        port = wait_for_leader_port(server.log, server.proc)
        follower.append(FollowerNode("serve", port))

    server = Server(*leader_flags(timeout), on_started=start_follower)
    return server, follower[0]


class ServeTensorParallelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        one = Server()
        try:
            cls.reference = [completion(one, p) for p in PROMPTS]
            cls.one_rank_blocks = one.ready()["kv_blocks"]
        finally:
            assert one.stop() == 0, one.log()

    def test_two_ranks_on_one_node_match_one_rank(self):
        server = Server("--tensor-parallel-size", "2")
        try:
            self.assertEqual([completion(server, p) for p in PROMPTS], self.reference)
            # Per-rank budget: a rank stores half the KV heads, so the same bytes hold twice the
            # blocks (up to the rounding down of each count).
            blocks = server.ready()["kv_blocks"]
            self.assertLessEqual(abs(blocks - 2 * self.one_rank_blocks), 1,
                                 (blocks, self.one_rank_blocks))
        finally:
            self.assertEqual(server.stop(), 0, server.log())
        self.assertIn("per rank (tensor-parallel size 2)", server.log())

    def test_an_idle_server_outlives_its_followers_timeout(self):
        # The followers wait for each step with --tensor-parallel-timeout; an idle leader sends
        # keepalives (about once a second), so idling for longer than the timeout is no failure.
        server = Server("--tensor-parallel-size", "2", "--tensor-parallel-timeout", "2")
        try:
            time.sleep(5)
            self.assertEqual(server.proc.poll(), None, server.log())
            self.assertEqual(completion(server, PROMPTS[0]), self.reference[0])
        finally:
            self.assertEqual(server.stop(), 0, server.log())

    def test_two_nodes_match_one_process(self):
        server, follower = start_two_node_server()
        try:
            self.assertEqual([completion(server, p) for p in PROMPTS], self.reference)
            self.assertTrue(server.ready()["ready"])
        finally:
            self.assertEqual(server.stop(), 0, server.log())
        # The leader's stop ends the follower node cleanly.
        self.assertEqual(follower.wait(), 0, follower.log())

    def expect_the_server_fails_when(self, server, kill_follower):
        """Runs a long streaming request, calls kill_follower() while it generates, and expects
        the request not to complete normally and the server to exit 1."""
        try:
            completion(server, "Once", max_tokens=2)  # the group runs
            outcome = {}

            def long_request():
                try:
                    c = server.conn(timeout=120)
                    c.request("POST", "/v1/completions", body=json.dumps({
                        "model": NAME, "prompt": "Once upon a time", "max_tokens": 480,
                        "ignore_eos": True, "stream": True, "temperature": 0}))
                    r = c.getresponse()
                    outcome["status"] = r.status
                    outcome["body"] = r.read().decode("utf-8", "replace")
                    c.close()
                except Exception as e:  # the server may close the connection as it exits
                    outcome["error"] = repr(e)

            t = threading.Thread(target=long_request)
            t.start()
            time.sleep(0.5)  # the request is generating
            kill_follower()
            t.join(120)
            self.assertFalse(t.is_alive())
            # An error status, an error in the stream, or the connection cut by the exiting
            # server; never a normal end.
            self.assertFalse(outcome.get("status") == 200 and
                             '"finish_reason":"length"' in outcome.get("body", ""), outcome)
            # The leader exits non-zero within a bound (12x its timeout).
            self.assertEqual(server.proc.wait(60), 1, server.log())
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
            server.stop()
        self.assertIn("tensor-parallel group failed", server.final_log)

    def test_killing_the_follower_node_fails_the_server(self):
        server, follower = start_two_node_server(timeout=5)

        def kill():
            follower.proc.kill()
            follower.proc.wait()
        self.expect_the_server_fails_when(server, kill)

    def test_killing_a_follower_process_fails_the_server(self):
        server = Server("--tensor-parallel-size", "2", "--tensor-parallel-timeout", "5")
        children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        self.assertEqual(len(children), 1, children)
        self.expect_the_server_fails_when(server,
                                          lambda: os.kill(int(children[0]), signal.SIGKILL))
        # The leader leaves no follower behind.
        self.assertFalse(os.path.exists("/proc/%s" % children[0]) and
                         "Z" not in open("/proc/%s/stat" % children[0]).read().split()[2])


class GenerateTwoNodesTest(unittest.TestCase):
    def run_generate(self, *flags, max_tokens=40):
        return subprocess.run(
            [BIN, "generate", "--model", MODEL, "--threads", "1", "--prompt", "Once upon a time",
             "--max-tokens", str(max_tokens), *flags], capture_output=True, text=True,
            timeout=120)

    def start_leader(self, max_tokens, timeout=30):
        err = tempfile.TemporaryFile()
        leader = subprocess.Popen(
            [BIN, "generate", "--model", MODEL, "--threads", "1", "--prompt", "Once upon a time",
             "--max-tokens", str(max_tokens), *leader_flags(timeout)],
            stdout=subprocess.PIPE, stderr=err, text=True)

        def log():
            err.seek(0)
            return err.read().decode("utf-8", "replace")
        return leader, log

    def test_two_nodes_match_one_process(self):
        one = self.run_generate()
        self.assertEqual(one.returncode, 0, one.stderr)
        leader, log = self.start_leader(40)
        follower = FollowerNode("generate", wait_for_leader_port(log, leader))
        out, _ = leader.communicate(timeout=120)
        leader.stdout.close()
        self.assertEqual(leader.returncode, 0, log())
        self.assertEqual(out, one.stdout)
        self.assertEqual(follower.wait(), 0, follower.log())
        self.assertIn("tp: rank 0 of 2", log())

    def test_killing_the_follower_node_fails_the_leader(self):
        leader, log = self.start_leader(480, timeout=5)
        follower = FollowerNode("generate", wait_for_leader_port(log, leader))
        # The leader prints the prompt once every rank has its shard, just before the first step.
        self.assertEqual(leader.stdout.read(len("Once upon a time")), "Once upon a time")
        follower.proc.kill()
        follower.proc.wait()
        try:
            code = leader.wait(60)
        finally:
            if leader.poll() is None:
                leader.kill()
        leader.stdout.close()
        self.assertEqual(code, 1, log())
        self.assertIn("tensor-parallel", log())


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
