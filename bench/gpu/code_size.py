#!/usr/bin/env python3
"""Code size of a CUDA source's kernels, here, without a GPU or a disassembler (bench/NOTES.md,
"code size": at batch 1 the decode kernel runs its code once, every instruction fetched cold).

    bench/gpu/code_size.py [SRC] [--kernel NAME] [--top N] [--nvcc PATH]

Compiles SRC (default kernels/cuda/nsa_decode.cu) for sm_90a the way CMake does, then prints
  - each kernel's SASS size (the cubin's symbol size, KB), registers and spilled bytes (ptxas -v);
  - for the kernels whose name contains NAME (default FusedKernel<1, true>), the PTX instructions
    by the innermost source function they were inlined from (PTX with -lineinfo: every .loc names
    its function), the largest N.
PTX counts are not SASS counts, but they rank the functions the same way closely enough to pick
what to shrink; the SASS total is the cubin's."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demangle(names):
    if not names:
        return []
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return list(names)


def short(name):
    """A demangled name without namespaces, anonymous-namespace tags or the parameter list; a
    template instantiated on a caller's lambdas as "T<caller's lambdas>", a lambda's body as
    "caller's lambda"."""
    name = re.sub(r"_INTERNAL_[0-9a-f_]+_nsa_\w+?_cu_[0-9a-f]+::", "", name)
    name = re.sub(r"nsa::cuda::(\(anonymous namespace\)::)?", "", name)
    name = re.sub(r"^void ", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    head = name[:cut]
    if "{lambda" in head:  # template arguments are lambdas: name their function
        caller = re.search(r"<([\w:]+(?:<[^<>]*>)?)\(", head)
        return f"{head.split('<', 1)[0]}<{caller.group(1) if caller else '?'}'s lambdas>"
    if "{lambda" in name[cut:]:
        return f"{head}'s lambda"
    return head


def nvcc_command(nvcc, src, out, extra):
    return [nvcc, "-DNSA_HAVE_CUDA=1", f"-I{ROOT}", "--expt-relaxed-constexpr", "-O3", "-DNDEBUG",
            "-arch=sm_90a", "-std=c++20", *extra, src, "-o", out]


def kernel_sizes(cubin):
    """{mangled kernel name: SASS bytes} from the cubin's symbol table (readelf)."""
    out = subprocess.run(["readelf", "-sW", cubin], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) > 7 and f[3] == "FUNC" and "$__internal" not in f[-1]:
            sizes[f[-1]] = int(f[2], 0)
    return sizes


def resources(ptxas_log):
    """{mangled kernel name: (registers, spill stores, spill loads)} from ptxas -v."""
    res, current = {}, None
    for line in ptxas_log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
            res[current] = [0, 0, 0]
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            res[current][1:] = [int(m.group(1)), int(m.group(2))]
        m = re.search(r"Used (\d+) registers", line)
        if m:
            res[current][0] = int(m.group(1))
    return res


def info_strings(ptx):
    """The .debug_str section's labelled strings ($L__info_stringN: .b8 bytes...)."""
    strings = {}
    for m in re.finditer(r"(\$L__info_string\d+):\n((?:\s*\.b8[^\n]*\n)+)", ptx):
        data = bytes(int(x) for x in re.findall(r"\d+", " ".join(l.split(".b8", 1)[1] for l in m.group(2).splitlines())))
        strings[m.group(1)] = data.split(b"\0")[0].decode(errors="replace")
    return strings


def ptx_by_function(ptx, entry):
    """PTX instructions of one .entry by the innermost function their .loc names."""
    start = ptx.find(f".entry {entry}(")
    if start < 0:
        return Counter()
    body = ptx[start:ptx.find("\n}\n", start)]
    strings = info_strings(ptx)
    counts, current = Counter(), "<the kernel itself>"
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith(".loc"):
            m = re.search(r"function_name (\$L__info_string\d+)", line)
            current = strings.get(m.group(1), "?") if m else "<the kernel itself>"
            continue
        line = line.strip("{} \t")  # inline asm wraps its instructions in braces
        if line.endswith(";") and not line.startswith(("//", ".", "$")):
            counts[current] += 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default=os.path.join(ROOT, "kernels/cuda/nsa_decode.cu"))
    ap.add_argument("--kernel", default="FusedKernel<1, true>", help="attribute the kernels whose name contains this")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cubin, ptx_path = os.path.join(tmp, "k.cubin"), os.path.join(tmp, "k.ptx")
        built = subprocess.run(nvcc_command(args.nvcc, args.src, cubin, ["-cubin", "-Xptxas", "-v"]),
                               capture_output=True, text=True)
        if built.returncode != 0:
            sys.stderr.write(built.stderr)
            return 1
        subprocess.run(nvcc_command(args.nvcc, args.src, ptx_path, ["-ptx", "-lineinfo"]), check=True)
        sizes, res = kernel_sizes(cubin), resources(built.stderr)
        ptx = open(ptx_path).read()
    names = sorted(sizes)
    readable = dict(zip(names, (short(n) for n in demangle(names))))
    print(f"{os.path.relpath(args.src, ROOT)}: SASS of each kernel (sm_90a)\n")
    print("| kernel | SASS (KB) | registers | spill stores / loads (bytes) |\n|---|---|---|---|")
    for n in sorted(names, key=lambda n: -sizes[n]):
        regs, st, ld = res.get(n, (0, 0, 0))
        print(f"| {readable[n]} | {sizes[n] / 1024:.1f} | {regs} | {st} / {ld} |")
    for n in names:
        if args.kernel not in readable[n]:
            continue
        counts = ptx_by_function(ptx, n)
        total = sum(counts.values())
        print(f"\n{readable[n]}: {total} PTX instructions by the function they come from (largest {args.top})\n")
        print("| function | PTX instructions | share |\n|---|---|---|")
        pretty = dict(zip(counts, (short(x) for x in demangle(list(counts)))))
        for f, c in counts.most_common(args.top):
            print(f"| {pretty[f]} | {c} | {100.0 * c / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
