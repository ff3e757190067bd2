#!/usr/bin/python3
"""bench/results.py: fragments from raw outputs, and splicing them into RESULTS.md.

Run: /usr/bin/python3 bench/results_test.py
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "results.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, check=True).stdout


class ResultsTest(unittest.TestCase):
    def test_cpu_fragment_reads_google_benchmark_and_serving_json(self):
        with tempfile.TemporaryDirectory() as out:
            bench = {"benchmarks": [
                {"name": "BM_Decode/tiny/16", "real_time": 500.0, "time_unit": "us"},  # 2000 tok/s
                {"name": "BM_Prefill/tiny/256", "real_time": 50.0, "time_unit": "ms"},  # 5120 tok/s
            ]}
            with open(os.path.join(out, "cpu_decode_bench.json"), "w") as f:
                json.dump(bench, f)
            with open(os.path.join(out, "scheduler_bench.json"), "w") as f:
                json.dump({"benchmarks": [{"name": "BM_SchedulerStep/256", "real_time": 16000.0, "time_unit": "ns"}]}, f)
            with open(os.path.join(out, "serving_grpc.json"), "w") as f:
                json.dump({"completed": 12, "request_throughput": 3.5, "output_throughput": 99.0, "median_ttft_ms": 7.25,
                           "p99_ttft_ms": 20.0, "median_tpot_ms": 1.5, "median_e2el_ms": 40.0}, f)
            run("cpu", out)
            text = open(os.path.join(out, "results-cpu.md")).read()
            self.assertTrue(text.startswith("<!-- generated:cpu:begin -->"))
            self.assertTrue(text.rstrip().endswith("<!-- generated:cpu:end -->"))
            self.assertIn("| `tiny` | 2000 tok/s | - | - | 5120 tok/s | - |", text)
            self.assertIn("| `BM_SchedulerStep/256` | 16.000 us |", text)
            self.assertIn("through grpc: 12 requests, 3.50 req/s, 99 output tok/s; TTFT median/p99 7.2/20.0 ms", text)

    def test_splice_replaces_the_block_and_appends_when_absent(self):
        with tempfile.TemporaryDirectory() as d:
            results = os.path.join(d, "RESULTS.md")
            frag = os.path.join(d, "frag.md")
            with open(results, "w") as f:
                f.write("# Results\n\nhand-written\n\n<!-- generated:cpu:begin -->\nold\n<!-- generated:cpu:end -->\n\ntail\n")
            with open(frag, "w") as f:
                f.write("<!-- generated:cpu:begin -->\nnew\n<!-- generated:cpu:end -->\n")
            run("splice", frag, "--results", results)
            text = open(results).read()
            self.assertIn("new", text)
            self.assertNotIn("old", text)
            self.assertIn("hand-written", text)
            self.assertIn("tail", text)
            with open(frag, "w") as f:
                f.write("<!-- generated:gpu:begin -->\ngpu table\n<!-- generated:gpu:end -->\n")
            run("splice", frag, "--results", results)
            text = open(results).read()
            self.assertTrue(text.rstrip().endswith("<!-- generated:gpu:end -->"))
            self.assertIn("new", text)

    def test_gpu_fragment_counts_tests_and_keeps_tables(self):
        with tempfile.TemporaryDirectory() as out:
            with open(os.path.join(out, "gpu.txt"), "w") as f:
                f.write("name, driver_version, memory.total [MiB]\nNVIDIA H100 80GB HBM3, 580, 81559 MiB\n")
            with open(os.path.join(out, "nsa_decode_test.log"), "w") as f:
                f.write("[  PASSED  ] 8 tests.\n[  FAILED  ] 1 test, listed below:\n")
            with open(os.path.join(out, "e2e_decode_bench.md"), "w") as f:
                f.write("device: X\n\n### 1.3b: cuda\n\n| a | b |\n|---|---|\n| 1 | 2 |\nnoise\n")
            run("gpu", out)
            text = open(os.path.join(out, "results-gpu.md")).read()
            self.assertIn("Card: NVIDIA H100 80GB HBM3", text)
            self.assertIn("`nsa_decode_test` 8 passed, 1 failed", text)
            self.assertIn("#### 1.3b: cuda", text)
            self.assertIn("| 1 | 2 |", text)
            self.assertNotIn("noise", text)
            self.assertIn("`bash bench/gpu/run-all.sh OUT`", text)
            # Files gathered from several calls: the provenance names the commands, not run-all.sh.
            with open(os.path.join(out, "provenance.txt"), "w") as f:
                f.write("Which build made each file:\n- abc1234, call 1: nsa_decode_test.log\n")
            run("gpu", out)
            text = open(os.path.join(out, "results-gpu.md")).read()
            self.assertNotIn("run-all.sh OUT` on the GPU machine", text)
            self.assertIn("- abc1234, call 1: nsa_decode_test.log", text)


if __name__ == "__main__":
    unittest.main()
