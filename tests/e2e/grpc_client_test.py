#!/usr/bin/env python3
"""The gRPC API from Python: a grpcio client generated from proto/kvfold/v1/kvfold.proto at test
time drives a server process (`kvfold serve` over stories260K): Generate, Chat, cancellation
and disconnects freeing the KV cache, grpc.health.v1, server reflection, error codes and the
SIGTERM drain. Exits 77 (ctest: skipped) when the grpcio packages are missing."""

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SKIP = 77
try:
    import grpc
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_tools import protoc
    import tokenizers
except ImportError as error:
    print(f"skipped: {error} (scripts/setup.sh installs grpcio, grpcio-tools, "
          "grpcio-health-checking and grpcio-reflection)")
    sys.exit(SKIP)

ARGS = None
pb = None  # kvfold_pb2, generated in main()
pb_grpc = None


def generate_stubs(source_dir, out_dir):
    proto_root = os.path.join(source_dir, "proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_root}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}",
                      os.path.join(proto_root, "kvfold", "v1", "kvfold.proto")])
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed ({rc})")
    sys.path.insert(0, out_dir)
    global pb, pb_grpc
    from kvfold.v1 import kvfold_pb2, kvfold_pb2_grpc
    pb, pb_grpc = kvfold_pb2, kvfold_pb2_grpc


class Server:
    """`kvfold serve --port 0 --grpc-port 0` in its own process; `port` is its gRPC port, from
    the "grpc on HOST:PORT" line after the "serving ..." one."""

    def __init__(self):
        model = os.path.join(ARGS.source_dir, "models", "stories260K")
        template = os.path.join(ARGS.source_dir, "tests", "fixtures", "chat", "templates",
                                "llama2.jinja")
        self.process = subprocess.Popen(
            [ARGS.server, "serve", "--model", model, "--chat-template", template, "--port", "0",
             "--grpc-port", "0", "--threads", "1", "--kv-cache-memory", "64MiB"],
            stdout=subprocess.PIPE, text=True)
        lines = [self._read_line(timeout=60), self._read_line(timeout=10)]
        if not lines[0].startswith("serving ") or not lines[1].startswith("grpc on "):
            self.process.kill()
            raise RuntimeError(f"kvfold serve said {lines!r}")
        self.port = int(lines[1].strip().rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.KvFoldStub(self.channel)

    def _read_line(self, timeout):
        result = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()))
        reader.start()
        reader.join(timeout)
        return result[0].strip() if result else ""

    def stop(self):
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


def greedy(text, max_tokens, **sampling):
    return pb.GenerateRequest(text=text, sampling=pb.SamplingParams(
        temperature=0, max_tokens=max_tokens, ignore_eos=True, **sampling))


def eventually(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class GrpcClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.stub = cls.server.stub
        cls.hf = tokenizers.Tokenizer.from_file(
            os.path.join(ARGS.source_dir, "models", "stories260K", "tokenizer.json"))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def kv_idle(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest())
        return info.live_requests == 0 and info.kv_pool.free_blocks == info.kv_pool.num_blocks

    def test_generate_streams_the_text_of_its_tokens(self):
        responses = list(self.stub.Generate(greedy("Once upon a time", 40)))
        self.assertGreaterEqual(len(responses), 2)
        tokens = [t for r in responses for t in r.token_ids]
        text = "".join(r.text for r in responses)
        self.assertEqual(len(tokens), 40)
        last = responses[-1]
        self.assertEqual(last.finish_reason, pb.FINISH_REASON_LENGTH)
        for r in responses[:-1]:
            self.assertEqual(r.finish_reason, pb.FINISH_REASON_UNSPECIFIED)
        # Hugging Face tokenizers as the reference: the text is decode(prompt + output) less
        # decode(prompt).
        prompt = self.hf.encode("Once upon a time", add_special_tokens=True).ids
        self.assertEqual(last.usage.prompt_tokens, len(prompt))
        self.assertEqual(last.usage.completion_tokens, 40)
        full = self.hf.decode(prompt + tokens, skip_special_tokens=True)
        head = self.hf.decode(prompt, skip_special_tokens=True)
        self.assertEqual(text, full[len(head):])
        # Greedy decoding is deterministic.
        again = list(self.stub.Generate(greedy("Once upon a time", 40)))
        self.assertEqual("".join(r.text for r in again), text)

    def test_stop_string_never_appears(self):
        text = "".join(r.text for r in self.stub.Generate(greedy("Once upon a time", 60)))
        stop = text[len(text) // 2:len(text) // 2 + 6]
        responses = list(self.stub.Generate(greedy("Once upon a time", 60, stop=[stop])))
        self.assertEqual("".join(r.text for r in responses), text[:text.find(stop)])
        self.assertEqual(responses[-1].finish_reason, pb.FINISH_REASON_STOP)

    def test_chat_renders_the_template(self):
        request = pb.ChatRequest(
            messages=[pb.ChatMessage(role="user", content="Hello there")],
            sampling=pb.SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
        responses = list(self.stub.Chat(request))
        prompt = self.hf.encode("<s>[INST] Hello there [/INST]", add_special_tokens=False).ids
        self.assertEqual(responses[-1].usage.prompt_tokens, len(prompt))
        self.assertEqual(responses[-1].usage.completion_tokens, 16)
        # The same prompt as token ids through Generate gives the same reply.
        by_ids = pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt), sampling=request.sampling)
        self.assertEqual("".join(r.text for r in self.stub.Generate(by_ids)),
                         "".join(r.text for r in responses))

    def test_tokenize_matches_hugging_face(self):
        ids = self.stub.Tokenize(pb.TokenizeRequest(text="The little dog ran.")).token_ids
        self.assertEqual(list(ids), self.hf.encode("The little dog ran.").ids)
        text = self.stub.Detokenize(pb.DetokenizeRequest(token_ids=ids)).text
        self.assertEqual(text, "The little dog ran.")

    def test_cancelling_the_call_frees_its_kv(self):
        call = self.stub.Generate(greedy("Once upon a time", 240))
        next(call)
        call.cancel()
        with self.assertRaises(grpc.RpcError) as raised:
            for _ in call:
                pass
        self.assertEqual(raised.exception.code(), grpc.StatusCode.CANCELLED)
        self.assertTrue(eventually(self.kv_idle))

    def test_disconnecting_frees_its_kv(self):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        call = pb_grpc.KvFoldStub(channel).Generate(greedy("Once upon a time", 240))
        next(call)
        channel.close()
        self.assertTrue(eventually(self.kv_idle))
        # The server goes on serving.
        self.assertTrue(list(self.stub.Generate(greedy("Hi", 3))))

    def test_concurrent_streams_with_cancels(self):
        # 48 streams, 32 at a time; every third is cancelled after its first response. The others
        # complete in full and the KV cache empties.
        def one(i):
            call = self.stub.Generate(greedy("Once upon a time", 60, seed=i))
            if i % 3 == 0:
                next(call)
                call.cancel()
                return None
            return list(call)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(48)))
        for i, responses in enumerate(results):
            if i % 3 == 0:
                continue
            self.assertEqual(responses[-1].finish_reason, pb.FINISH_REASON_LENGTH)
            self.assertEqual(sum(len(r.token_ids) for r in responses), 60)
        self.assertTrue(eventually(self.kv_idle))

    def test_health(self):
        health = health_pb2_grpc.HealthStub(self.server.channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest()).status, serving)
        self.assertEqual(
            health.Check(health_pb2.HealthCheckRequest(service="kvfold.v1.KvFold")).status,
            serving)

    def test_reflection_lists_and_describes_the_services(self):
        reflection = reflection_pb2_grpc.ServerReflectionStub(self.server.channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="kvfold.v1.KvFold")]
        responses = list(reflection.ServerReflectionInfo(iter(requests)))
        names = {s.name for s in responses[0].list_services_response.service}
        self.assertIn("kvfold.v1.KvFold", names)
        self.assertIn("grpc.health.v1.Health", names)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in responses[1].file_descriptor_response.file_descriptor_proto]
        kvfold = next(f for f in files if f.name == "kvfold/v1/kvfold.proto")
        methods = {m.name: m for s in kvfold.service if s.name == "KvFold" for m in s.method}
        self.assertTrue(methods["Generate"].server_streaming)
        self.assertTrue(methods["Chat"].server_streaming)
        self.assertIn("GetModelInfo", methods)

    def test_errors_have_their_codes(self):
        def code(call):
            try:
                result = call()
                if isinstance(result, grpc.Call):  # a stream: the status comes with its end
                    list(result)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        self.assertEqual(code(lambda: self.stub.Generate(greedy("Hi", 4, top_p=0))),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code(lambda: self.stub.Generate(pb.GenerateRequest(
            token_ids=pb.TokenIds(ids=[1, 100000])))), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code(lambda: self.stub.Generate(greedy("Hi", 100000))),
                         grpc.StatusCode.INVALID_ARGUMENT)
        wrong_model = greedy("Hi", 4)
        wrong_model.model = "llama-70b"
        self.assertEqual(code(lambda: self.stub.Generate(wrong_model)), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code(lambda: self.stub.GetModelInfo(pb.GetModelInfoRequest(
            model="llama-70b"))), grpc.StatusCode.NOT_FOUND)


class DrainTest(unittest.TestCase):
    def test_sigterm_finishes_live_streams_then_exits_0(self):
        server = Server()
        try:
            call = server.stub.Generate(greedy("Once upon a time", 200))
            responses = [next(call)]
            server.process.send_signal(signal.SIGTERM)
            responses.extend(call)
            self.assertEqual(responses[-1].finish_reason, pb.FINISH_REASON_LENGTH)
            self.assertEqual(sum(len(r.token_ids) for r in responses), 200)
            self.assertEqual(server.process.wait(timeout=60), 0)
        finally:
            server.stop()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="the kvfold binary")
    parser.add_argument("--source-dir", required=True, help="the repository root")
    ARGS, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as out_dir:
        generate_stubs(ARGS.source_dir, out_dir)
        program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    sys.exit(0 if program.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
