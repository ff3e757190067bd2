"""The HTTP API's raw bytes, as curl sees them: SSE headers and framing, [DONE], errors decided
before the status line, API keys (health, ready and metrics stay open), the body limit, and a
client that disconnects mid-stream freeing its request's pages.

Run: /usr/bin/python3 tests/server/http_api_test.py --server BIN --model DIR
"""
import argparse
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

ARGS = None


def poll(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class HttpApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = subprocess.Popen(
            [ARGS.server, "--model", ARGS.model, "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
             "--http-port", "0", "--api-key", "k1", "--max-body-kib", "16"], stdout=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()
        m = re.search(r" http 127\.0\.0\.1:(\d+) ready", line)
        if not m:
            raise RuntimeError(f"no ready line: {line!r}")
        cls.port = int(m.group(1))

    @classmethod
    def tearDownClass(cls):
        cls.server.send_signal(signal.SIGTERM)
        assert cls.server.wait(timeout=60) == 0

    def request(self, method, path, body=None, key="k1", raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=raw if raw is not None else (json.dumps(body) if body is not None else None),
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp, data

    def metric(self, name):
        _, data = self.request("GET", "/metrics", key=None)
        for line in data.decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return None

    def test_sse_bytes_and_headers(self):
        # curl, as a user would: headers with -D, the body unbuffered with -N.
        body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 6, "temperature": 0, "stream": True})
        r = subprocess.run(["curl", "-sN", "-D", "-", "-H", "Authorization: Bearer k1", "-H",
                            "Content-Type: application/json", "-d", body,
                            f"http://127.0.0.1:{self.port}/v1/completions"], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        head, _, text = r.stdout.decode().partition("\r\n\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head.split("\r\n")[1:])}
        self.assertTrue(head.startswith("HTTP/1.1 200"), head)
        self.assertEqual(headers["content-type"], "text/event-stream")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertTrue(text.endswith("data: [DONE]\n\n"), text[-80:])
        events = text.split("\n\n")[:-1]
        for e in events:
            self.assertTrue(e.startswith("data: "), e)
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        self.assertEqual(len({c["created"] for c in chunks}), 1)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        for c in chunks[:-1]:
            self.assertIsNone(c["choices"][0]["finish_reason"])
        self.assertNotIn("usage", chunks[0])  # only with stream_options.include_usage

    def test_errors_before_the_status_line(self):
        resp, data = self.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 5, "stream": True, "top_p": 7})
        self.assertEqual(resp.status, 400)
        err = json.loads(data)["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertEqual(err["param"], "top_p")
        resp, data = self.request("POST", "/v1/completions", raw="{not json")
        self.assertEqual(resp.status, 400)
        resp, data = self.request("POST", "/v1/chat/completions", {"messages": "hi"})
        self.assertEqual(resp.status, 400)
        self.assertEqual(json.loads(data)["error"]["param"], "messages")
        resp, data = self.request("POST", "/v1/completions", {"prompt": "x" * 40000})
        self.assertEqual(resp.status, 413)
        self.assertIn("error", json.loads(data))

    def test_keys_and_open_endpoints(self):
        self.assertEqual(self.request("GET", "/v1/models", key="nope")[0].status, 401)
        self.assertEqual(self.request("GET", "/v1/models", key=None)[0].status, 401)
        self.assertEqual(self.request("GET", "/v1/models")[0].status, 200)
        for path in ("/health", "/ready", "/metrics"):
            self.assertEqual(self.request("GET", path, key=None)[0].status, 200, path)

    def test_tokenize_detokenize(self):
        _, data = self.request("POST", "/tokenize", {"prompt": "Permission is hereby granted"})
        tokens = json.loads(data)["tokens"]
        self.assertEqual(tokens[0], 1)
        _, data = self.request("POST", "/detokenize", {"tokens": tokens})
        self.assertEqual(json.loads(data)["prompt"], "Permission is hereby granted")

    def test_disconnect_frees_pages(self):
        body = json.dumps({"prompt": "a long story", "max_tokens": 3000, "stream": True, "ignore_eos": True})
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(4096)
        poll(lambda: self.metric('vllm:num_requests_running{model_name="tiny"}') == 1.0, 30, "the request to run")
        sock.close()
        poll(lambda: self.metric('vllm:num_requests_running{model_name="tiny"}') == 0.0 and
             self.metric('vllm:kv_cache_usage_perc{model_name="tiny"}') == 0.0, 30, "the pages to come back")
        self.assertGreaterEqual(self.metric('vllm:request_success_total{finished_reason="abort",model_name="tiny"}'), 1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
