#!/usr/bin/python3
"""Regenerates the machine-written parts of bench/RESULTS.md from one machine's raw outputs.

    bench/results.py cpu OUT   OUT from bench/cpu/run-all.sh: writes OUT/results-cpu.md
    bench/results.py gpu OUT   OUT from bench/gpu/run-all.sh: writes OUT/results-gpu.md
    bench/results.py splice FRAGMENT [--results bench/RESULTS.md]
                               replaces the block between <!-- generated:KIND:begin --> and
                               <!-- generated:KIND:end --> (KIND from the fragment's first line)

Each fragment names its machine, date, commit and commands. Only the standard library: it runs
on the GPU machine too.
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))


def commit():
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        # The GPU machine's copy of the tree has no .git: bench/gpu/stage.sh wrote the commit.
        return read(os.path.join(HERE, "..", "stage", "COMMIT")).strip() or "unknown"


def commit_of(out):
    """The commit the run was made from (its commit.txt), else this checkout's."""
    return read(os.path.join(out, "commit.txt")).strip() or commit()


def read(path, default=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return default


def gbench(path):
    """Google Benchmark JSON -> {name: entry}."""
    try:
        return {b["name"]: b for b in json.loads(read(path, "{}")).get("benchmarks", [])}
    except json.JSONDecodeError:
        return {}


def us(entry):
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[entry.get("time_unit", "ns")]
    return entry["real_time"] * scale


def cpu_fragment(out, archive=None):
    lines = ["<!-- generated:cpu:begin -->", "## CPU machine (generated)", ""]
    machine = read(os.path.join(out, "machine.txt")).strip() or "unknown machine"
    kept = f"; this run's small files are in `{archive}/`" if archive else ""
    lines += [f"Machine: {machine}. Date {date.today()}, commit {commit_of(out)}. Command: `bash bench/cpu/run-all.sh OUT` "
              f"(raw outputs in OUT{kept}).", ""]
    dec = gbench(os.path.join(out, "cpu_decode_bench.json"))
    if dec:
        lines += ["| CPU reference | decode ctx 16 | ctx 256 | ctx 2048 | prefill 256 | prefill 2048 |", "|---|---|---|---|---|---|"]
        for preset in ("tiny", "tiny_paper"):
            cells = []
            for name in (f"BM_Decode/{preset}/16", f"BM_Decode/{preset}/256", f"BM_Decode/{preset}/2048"):
                e = dec.get(name)
                cells.append(f"{1e6 / us(e):.0f} tok/s" if e else "-")
            for n in (256, 2048):
                e = dec.get(f"BM_Prefill/{preset}/{n}")
                cells.append(f"{n * 1e6 / us(e):.0f} tok/s" if e else "-")
            lines.append(f"| `{preset.replace('_', '-')}` | " + " | ".join(cells) + " |")
        lines += ["", "Target: `tiny` decodes >= 200 tokens/s for one stream.", ""]
    kv = gbench(os.path.join(out, "kv_cache_bench.json"))
    sch = gbench(os.path.join(out, "scheduler_bench.json"))
    if kv or sch:
        lines += ["| host-side operation | time |", "|---|---|"]
        for name, e in list(kv.items()) + list(sch.items()):
            lines.append(f"| `{name}` | {us(e):.3f} us |")
        lines += ["", "Targets: >= 1M page operations/s; scheduler step <= 200 us at 256 sequences.", ""]
    for api in ("grpc", "openai"):
        r = read(os.path.join(out, f"serving_{api}.json"))
        if not r:
            continue
        j = json.loads(r)
        lines.append(f"Serving, `tiny` on the CPU server through {api}: {j.get('completed')} requests, "
                     f"{j.get('request_throughput', 0):.2f} req/s, {j.get('output_throughput', 0):.0f} output tok/s; "
                     f"TTFT median/p99 {j.get('median_ttft_ms', 0):.1f}/{j.get('p99_ttft_ms', 0):.1f} ms, "
                     f"TPOT median {j.get('median_tpot_ms', 0):.1f} ms, E2EL median {j.get('median_e2el_ms', 0):.0f} ms "
                     f"(`{read(os.path.join(out, 'serving_command.txt')).strip() or 'nsa-bench-serving'}`).")
        lines.append("")
    if os.path.exists(os.path.join(out, "sweep", "sweep.png")):
        where = f"`{archive}/sweep.png`" if archive else "`OUT/sweep/sweep.png`"
        lines += [f"Sweep of both APIs against request rate (tiny, CPU server): {where}.", ""]
    lines.append("<!-- generated:cpu:end -->")
    return "\n".join(lines) + "\n"


def read_json(path):
    """A JSON file, or its .gz copy (the repository keeps the generator's JSONs gzipped)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz", "rt", encoding="utf-8") as f:
            return json.load(f)
    return None


def serving_row(j, name):
    sm = j.get("server_metrics", {})
    step = sm.get("server", {}).get("mean_engine_step_ms")
    agree = "yes" if sm.get("match") else ("no" if sm else "-")
    return (f"| {name} | {j.get('completed')}/{j.get('completed', 0) + j.get('failed', 0)} | "
            f"{j.get('request_throughput', 0):.2f} | {j.get('output_throughput', 0):.0f} | "
            f"{j.get('median_ttft_ms', 0):.1f} / {j.get('p99_ttft_ms', 0):.1f} | {j.get('median_tpot_ms', 0):.2f} | "
            f"{j.get('mean_itl_ms', 0):.2f} | {f'{step:.2f}' if step else '-'} | {j.get('median_e2el_ms', 0):.0f} | {agree} |")


def serving_lines(folder, archive):
    """The tables of bench/serving/gpu-serving.sh's runs (sweep/, streams/, s256/ under folder)."""
    runs = [("sweep", "64 prompts of 1,024 tokens, 128 output tokens, Poisson arrivals, 4 warm-ups"),
            ("streams", "1,000 requests at once, 16-token prompts, 32 output tokens, 2 warm-ups"),
            ("s256", "256 requests at once, 128-token prompts, 256 output tokens")]
    rows = []
    for name, what in runs:
        tsv = os.path.join(folder, name, "sweep.tsv")
        if not os.path.exists(tsv):
            continue
        rates = []
        for l in read(tsv).splitlines():
            f = l.split()
            if f and not l.startswith("#") and f[1] not in rates:
                rates.append(f[1])
        for rate in rates:
            for api in ("grpc", "openai"):
                j = read_json(os.path.join(folder, name, f"{api}-rate-{rate}.json"))
                if j:
                    rows.append(serving_row(j, f"{name} {api} {rate}"))
    if not rows:
        return []
    where = f"{archive}/serving" if archive else "OUT/serving"
    lines = ["### Serving: `1.3b` through both APIs", "",
             "Command: `bash bench/serving/gpu-serving.sh OUT/serving` (run by `run-all.sh`): the load generator "
             "and nsa-server (CUDA backend, random weights) on the same machine. Runs: " +
             "; ".join(f"{name}: {what}" for name, what in runs) + ". Engine step: the server's mean "
             "`nsa:engine_step_seconds` over the run (with its warm-ups, where it has them); client ITL: vllm's inter-token latency.",
             "",
             "| run | completed | req/s | output tok/s | TTFT median / p99 (ms) | TPOT median (ms) | "
             "client ITL mean (ms) | engine step mean (ms) | E2EL median (ms) | server counts agree |",
             "|---|---|---|---|---|---|---|---|---|---|"] + rows + [""]
    if os.path.exists(os.path.join(folder, "sweep", "sweep.png")):
        lines += [f"Plot: `{where}/sweep/sweep.png` (latency percentiles and throughput against request rate).", ""]
    else:
        lines += [f"Plot: draw it with `bench/serving/sweep.sh --plot-only {where}/sweep` (gnuplot).", ""]
    return lines


def gpu_fragment(out, archive=None):
    lines = ["<!-- generated:gpu:begin -->", "## GPU machine (generated)", ""]
    gpu = [l for l in read(os.path.join(out, "gpu.txt")).splitlines() if l and not l.startswith("name")]
    provenance = read(os.path.join(out, "provenance.txt")).strip()
    # A folder gathered from several calls names each file's command in its provenance.
    command = ("the sources below name each file's build, call and command" if provenance else
               "`bash bench/gpu/run-all.sh OUT` on the GPU machine (from `bench/gpu/stage.sh`'s stage/)")
    lines += [f"Card: {gpu[0] if gpu else 'unknown'}. Date {date.today()}, commit {commit_of(out)}. Command: {command}.", ""]
    if provenance:  # files of several builds or device calls: say which is which
        lines += ["Sources:", "", provenance.split("\n", 1)[1] if provenance.startswith("Which") else provenance, ""]
    tests = []
    for log in sorted(os.listdir(out)):
        if log.endswith("_test.log"):
            text = read(os.path.join(out, log))
            passed = re.findall(r"\[  PASSED  \] (\d+) test", text)
            failed = re.findall(r"\[  FAILED  \] (\d+) test", text)
            tests.append(f"`{log[:-4]}` {passed[-1] if passed else 0} passed" + (f", {failed[-1]} failed" if failed else ""))
    if tests:
        lines += ["Tests: " + "; ".join(tests) + ".", ""]
    for name, title in (("nsa_decode_bench.md", "NSA decode attention"), ("sdpa_decode.md", "Dense SDPA decode (baseline)"),
                        ("nsa_prefill_bench.md", "NSA prefill attention"),
                        ("sdpa_prefill.md", "Dense causal SDPA prefill (baseline)"),
                        ("e2e_decode_bench.md", "End-to-end decode step")):
        table = [l for l in read(os.path.join(out, name)).splitlines() if l.startswith("|") or l.startswith("###")
                 or l.startswith("device:")]
        if table:
            lines += [f"### {title}", ""]
            for l in table:
                if l.startswith("|"):
                    lines.append(l)
                else:  # a heading or the device line: paragraphs of their own
                    if lines[-1] != "":
                        lines.append("")
                    lines += [l.replace("### ", "#### "), ""]
            lines.append("")
    lines += serving_lines(os.path.join(out, "serving"), archive)
    lines.append("<!-- generated:gpu:end -->")
    return "\n".join(lines) + "\n"


def splice(fragment_path, results_path):
    fragment = read(fragment_path)
    m = re.match(r"<!-- generated:(\w+):begin -->", fragment)
    if not m:
        sys.exit(f"{fragment_path}: not a generated fragment")
    kind = m.group(1)
    text = read(results_path)
    block = re.compile(rf"<!-- generated:{kind}:begin -->.*?<!-- generated:{kind}:end -->\n?", re.S)
    text = block.sub(lambda _: fragment, text) if block.search(text) else text.rstrip("\n") + "\n\n" + fragment
    with open(results_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{results_path}: the {kind} block regenerated from {fragment_path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cpu", "gpu", "splice"])
    ap.add_argument("path")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--archive", help="where the run's files are kept in the repository (cited)")
    a = ap.parse_args()
    if a.what == "splice":
        splice(a.path, a.results)
        return
    fragment = cpu_fragment(a.path, a.archive) if a.what == "cpu" else gpu_fragment(a.path, a.archive)
    dest = os.path.join(a.path, f"results-{a.what}.md")
    with open(dest, "w", encoding="utf-8") as f:
        f.write(fragment)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
