#!/usr/bin/env python3
"""One kernel's ncu per-instruction counts by source line and by stall reason.

Joins the CSV of `ncu --section SourceCounters --page source --print-source sass --csv` (one row
a SASS instruction, in address order) with `nvdisasm -g -c` of the same cubin (each instruction's
file and line), by the instruction's offset from the kernel's start. Build with -lineinfo for the
line info (CMAKE_CUDA_FLAGS=-lineinfo; the code is the same); extract the cubin from the binary
with `cuobjdump -xelf all BINARY`. Both inputs may be gzipped.

  ncu_lines.py SASS CSV KERNEL [--top N] [--by instructions|samples] [--src ROOT]

KERNEL: a substring of the kernel's mangled name (the SASS section is chosen by it; the first
match wins). Prints the executed warp instructions and stall samples of the top lines, then the
stall reasons' shares with the opcodes they fall on.
"""
import argparse
import collections
import csv
import gzip
import os
import re
import sys


def open_text(path):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def sass_lines(path, kernel):
    """{offset: ((file, line), instruction)} of the first kernel whose name contains `kernel`."""
    out, loc, on, name = {}, None, False, None
    with open_text(path) as f:
        for text in f:
            if text.startswith(".text."):
                if name is not None:
                    break  # the chosen kernel's section ended
                if kernel in text:
                    on, name = True, text.strip().rstrip(":")[len(".text."):]
                continue
            if not on:
                continue
            m = re.match(r'\s*//## File "([^"]+)", line (\d+)', text)
            if m:
                loc = (m.group(1), int(m.group(2)))
                continue
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*$", text)
            if m:
                out[int(m.group(1), 16)] = (loc, m.group(2))
    if name is None:
        sys.exit(f"ncu_lines.py: no kernel matching '{kernel}' in {path}")
    return name, out


def ncu_rows(path):
    with open_text(path) as f:
        lines = [t for t in f if t.startswith('"0x') or t.startswith('"Address"')]
    if not lines or not lines[0].startswith('"Address"'):
        sys.exit(f"ncu_lines.py: no source table (Address, Source, ...) in {path}")
    rows = list(csv.reader(lines))
    return rows[0], rows[1:]


def as_int(text):
    return int(text) if text not in ("", "-") else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sass")
    p.add_argument("csv")
    p.add_argument("kernel")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--by", choices=("instructions", "samples"), default="instructions")
    p.add_argument("--src", default=None, help="the source tree the profiled build came from (prints each line)")
    a = p.parse_args(argv)
    name, sass = sass_lines(a.sass, a.kernel)
    hdr, rows = ncu_rows(a.csv)
    need = ("Address", "Instructions Executed", "Warp Stall Sampling (All Samples)")
    for h in need:
        if h not in hdr:
            sys.exit(f"ncu_lines.py: column '{h}' missing from {a.csv}")
    ia, ie, isamp = (hdr.index(h) for h in need)
    stalls = [i for i, h in enumerate(hdr) if h.startswith("stall_") and "Not Issued" not in h]
    base = int(rows[0][ia], 16)
    per_line = collections.defaultdict(lambda: [0, 0])
    reasons, reason_ops = collections.Counter(), collections.defaultdict(collections.Counter)
    total_e = total_s = unmapped = 0
    for row in rows:
        off = int(row[ia], 16) - base
        e, s = as_int(row[ie]), as_int(row[isamp])
        total_e, total_s = total_e + e, total_s + s
        if off not in sass:
            unmapped += 1
            continue
        loc, ins = sass[off]
        per_line[loc][0] += e
        per_line[loc][1] += s
        op = ins.split()[1] if ins.startswith("@") else ins.split()[0]
        for i in stalls:
            v = as_int(row[i])
            reasons[hdr[i]] += v
            reason_ops[hdr[i]][op.split(".")[0]] += v
    if unmapped:
        print(f"warning: {unmapped} of {len(rows)} instructions not in the SASS (another build?)", file=sys.stderr)
    print(f"# {name}: {total_e:,} warp instructions executed, {total_s:,} stall samples, {len(rows)} instructions")
    key = 0 if a.by == "instructions" else 1
    sources = {}

    def text(loc):
        if not a.src or loc is None:
            return ""
        path = loc[0]
        for cand in (path, os.path.join(a.src, path.split("/kernels/", 1)[-1] if "/kernels/" in path else path),
                     os.path.join(a.src, "kernels", "cuda", os.path.basename(path))):
            if os.path.exists(cand):
                if cand not in sources:
                    sources[cand] = open(cand).read().split("\n")
                lines = sources[cand]
                return lines[loc[1] - 1].strip()[:90] if loc[1] <= len(lines) else ""
        return ""

    print("| instructions | samples | line | source |\n|---|---|---|---|")
    for loc, (e, s) in sorted(per_line.items(), key=lambda kv: -kv[1][key])[: a.top]:
        where = f"{os.path.basename(loc[0])}:{loc[1]}" if loc else "?"
        print(f"| {e / max(total_e, 1) * 100:.1f}% | {s / max(total_s, 1) * 100:.1f}% | {where} | {text(loc)} |")
    t = sum(reasons.values())
    if t:
        print("\n| stall reason | share | opcodes it falls on |\n|---|---|---|")
        for r, v in reasons.most_common(8):
            ops = ", ".join(f"{o} {c / t * 100:.1f}%" for o, c in reason_ops[r].most_common(4) if c > 0)
            print(f"| {r} | {v / t * 100:.1f}% | {ops} |")


if __name__ == "__main__":
    main()
