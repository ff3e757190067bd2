#!/usr/bin/python3
"""Write a random NSA model directory (config.json + model.safetensors), deterministic from a seed.

    /usr/bin/python3 tests/reference/make_random_model.py OUT_DIR [--preset fla|paper]
        [--seed 0] [--dtype f32|bf16] [--config '{"num_hidden_layers": 3}'] [--T-hint 100]

Presets (tiny, for tests):
    fla   : fla default semantics  l = d = l' = 16, n = 4, w = 32, mean, shared, G = 2
    paper : paper-like  l = 8, d = 4, l' = 16, n = 4, w = 32, init 1, local 2, linear,
            geometric, per_branch, head_dim 48, v_head_dim 32, G = 4
--config is merged over the preset.

Weight scales are chosen so attention is peaked (q/k std larger than 1/sqrt(fan_in)) and
gates spread over (0, 1): a near-uniform model would make block selection meaningless.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nsa_torch  # noqa: E402

PRESETS = {
    "fla": dict(
        model_type="nsa", vocab_size=2000, hidden_size=128, num_hidden_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=32, qkv_bias=False,
        block_size=16, block_counts=4, window_size=32, rope_theta=10000.0,
        norm_eps=1e-6, intermediate_size=None, hidden_ratio=4, tie_word_embeddings=False,
    ),
    "paper": dict(
        model_type="nsa", vocab_size=2000, hidden_size=192, num_hidden_layers=2,
        num_heads=8, num_kv_heads=2, head_dim=48, v_head_dim=32, qkv_bias=False,
        block_size=16, block_counts=4, window_size=32, rope_theta=10000.0,
        norm_eps=1e-6, intermediate_size=384, tie_word_embeddings=False,
        compress_block_size=8, compress_stride=4, compress_fn="linear",
        score_map="geometric", init_blocks=1, local_blocks=2, kv_sharing="per_branch",
    ),
}


def random_tensors(cfg, seed, qk_gain=3.0):
    """{name: float32 tensor} for every tensor the config needs, in a fixed order."""
    gen = torch.Generator().manual_seed(seed)
    shapes = nsa_torch.expected_shapes(cfg)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        z = torch.randn(*shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):
            t = 1.0 + 0.2 * z
        elif name.endswith("embeddings.weight"):
            t = z
        elif name.endswith(".bias"):
            t = 0.1 * z
        elif name.endswith("intra_block_pe"):
            t = 0.5 * z
        elif name.endswith("compress_key") or name.endswith("compress_value"):
            t = z / shape[1] ** 0.5     # keeps compressed keys at the scale of raw keys
        else:
            fan_in = shape[-1]
            gain = qk_gain if any(s in name for s in ("q_proj", "k_proj", "k_cmp_proj", "k_win_proj")) else 1.0
            t = gain * z / fan_in ** 0.5
        out[name] = t.contiguous()
    return out


def _bf16_bits(a):
    """float32 array -> uint16 bf16 bits, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def write_safetensors(path, tensors, dtype="f32"):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().numpy().astype(np.float32)
        if dtype == "bf16":
            data, st = _bf16_bits(a).astype("<u2").tobytes(), "BF16"
        elif dtype == "f32":
            data, st = a.astype("<f4").tobytes(), "F32"
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)        # align data start to 8 bytes (as the spec writer does)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for b in blobs:
            f.write(b)


def make_random_model(out_dir, config, seed=0, dtype="f32", shards=1):
    """Write config.json + weights.  shards > 1 writes model-0000i-of-0000n.safetensors + index."""
    cfg = nsa_torch.NSAConfig.from_dict(config)
    tensors = random_tensors(cfg, seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)
    else:
        names = sorted(tensors)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            write_safetensors(os.path.join(out_dir, fname), part, dtype)
            weight_map.update({n: fname for n in part})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    return tensors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="fla")
    ap.add_argument("--config", default="{}", help="JSON dict merged over the preset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args(argv)
    config = dict(PRESETS[a.preset])
    config.update(json.loads(a.config))
    make_random_model(a.out_dir, config, a.seed, a.dtype, a.shards)
    print(f"wrote {a.out_dir} ({a.preset}, seed {a.seed}, {a.dtype})")


if __name__ == "__main__":
    main()
