#!/usr/bin/python3
"""Stand-in for the C++ logits tool, used by `compare_logits.py --self-test` only.

Same CLI and output format as the engine's tool:
    fake_logits_tool.py --model DIR --tokens id,id,... --prompt-len P --out FILE
It emulates "prefill P, then decode one at a time" by running the float32 reference on each
prefix tokens[:P+r] and keeping its last row (what a correct KV-cached decode must produce).

Fault injection for the self-test (environment): NSA_FAKE_CORRUPT_ROW=r perturbs row r by 1%,
NSA_FAKE_WRONG_SIZE=1 drops the last value, NSA_FAKE_EXIT=c exits with status c.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nsa_torch as N  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--prompt-len", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if os.environ.get("NSA_FAKE_EXIT"):
        return int(os.environ["NSA_FAKE_EXIT"])
    ids = [int(x) for x in a.tokens.split(",")]
    model = N.load_model(a.model, torch.float32)
    rows = []
    with torch.no_grad():
        for end in range(a.prompt_len, len(ids) + 1):
            rows.append(N.forward_logits(model, ids[:end])[-1])
    out = torch.stack(rows).numpy().astype("<f4")
    r = os.environ.get("NSA_FAKE_CORRUPT_ROW")
    if r is not None:
        out[int(r)] *= 1.01
    data = out.tobytes()
    if os.environ.get("NSA_FAKE_WRONG_SIZE"):
        data = data[:-4]
    with open(a.out, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
