"""nsa-server through Python's gRPC client (Debian's python3-grpcio) with stubs generated at
test time from proto/nsa/v1/generate.proto: streaming equals non-streaming, a fixed seed gives the
same tokens alone and among 50 concurrent requests, and a bad request gets INVALID_ARGUMENT.

Run: /usr/bin/python3 tests/server/python_client_test.py --server BIN --model DIR
"""
import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import unittest

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = None


def generate_stubs(out_dir):
    subprocess.run(["protoc", f"--proto_path={ROOT}/proto", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "nsa/v1/generate.proto"], check=True)
    for d in (os.path.join(out_dir, "nsa"), os.path.join(out_dir, "nsa", "v1")):
        open(os.path.join(d, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(cls.tmp.name)
        from nsa.v1 import generate_pb2, generate_pb2_grpc
        cls.pb = generate_pb2
        cls.server = subprocess.Popen([ARGS.server, "--model", ARGS.model, "--host", "127.0.0.1", "--grpc-port", "0",
                                       "--metrics-port", "0", "--http-port", "0", "--seed", "9"], stdout=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        address = line.split()[2]
        cls.channel = grpc.insecure_channel(address)
        cls.stub = generate_pb2_grpc.GenerationStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.send_signal(signal.SIGTERM)
        assert cls.server.wait(timeout=60) == 0
        cls.tmp.cleanup()

    def request(self, text, max_tokens, seed, stream=True):
        pb = self.pb
        return pb.GenerateRequest(text=text, stream=stream,
                                  sampling=pb.SamplingParams(temperature=1.0, top_p=0.95, seed=seed),
                                  stop=pb.StopParams(max_tokens=max_tokens, ignore_eos=True))

    def run_request(self, request):
        tokens, text, finals = [], "", []
        for response in self.stub.Generate(request, timeout=120):
            if response.HasField("delta"):
                tokens.extend(response.delta.token_ids)
                text += response.delta.text
            else:
                finals.append(response.final)
        return tokens, text, finals

    def test_streaming_equals_non_streaming(self):
        streamed = self.run_request(self.request("The software", 25, 31))
        whole = self.run_request(self.request("The software", 25, 31, stream=False))
        self.assertEqual(streamed[0], whole[0])
        self.assertEqual(streamed[1], whole[1])
        self.assertEqual(len(streamed[0]), 25)
        self.assertEqual(len(streamed[2]), 1)
        self.assertEqual(streamed[2][0].finish_reason, self.pb.FINISH_REASON_LENGTH)

    def test_seed_alone_and_among_fifty(self):
        target = self.request("Licensed under", 20, 777)
        alone = self.run_request(target)[0]
        requests = [target if i % 10 == 0 else self.request("x" * (i + 1), 8 + i % 5, 1000 + i) for i in range(50)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(self.run_request, requests))
        for i in range(0, 50, 10):
            self.assertEqual(results[i][0], alone, f"request {i}")

    def test_bad_request(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.run_request(self.pb.GenerateRequest())
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("no input", caught.exception.details())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
