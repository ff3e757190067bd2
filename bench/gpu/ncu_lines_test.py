#!/usr/bin/env python3
"""Checks bench/gpu/ncu_lines.py on a small made-up kernel: two kernels in the SASS (the second
chosen by name), a CSV whose rows map onto it by offset; the per-line sums, the order, the stall
reasons and the refusals must be exact."""
import gzip
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SASS = """//--------------------- .text._Z5OtherPf --------------------------
.text._Z5OtherPf:
\t//## File "/src/kernels/cuda/k.cu", line 3
        /*0000*/                   NOP ;
//--------------------- .text._Z4MainPf --------------------------
.text._Z4MainPf:
\t//## File "/src/kernels/cuda/k.cu", line 10
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
\t//## File "/src/kernels/cuda/k.cu", line 12
        /*0020*/              @P0  BRA `(.L_x_1) ;
        /*0030*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
"""
HDR = ['Address', 'Source', 'Warp Stall Sampling (All Samples)', 'Instructions Executed', 'stall_wait',
       'stall_barrier', 'stall_wait (Not Issued)']
ROWS = [  # address, source, samples, executed, wait, barrier, wait (not issued: ignored)
    ('0x7f0000001000', 'LDC R1, c[0x0][0x28]', 1, 10, 1, 0, 99),
    ('0x7f0000001010', 'HMMA.16816.F32.BF16 R4, R8, R12, R4', 5, 20, 5, 0, 99),
    ('0x7f0000001020', '@P0 BRA', 6, 60, 0, 6, 99),
    ('0x7f0000001030', 'HMMA.16816.F32.BF16 R4, R8, R12, R4', 8, 10, 8, 0, 99),
]


def run(*args):
    return subprocess.run([sys.executable, os.path.join(HERE, 'ncu_lines.py'), *args], capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        sass = os.path.join(tmp, 'k.sass.gz')
        with gzip.open(sass, 'wt') as f:
            f.write(SASS)
        csv_path = os.path.join(tmp, 'k.csv')
        with open(csv_path, 'w') as f:
            f.write('==PROF== noise before the table\n')
            f.write(','.join(f'"{h}"' for h in HDR) + '\n')
            for r in ROWS:
                f.write(','.join(f'"{v}"' for v in r) + '\n')
        r = run(sass, csv_path, '4Main', '--top', '5')
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert '_Z4MainPf: 100 warp instructions executed, 20 stall samples, 4 instructions' in out, out
        lines = [l for l in out.splitlines() if l.startswith('| ') and 'k.cu' in l]
        # Line 12 (BRA + HMMA: 70 of 100 instructions, 14 of 20 samples) before line 10 (30, 6).
        assert lines[0].startswith('| 70.0% | 70.0% | k.cu:12'), lines
        assert lines[1].startswith('| 30.0% | 30.0% | k.cu:10'), lines
        # Stall reasons over all lines: wait 14 of 20 (HMMA 13, LDC 1), barrier 6 (BRA); "Not Issued" ignored.
        assert '| stall_wait | 70.0% | HMMA 65.0%, LDC 5.0% |' in out, out
        assert '| stall_barrier | 30.0% | BRA 30.0% |' in out, out
        # By samples with --top 1: line 12 only.
        r = run(sass, csv_path, '4Main', '--top', '1', '--by', 'samples')
        assert r.returncode == 0 and 'k.cu:12' in r.stdout and 'k.cu:10' not in r.stdout, r.stdout
        # Refusals: no such kernel; no source table.
        r = run(sass, csv_path, 'NoSuchKernel')
        assert r.returncode != 0 and 'no kernel matching' in r.stderr, r.stderr
        bad = os.path.join(tmp, 'bad.csv')
        with open(bad, 'w') as f:
            f.write('"Kernel Name","x"\n')
        r = run(sass, bad, '4Main')
        assert r.returncode != 0 and 'no source table' in r.stderr, r.stderr
    print('PASS: ncu_lines.py')


if __name__ == '__main__':
    main()
