"""nsa-gateway in front of two nsa-server processes (real processes, loopback): requests spread
over both, streaming and chat pass through, errors keep their codes, and killing one server
fails over with no client error for new requests. Also a bounded load: 1,000 concurrent SSE
streams through nsa-server's own HTTP port all complete, and a new connection is served while
they are open.

Run: /usr/bin/python3 tests/server/gateway_test.py --server BIN --gateway BIN --model DIR
"""
import argparse
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

ARGS = None


def start(cmd, pattern):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(pattern, line)
    if not m:
        proc.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {line!r}")
    return proc, m


def post(port, path, body, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def routed(port):
    _, data = get(port, "/metrics")
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'nsa_gateway_requests_total\{backend="([^"]+)"\} (\S+)', data.decode())}


class GatewayTest(unittest.TestCase):
    def setUp(self):
        self.servers = []
        addresses = []
        for _ in range(2):
            proc, m = start([ARGS.server, "--model", ARGS.model, "--host", "127.0.0.1", "--grpc-port", "0",
                             "--metrics-port", "0", "--http-port", "-1"], r"grpc (127\.0\.0\.1:\d+)")
            self.servers.append(proc)
            addresses.append(m.group(1))
        self.gateway, m = start([ARGS.gateway, "--backends", ",".join(addresses), "--host", "127.0.0.1",
                                 "--http-port", "0"], r"http 127\.0\.0\.1:(\d+) ready")
        self.port = int(m.group(1))
        deadline = time.monotonic() + 30
        while get(self.port, "/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)

    def tearDown(self):
        for p in [self.gateway] + self.servers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)

    def test_spread_pass_through_and_failover(self):
        results = []

        def one(i):
            results.append(post(self.port, "/v1/completions", {"prompt": f"request {i}", "max_tokens": 12,
                                                               "temperature": 0.8, "seed": i, "ignore_eos": True})[0])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 24)
        spread = routed(self.port)
        self.assertEqual(len(spread), 2)
        self.assertTrue(all(v > 0 for v in spread.values()), spread)

        status, data = post(self.port, "/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True})
        self.assertEqual(status, 200)
        self.assertTrue(data.decode().endswith("data: [DONE]\n\n"))
        status, data = post(self.port, "/v1/completions", {"prompt": "x", "max_tokens": 5, "temperature": -3})
        self.assertEqual(status, 400)
        self.assertIn("temperature", json.loads(data)["error"]["message"])
        status, _ = post(self.port, "/v1/completions", {"model": "nope", "prompt": "x"})
        self.assertEqual(status, 404)

        # One server dies without warning: new requests all succeed on the other.
        self.servers[0].kill()
        self.servers[0].wait()
        for i in range(10):
            status, data = post(self.port, "/v1/completions", {"prompt": f"after {i}", "max_tokens": 6})
            self.assertEqual(status, 200, data)

    def test_thousand_concurrent_streams(self):
        # Straight at one server's own HTTP port (the in-process gateway).
        proc, m = start([ARGS.server, "--model", ARGS.model, "--host", "127.0.0.1", "--grpc-port", "0",
                         "--metrics-port", "0", "--http-port", "0"], r"http 127\.0\.0\.1:(\d+) ready")
        port = int(m.group(1))
        try:
            n = 1000
            ok = [False] * n
            opened = threading.Semaphore(0)

            errors = []

            def stream(i):
                try:
                    one_stream(i)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                    opened.release()

            def one_stream(i):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                body = json.dumps({"prompt": f"s{i}", "max_tokens": 6, "stream": True, "ignore_eos": True})
                conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                opened.release()
                data = resp.read().decode()
                conn.close()
                ok[i] = resp.status == 200 and data.endswith("data: [DONE]\n\n") and data.count('"finish_reason":"length"') == 1

            threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            for _ in range(n // 2):
                opened.acquire(timeout=300)
            # With half the streams or more open, a new connection is still answered.
            started = time.monotonic()
            self.assertEqual(get(port, "/health")[0], 200)
            print(f"\n/health answered in {1e3 * (time.monotonic() - started):.1f} ms with >= {n // 2} streams open",
                  file=sys.stderr)
            for t in threads:
                t.join(timeout=600)
            self.assertEqual(sum(ok), n, f"{len(errors)} client errors, e.g. {errors[:3]}")
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=120), 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--model", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
