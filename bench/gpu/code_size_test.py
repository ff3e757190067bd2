#!/usr/bin/env python3
"""bench/gpu/code_size.py on a small kernel of known shape (no GPU needed, nvcc is): the kernel's
SASS row is there, and the PTX of an unrolled 64-step function outnumbers a two-step one's."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = r"""
__device__ __forceinline__ float Twice(float x) {
  x = __fdividef(x, 3.f + x);
  return x * x + 0.5f;
}
__device__ __forceinline__ float Series(const float* p) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 64; ++i) s = s * p[i] + 1.f;
  return s;
}
__global__ void Probe(const float* p, float* out) { out[threadIdx.x] = Twice(p[threadIdx.x]) + Series(p + threadIdx.x); }
"""


def main():
    nvcc = sys.argv[1] if len(sys.argv) > 1 else "/usr/local/cuda/bin/nvcc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cu")
        with open(src, "w") as f:
            f.write(SRC)
        out = subprocess.run([sys.executable, os.path.join(HERE, "code_size.py"), src, "--kernel", "Probe", "--nvcc", nvcc],
                             capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        return 1
    text = out.stdout
    sass = re.search(r"^\| Probe \| ([\d.]+) \| (\d+) \|", text, re.M)
    rows = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^\| (\w+) \| (\d+) \| [\d.]+% \|$", text, re.M))
    ok = sass is not None and float(sass.group(1)) > 0 and int(sass.group(2)) > 0
    ok = ok and rows.get("Series", 0) >= 64 and 0 < rows.get("Twice", 0) < rows["Series"]
    print(text if not ok else f"PASS: Probe {sass.group(1)} KB of SASS; PTX Series {rows['Series']}, Twice {rows['Twice']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
