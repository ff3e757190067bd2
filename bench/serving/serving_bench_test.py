"""nsa-bench-serving against the real nsa-server with the tiny model, over gRPC and over HTTP:
short bounded runs complete; the counted tokens equal the server's usage and the deltas of its
Prometheus counters (warm-ups included); the JSON has every field and its figures are the ones
vLLM's calculate_metrics gives for the JSON's own per-request data (recomputed here with
numpy); a concurrency cap holds; bad flags fail with a message; sweep.sh draws a PNG.

Run: /usr/bin/python3 bench/serving/serving_bench_test.py --bench BIN --server BIN --model DIR --sweep SH
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import numpy as np

ARGS = None
PROMPTS, INPUT, OUTPUT, WARMUPS = 12, 24, 8, 2

FIELDS = [
    "date", "backend", "label", "base_url", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
    "input_len", "output_len", "range_ratio", "dataset", "seed", "num_warmups", "percentiles", "goodput_slos",
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
    "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
    "max_concurrent_requests", "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "errors", "error_summary", "warmup", "server_metrics",
] + [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p50", "p90", "p99")]


def counters(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    sums = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


class ServingBenchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = subprocess.Popen(
            [ARGS.server, "--model", ARGS.model, "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
             "--http-port", "0", "--seed", "5"], stdout=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()
        m = re.search(r"grpc 127\.0\.0\.1:(\d+) metrics 127\.0\.0\.1:(\d+) http 127\.0\.0\.1:(\d+) ready", line)
        if not m:
            raise RuntimeError(f"no ready line: {line!r}")
        cls.grpc, cls.metrics, cls.http = (int(g) for g in m.groups())

    @classmethod
    def tearDownClass(cls):
        cls.server.send_signal(signal.SIGTERM)
        assert cls.server.wait(timeout=60) == 0
        cls.tmp.cleanup()

    def bench(self, backend, *flags, check=True):
        port = self.grpc if backend == "grpc" else self.http
        out = os.path.join(self.tmp.name, f"{backend}-{len(os.listdir(self.tmp.name))}.json")
        r = subprocess.run([ARGS.bench, "--backend", backend, "--port", str(port), "--result-json", out, *flags],
                           capture_output=True, text=True, timeout=120)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
            with open(out) as f:
                return json.load(f), r.stdout
        return r

    def check_figures(self, res):
        """The summary figures are vLLM's calculate_metrics applied to the JSON's per-request data."""
        ok = [i for i, e in enumerate(res["errors"]) if not e]
        ttfts = [res["ttfts"][i] for i in ok]
        e2els = [res["latencies"][i] for i in ok]
        outs = [res["output_lens"][i] for i in ok]
        itls = [g for i in ok for g in res["itls"][i]]
        tpots = [(e2els[k] - ttfts[k]) / (outs[k] - 1) for k in range(len(ok)) if outs[k] > 1]
        for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
            self.assertAlmostEqual(res[f"mean_{name}_ms"], np.mean(values) * 1000, delta=1e-9, msg=name)
            self.assertAlmostEqual(res[f"median_{name}_ms"], np.median(values) * 1000, delta=1e-9, msg=name)
            self.assertAlmostEqual(res[f"std_{name}_ms"], np.std(values) * 1000, delta=1e-9, msg=name)
            for p in (50, 90, 99):
                self.assertAlmostEqual(res[f"p{p}_{name}_ms"], np.percentile(values, p) * 1000, delta=1e-9, msg=name)
            self.assertLessEqual(res[f"p50_{name}_ms"], res[f"p90_{name}_ms"] + 1e-12)
            self.assertLessEqual(res[f"p90_{name}_ms"], res[f"p99_{name}_ms"] + 1e-12)
        d = res["duration"]
        self.assertAlmostEqual(res["request_throughput"], len(ok) / d, delta=1e-9)
        self.assertAlmostEqual(res["output_throughput"], sum(res["output_lens"]) / d, delta=1e-9)
        self.assertAlmostEqual(res["total_token_throughput"],
                               (sum(res["input_lens"][i] for i in ok) + sum(res["output_lens"])) / d, delta=1e-9)
        for i in ok:
            self.assertGreater(res["ttfts"][i], 0)
            self.assertLessEqual(res["ttfts"][i], res["latencies"][i])
            # TTFT plus the request's ITLs is its E2EL: every chunk was timed once.
            self.assertAlmostEqual(res["ttfts"][i] + sum(res["itls"][i]), res["latencies"][i], delta=1e-9)
            self.assertGreaterEqual(res["start_times"][i], 0)
            self.assertLessEqual(res["start_times"][i] + res["latencies"][i], d + 1e-6)

    def run_api(self, backend, seed):
        # Seeds differ between the APIs so no prompt hits the prefix cache, whose tokens
        # vllm:prompt_tokens_total leaves out (they count in vllm:prefix_cache_hits_total).
        before = counters(self.metrics)
        res, stdout = self.bench(
            backend, "--num-prompts", str(PROMPTS), "--input-len", str(INPUT), "--output-len", str(OUTPUT),
            "--request-rate", "30", "--num-warmups", str(WARMUPS), "--seed", str(seed), "--goodput", "ttft:60000,tpot:60000",
            "--metrics-url", f"http://127.0.0.1:{self.metrics}/metrics")
        after = counters(self.metrics)
        for field in FIELDS:
            self.assertIn(field, res, field)
        self.assertEqual(res["completed"], PROMPTS, res["error_summary"])
        self.assertEqual(res["failed"], 0)
        self.assertEqual(res["total_output_tokens"], PROMPTS * OUTPUT)
        self.assertEqual(res["output_lens"], [OUTPUT] * PROMPTS)
        self.assertEqual(res["total_input_tokens"], PROMPTS * INPUT)
        self.assertEqual(res["input_lens"], [INPUT] * PROMPTS)
        self.assertAlmostEqual(res["request_goodput"], res["request_throughput"], delta=1e-9)  # generous SLOs
        self.assertEqual(res["warmup"]["completed"], WARMUPS)
        # The server's own counters moved by exactly what was sent, warm-ups included.
        total = PROMPTS + WARMUPS
        self.assertEqual(after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"], total * OUTPUT)
        self.assertEqual(after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"], total * INPUT)
        self.assertEqual(after["vllm:request_success_total"] - before["vllm:request_success_total"], total)
        self.assertEqual(after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"], 0)
        sm = res["server_metrics"]
        self.assertTrue(sm["match"], sm)
        self.assertEqual(sm["client"], {"prompt_tokens": total * INPUT, "generation_tokens": total * OUTPUT,
                                        "requests": total})
        self.assertEqual(sm["server"]["generation_tokens"], total * OUTPUT)
        # Every output token took a step (prefill steps make the first), and no step is free.
        self.assertGreaterEqual(sm["server"]["engine_steps"], OUTPUT)
        self.assertGreater(sm["server"]["mean_engine_step_ms"], 0)
        self.assertLess(sm["server"]["mean_engine_step_ms"], res["mean_e2el_ms"])
        self.check_figures(res)
        self.assertIn("Serving Benchmark Result", stdout)
        self.assertIn("Counts agree (warm-ups included):        yes", stdout)

    def test_grpc(self):
        self.run_api("grpc", seed=1)

    def test_openai(self):
        self.run_api("openai", seed=2)

    def test_openai_chat(self):
        res, _ = self.bench("openai-chat", "--num-prompts", "4", "--input-len", "16", "--output-len", "6",
                            "--request-rate", "inf")
        self.assertEqual(res["completed"], 4, res["error_summary"])
        self.assertEqual(res["output_lens"], [6] * 4)
        self.assertTrue(all(n > 0 for n in res["input_lens"]))  # the server's count, template included
        self.check_figures(res)

    def test_concurrency_cap_and_bursts(self):
        res, _ = self.bench("grpc", "--num-prompts", "8", "--input-len", "16", "--output-len", "12",
                            "--request-rate", "inf", "--max-concurrency", "2")
        self.assertEqual(res["completed"], 8)
        self.assertLessEqual(res["max_concurrent_requests"], 2)
        self.assertEqual(res["max_concurrency"], 2)
        self.assertGreater(max(res["queue_times"]), 0)  # later requests waited for a slot
        self.check_figures(res)
        res, _ = self.bench("openai", "--num-prompts", "6", "--input-len", "8:0.5,32:0.5", "--output-len", "4",
                            "--range-ratio", "0.25", "--request-rate", "50", "--burstiness", "0.5", "--seed", "3")
        self.assertEqual(res["completed"], 6)
        self.assertTrue(all(6 <= n <= 40 for n in res["input_lens"]), res["input_lens"])
        self.assertTrue(all(3 <= n <= 5 for n in res["output_lens"]), res["output_lens"])

    def test_dataset(self):
        path = os.path.join(self.tmp.name, "prompts.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"prompt": "Permission is hereby granted", "output_len": 3}) + "\n")
            f.write(json.dumps({"prompt": [5, 6, 7, 8]}) + "\n")
        res, _ = self.bench("grpc", "--dataset", path, "--num-prompts", "2", "--output-len", "5")
        self.assertEqual(res["output_lens"], [3, 5])
        self.assertEqual(res["input_lens"][1], 4)

    def test_bad_flags(self):
        cases = [
            (["--backend", "tgi"], "--backend must be grpc, openai or openai-chat"),
            (["--request-rate", "0"], "--request-rate must be a positive number or inf"),
            (["--burstiness", "-1"], "--burstiness must be a positive number or inf"),
            (["--num-prompts", "0"], "--num-prompts must be >= 1"),
            (["--input-len", "8192:0.5,abc"], "--input-len: 'abc' is not LENGTH or LENGTH:WEIGHT"),
            (["--goodput", "latency:5"], "--goodput: unknown metric 'latency'"),
            (["--percentiles", "120"], "--percentiles: '120' is not a number in [0, 100]"),
            (["--range-ratio", "1"], "--range-ratio must be in [0, 1)"),
            (["--max-concurrency", "-2"], "--max-concurrency must be >= 0"),
            (["--input-len", "5000"], "exceeds the server's max_model_len 4096"),
            (["--vocab-size", "99999"], "--vocab-size 99999 exceeds the server's vocabulary"),
            (["--dataset", "/nonexistent.jsonl"], "--dataset: cannot open /nonexistent.jsonl"),
            (["stray"], "unexpected argument 'stray'"),
        ]
        for flags, message in cases:
            r = self.bench("grpc", "--num-prompts", "1", *flags, check=False) if "--num-prompts" not in flags else \
                self.bench("grpc", *flags, check=False)
            self.assertEqual(r.returncode, 1, flags)
            self.assertIn(message, r.stderr, flags)
        r = subprocess.run([ARGS.bench, "--backend", "openai", "--port", "1", "--num-prompts", "1"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach http://127.0.0.1:1/v1/models", r.stderr)

    def test_failures_are_counted_and_summarised(self):
        # Ids past the tiny vocabulary (2048): the HTTP API refuses each request with a 400.
        r = self.bench("openai", "--num-prompts", "3", "--input-len", "8", "--output-len", "2", "--vocab-size", "100000",
                       check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("every request failed", r.stderr)
        self.assertRegex(r.stdout, r"Failed requests: +3")
        counts = [int(n) for n in re.findall(r"\n(\d+): HTTP 400: prompt token id \d+ is outside the vocabulary", r.stdout)]
        self.assertEqual(sum(counts), 3, r.stdout)

    def test_sweep_draws_a_png(self):
        out = os.path.join(self.tmp.name, "sweep")
        before = counters(self.metrics)
        # Prompts of 48 tokens fill whole pages (16 tokens at tiny), which the prefix cache keeps.
        r = subprocess.run(
            [ARGS.sweep, "--bench", ARGS.bench, "--grpc", f"127.0.0.1:{self.grpc}", "--http", f"127.0.0.1:{self.http}",
             "--metrics", f"http://127.0.0.1:{self.metrics}/metrics", "--rates", "10 40 inf", "--out", out, "--",
             "--num-prompts", "6", "--input-len", "48", "--output-len", "4", "--seed", "100"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        after = counters(self.metrics)
        # No run found another run's prompts in the prefix cache.
        self.assertGreater(after["vllm:prefix_cache_queries_total"], before["vllm:prefix_cache_queries_total"])
        self.assertEqual(after["vllm:prefix_cache_hits_total"], before["vllm:prefix_cache_hits_total"])
        with open(os.path.join(out, "sweep.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(out, "sweep.tsv")) as f:
            rows = [line.split() for line in f if not line.startswith("#")]
        self.assertEqual(sorted((row[0], row[1]) for row in rows),
                         sorted((api, rate) for api in ("grpc", "openai") for rate in ("10", "40", "inf")))
        for row in rows:
            self.assertEqual(row[3], "6")  # completed
        # Each run sends its own prompts (seed 100 + its place in the order: each rate, gRPC then
        # HTTP) on the same arrival schedule (seed 101).
        for k, (rate, api) in enumerate((rate, api) for rate in ("10", "40", "inf") for api in ("grpc", "openai")):
            with open(os.path.join(out, f"{api}-rate-{rate}.json")) as f:
                result = json.load(f)
            self.assertTrue(result["server_metrics"]["match"])
            self.assertEqual(result["seed"], 100 + k, f"{api} at rate {rate}")
            self.assertEqual(result["arrival_seed"], 101, f"{api} at rate {rate}")
        # Bad seeds are refused before any run.
        for bad in ("-1", "x", "1234567890123456789"):
            r = subprocess.run([ARGS.sweep, "--bench", ARGS.bench, "--grpc", f"127.0.0.1:{self.grpc}", "--out",
                                os.path.join(self.tmp.name, "sweep-bad"), "--", "--seed", bad],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("seeds must be non-negative integers", r.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--sweep", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
