"""Independent PyTorch reference for the NSA (Native Sparse Attention) transformer.

Written from /work/shared/docs/nsa-spec.md only (not from the C++ engine), so that the
two implementations check each other.  Priorities: obviously correct first, fast
enough second (a tiny model at T=100 runs in well under a second on 2 CPU cores).

Run with Debian's interpreter:  /usr/bin/python3  (torch 1.13, numpy).

Public entry points
    load_model(model_dir, dtype=torch.float64) -> NSAModel
    forward_logits(model, token_ids, gate_override=None, attention_fn=None) -> [T, V]
    forward_hidden(...)            per-layer residual stream, for debugging
    nsa_branches(cfg, layer, h)    every intermediate of one attention layer (dict)
    select_blocks(cfg, t, scores)  the top-n rule for one query / KV group
    score_weights(cfg, n_cmp, n_sel)  compressed -> selection score map (identity / geometric)
"""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

# --------------------------------------------------------------------------------------
# safetensors (parsed by hand: 8-byte LE header length, JSON header, raw data)
# --------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
_ST_BYTES = {"F32": 4, "F16": 2, "F64": 8, "BF16": 2}


def read_safetensors(path):
    """Return {name: float32 torch tensor}.  BF16 is widened exactly to float32."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        buf = raw[base + begin:base + end]
        count = int(np.prod(shape)) if shape else 1
        if dt not in _ST_BYTES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        if len(buf) != count * _ST_BYTES[dt]:
            raise ValueError(f"{path}: tensor {name}: {len(buf)} data bytes disagree with shape {shape} {dt}")
        if dt == "BF16":
            # bf16 is the top half of an IEEE float32: shift the 16 bits into place.
            u16 = np.frombuffer(buf, dtype="<u2", count=count)
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"), count=count)
            arr = arr.astype(np.float64 if dt == "F64" else np.float32)
        out[name] = torch.from_numpy(np.array(arr, copy=True)).reshape(shape)
    return out


def read_model_tensors(model_dir):
    """All tensors of a HF-style model dir (single file or index.json shards)."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for fname in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(os.path.join(model_dir, fname)))
        missing = [n for n in weight_map if n not in tensors]
        if missing:
            raise ValueError(f"index.json names tensors absent from the shards: {missing[:5]}")
        return tensors
    raise FileNotFoundError(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")


# --------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------

@dataclass
class NSAConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    v_head_dim: int
    qkv_bias: bool
    l: int            # compress block length
    d: int            # compress stride
    lp: int           # selection block length l'
    n: int            # block_counts
    w: int            # window_size
    rope_theta: float
    norm_eps: float
    intermediate_size: int
    tie_word_embeddings: bool
    compress_fn: str
    score_map: str
    init_blocks: int
    local_blocks: int
    kv_sharing: str

    @property
    def G(self):
        return self.num_heads // self.num_kv_heads

    @staticmethod
    def from_dict(c):
        def req(key):
            if c.get(key) is None:
                raise ValueError(f"config.json: missing required key '{key}'")
            return c[key]

        def get(key, default):
            v = c.get(key)
            return default if v is None else v

        def as_int(key, v):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"config.json: '{key}' must be an integer, got {v!r}")
            return v

        if c.get("model_type") not in (None, "nsa"):
            raise ValueError(f"config.json: model_type {c.get('model_type')!r} is not 'nsa'")
        if get("hidden_act", "swish") not in ("swish", "silu"):
            raise ValueError(f"config.json: hidden_act {c['hidden_act']!r} unsupported (swish only)")

        H = as_int("hidden_size", req("hidden_size"))
        nh = as_int("num_heads", req("num_heads"))
        nkv = as_int("num_kv_heads", get("num_kv_heads", nh))
        hd = as_int("head_dim", get("head_dim", H // nh))
        bs = as_int("block_size", req("block_size"))
        inter = c.get("intermediate_size")
        if inter is None:
            # fla's GatedMLP rounding
            m = int(H * get("hidden_ratio", 4) * 2 / 3)
            inter = 256 * ((m + 256 - 1) // 256)
        l = as_int("compress_block_size", get("compress_block_size", bs))
        d = as_int("compress_stride", get("compress_stride", bs))
        cfg = NSAConfig(
            vocab_size=as_int("vocab_size", req("vocab_size")),
            hidden_size=H,
            num_layers=as_int("num_hidden_layers", req("num_hidden_layers")),
            num_heads=nh,
            num_kv_heads=nkv,
            head_dim=hd,
            v_head_dim=as_int("v_head_dim", get("v_head_dim", hd)),
            qkv_bias=bool(get("qkv_bias", False)),
            l=l, d=d, lp=bs,
            n=as_int("block_counts", get("block_counts", 16)),
            w=as_int("window_size", req("window_size")),
            rope_theta=float(get("rope_theta", 10000.0)),
            norm_eps=float(get("norm_eps", 1e-6)),
            intermediate_size=as_int("intermediate_size", inter),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            compress_fn=get("compress_fn", "mean"),
            score_map=get("score_map", "identity" if l == d == bs else "geometric"),
            init_blocks=as_int("init_blocks", get("init_blocks", 1)),
            local_blocks=as_int("local_blocks", get("local_blocks", 2)),
            kv_sharing=get("kv_sharing", "shared"),
        )
        cfg.validate()
        return cfg

    def validate(self):
        def bad(key, why):
            raise ValueError(f"config.json: '{key}': {why}")
        for key, v in [("hidden_size", self.hidden_size), ("num_heads", self.num_heads),
                       ("num_kv_heads", self.num_kv_heads), ("head_dim", self.head_dim),
                       ("v_head_dim", self.v_head_dim), ("block_size", self.lp),
                       ("compress_block_size", self.l), ("compress_stride", self.d),
                       ("block_counts", self.n), ("window_size", self.w),
                       ("vocab_size", self.vocab_size), ("intermediate_size", self.intermediate_size)]:
            if v < 1:
                bad(key, f"must be >= 1, got {v}")
        if self.num_layers < 0:
            bad("num_hidden_layers", "must be >= 0")
        if self.num_heads % self.num_kv_heads:
            bad("num_kv_heads", f"{self.num_kv_heads} does not divide num_heads {self.num_heads}")
        if self.head_dim % 2:
            bad("head_dim", "must be even for rotate-half RoPE")
        if self.l % self.d:
            bad("compress_stride", f"d={self.d} does not divide compress_block_size l={self.l}")
        if self.lp % self.d:
            bad("compress_stride", f"d={self.d} does not divide block_size l'={self.lp}")
        if self.l > self.lp:
            bad("compress_block_size", f"l={self.l} exceeds block_size l'={self.lp}")
        if self.compress_fn not in ("mean", "linear"):
            bad("compress_fn", f"{self.compress_fn!r} is not 'mean' or 'linear'")
        if self.score_map not in ("identity", "geometric"):
            bad("score_map", f"{self.score_map!r} is not 'identity' or 'geometric'")
        if self.score_map == "identity" and not (self.l == self.d == self.lp):
            bad("score_map", "'identity' needs compress_block_size == compress_stride == block_size")
        if self.kv_sharing not in ("shared", "per_branch"):
            bad("kv_sharing", f"{self.kv_sharing!r} is not 'shared' or 'per_branch'")
        if self.init_blocks < 0:
            bad("init_blocks", "must be >= 0")
        if self.local_blocks < 0:
            bad("local_blocks", "must be >= 0")


# --------------------------------------------------------------------------------------
# model container + loading with shape checks
# --------------------------------------------------------------------------------------

class NSAModel:
    def __init__(self, cfg, weights, layers, dtype):
        self.cfg = cfg
        self.w = weights        # embeddings, norm, lm_head
        self.layers = layers    # list of dicts, short names ('q_proj', 'attn_norm', ...)
        self.dtype = dtype


def expected_shapes(cfg):
    """{full tensor name: shape} for every tensor the config requires."""
    H, V, M = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    nh, kvh, hd, vhd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.v_head_dim
    shapes = {"model.embeddings.weight": [V, H], "model.norm.weight": [H]}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = [V, H]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        s = {
            "attn_norm.weight": [H],
            "attn.q_proj.weight": [nh * hd, H],
            "attn.k_proj.weight": [kvh * hd, H],
            "attn.v_proj.weight": [kvh * vhd, H],
            "attn.g_proj.weight": [3 * nh, H],
            "attn.o_proj.weight": [H, nh * vhd],
            "mlp_norm.weight": [H],
            "mlp.gate_proj.weight": [M, H],
            "mlp.up_proj.weight": [M, H],
            "mlp.down_proj.weight": [H, M],
        }
        kv_names = ["k_proj", "v_proj"]
        if cfg.kv_sharing == "per_branch":
            s["attn.k_cmp_proj.weight"] = [kvh * hd, H]
            s["attn.v_cmp_proj.weight"] = [kvh * vhd, H]
            s["attn.k_win_proj.weight"] = [kvh * hd, H]
            s["attn.v_win_proj.weight"] = [kvh * vhd, H]
            kv_names += ["k_cmp_proj", "v_cmp_proj", "k_win_proj", "v_win_proj"]
        if cfg.qkv_bias:
            # Choice: qkv_bias gives *every* q/k/v-type projection a bias (incl. per_branch ones).
            s["attn.q_proj.bias"] = [nh * hd]
            for nm in kv_names:
                s[f"attn.{nm}.bias"] = [kvh * (hd if nm.startswith("k") else vhd)]
        if cfg.compress_fn == "linear":
            s["attn.compress_key"] = [kvh, cfg.l * hd, hd]
            s["attn.intra_block_pe"] = [kvh, cfg.l, hd]
            s["attn.compress_value"] = [kvh, cfg.l * vhd, vhd]
        for k, v in s.items():
            shapes[p + k] = v
    return shapes


def load_model(model_dir, dtype=torch.float64, strict=True):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = NSAConfig.from_dict(json.load(f))
    tensors = read_model_tensors(model_dir)
    return build_model(cfg, tensors, dtype, strict)


def build_model(cfg, tensors, dtype=torch.float64, strict=True):
    shapes = expected_shapes(cfg)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"missing tensor '{name}' (required by config)")
        if list(tensors[name].shape) != shape:
            raise ValueError(f"tensor '{name}' has shape {list(tensors[name].shape)}, config implies {shape}")
    if strict:
        # An unused tensor almost always means config and checkpoint disagree (e.g. biases
        # present but qkv_bias false), which would silently change the function.
        extra = [n for n in tensors if n not in shapes and not n.endswith("rotary.inv_freq")]
        if extra:
            raise ValueError(f"tensors not used by this config: {sorted(extra)[:8]}")
    cast = {n: tensors[n].to(dtype) for n in shapes}
    top = {"embeddings": cast["model.embeddings.weight"], "norm": cast["model.norm.weight"]}
    top["lm_head"] = cast["model.embeddings.weight"] if cfg.tie_word_embeddings else cast["lm_head.weight"]
    layers = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        layer = {}
        for n in shapes:
            if n.startswith(p):
                short = n[len(p):].replace("attn.", "").replace("mlp.", "")
                short = short[:-len(".weight")] if short.endswith(".weight") else short
                layer[short] = cast[n]       # e.g. 'q_proj', 'q_proj.bias', 'compress_key'
        layers.append(layer)
    return NSAModel(cfg, top, layers, dtype)


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------

def rmsnorm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def linear(layer, name, x):
    y = x @ layer[name].T
    if name + ".bias" in layer:
        y = y + layer[name + ".bias"]
    return y


def rope(x, positions, theta):
    """Rotate-half RoPE over the full last dim. x [..., T, hd], positions [T] (ints)."""
    hd = x.shape[-1]
    half = hd // 2
    # frequencies in float64 then cast: independent of the compute dtype's rounding of theta^x
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2.0 / hd)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]          # [T, half]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def masked_attention(q, k, v, mask, scale):
    """Softmax attention with an explicit boolean mask; rows with no key give output 0.

    q [nh, T, hd], k [nh, S, hd], v [nh, S, vd], mask broadcastable to [nh, T, S].
    Returns (out [nh, T, vd], probs [nh, T, S]); probs rows are 0 where the key set is empty.
    """
    if k.shape[-2] == 0:     # no keys at all (e.g. no compressed block yet): output 0
        T = q.shape[-2]
        return q.new_zeros(q.shape[:-2] + (T, v.shape[-1])), q.new_zeros(q.shape[:-2] + (T, 0))
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))   # empty rows: avoid -inf - -inf
    p = torch.exp(s - m)                                          # masked entries -> exactly 0
    denom = p.sum(-1, keepdim=True)
    probs = torch.where(denom > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(p))
    return probs @ v, probs


def n_cmp(cfg, T):
    """Number of compressed blocks that exist once T tokens are present (spec 1.1)."""
    return (T - cfg.l) // cfg.d + 1 if T >= cfg.l else 0


def score_weights(cfg, num_cmp, num_sel, dtype=torch.float64):
    """W [num_sel, num_cmp]: score of selection block j = sum_i W[j, i] * p_cmp[i].

    identity: W[j, i] = (i == j).
    geometric: W[j, i] = number of stride-d chunks shared by compressed block i (chunks
    [i, i + l/d)) and selection block j (chunks [j*l'/d, (j+1)*l'/d)).  (For l = d = l' this
    reduces to the identity.)
    """
    W = torch.zeros(num_sel, num_cmp, dtype=dtype)
    if cfg.score_map == "identity":
        for j in range(min(num_sel, num_cmp)):
            W[j, j] = 1
        return W
    cl, cs = cfg.l // cfg.d, cfg.lp // cfg.d
    for j in range(num_sel):
        for i in range(num_cmp):
            W[j, i] = max(0, min(i + cl, (j + 1) * cs) - max(i, j * cs))
    return W


def select_blocks(cfg, t, scores):
    """Selection blocks (sorted ascending) for query t given per-block group scores.

    scores: sequence indexable by block j in 0..c (c = t // l').
    Rules (spec 1.2): if c+1 <= n take every block 0..c.  Otherwise the forced blocks
    (first init_blocks, and the local_blocks ending at c) are taken and count towards n;
    the remaining n - |forced| slots go to the highest scores among the other candidates,
    ties to the lower index.  (If |forced| > n, all forced blocks are still taken.)
    """
    c = t // cfg.lp
    if c + 1 <= cfg.n:
        return list(range(c + 1))
    forced = set(range(min(cfg.init_blocks, c + 1)))
    forced |= set(range(max(0, c - cfg.local_blocks + 1), c + 1))
    rest = [j for j in range(c + 1) if j not in forced]
    rest.sort(key=lambda j: (-float(scores[j]), j))      # exact ties -> lower index
    take = max(0, cfg.n - len(forced))
    return sorted(forced | set(rest[:take]))


def compress_kv(cfg, layer, k_raw, v_raw, num_cmp):
    """Compressed keys/values [kvh, num_cmp, hd] / [kvh, num_cmp, vhd].

    k_raw: *un-rotated* keys of the compressed branch [kvh, T, hd]; v_raw [kvh, T, vhd].
    mean: average of the l rotated keys (values).  linear: concat(k + pe) @ W, then RoPE
    at position i*d; values concat @ Wv.  A Python loop over blocks keeps it obvious.
    """
    kvh, T, hd = k_raw.shape
    vhd = v_raw.shape[-1]
    if num_cmp == 0:
        return k_raw.new_zeros(kvh, 0, hd), v_raw.new_zeros(kvh, 0, vhd)
    l, d = cfg.l, cfg.d
    if cfg.compress_fn == "mean":
        k_rot = rope(k_raw, torch.arange(T), cfg.rope_theta)
        kc = torch.stack([k_rot[:, i * d:i * d + l].mean(1) for i in range(num_cmp)], dim=1)
        vc = torch.stack([v_raw[:, i * d:i * d + l].mean(1) for i in range(num_cmp)], dim=1)
        return kc, vc
    # linear: per KV head g, block i: flat[j*hd + c] = k[i*d + j, c] + pe[j, c]
    kc_list, vc_list = [], []
    for i in range(num_cmp):
        kb = k_raw[:, i * d:i * d + l] + layer["intra_block_pe"]          # [kvh, l, hd]
        vb = v_raw[:, i * d:i * d + l]                                    # [kvh, l, vhd]
        kc_list.append(torch.bmm(kb.reshape(kvh, 1, l * hd), layer["compress_key"])[:, 0])
        vc_list.append(torch.bmm(vb.reshape(kvh, 1, l * vhd), layer["compress_value"])[:, 0])
    kc = torch.stack(kc_list, dim=1)
    vc = torch.stack(vc_list, dim=1)
    kc = rope(kc, torch.arange(num_cmp) * d, cfg.rope_theta)             # block i at position i*d
    return kc, vc


def compute_gates(cfg, layer, h):
    """sigmoid(g_proj(h)) as [T, nh, 3]; channel 3*head + c (0 cmp, 1 slc, 2 win)."""
    return torch.sigmoid(h @ layer["g_proj"].T).view(h.shape[0], cfg.num_heads, 3)


def nsa_branches(cfg, layer, h, gate_override=None):
    """Everything one NSA attention layer computes, for input h [T, H] (already normed).

    Returns a dict with q/k/v (rotated where relevant), compressed kv, p_cmp, block scores,
    the selected block lists, the three branch outputs [nh, T, vhd], gates [T, nh, 3],
    and 'out' [T, H] (after o_proj).
    """
    T = h.shape[0]
    nh, kvh, hd, vhd, G = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.v_head_dim, cfg.G
    pos = torch.arange(T)
    scale = 1.0 / math.sqrt(hd)

    def heads(x, n, dim):   # [T, n*dim] -> [n, T, dim]
        return x.view(T, n, dim).transpose(0, 1)

    q = rope(heads(linear(layer, "q_proj", h), nh, hd), pos, cfg.rope_theta)
    k_slc_raw = heads(linear(layer, "k_proj", h), kvh, hd)
    v_slc = heads(linear(layer, "v_proj", h), kvh, vhd)
    if cfg.kv_sharing == "per_branch":
        k_cmp_raw = heads(linear(layer, "k_cmp_proj", h), kvh, hd)
        v_cmp_raw = heads(linear(layer, "v_cmp_proj", h), kvh, vhd)
        k_win = rope(heads(linear(layer, "k_win_proj", h), kvh, hd), pos, cfg.rope_theta)
        v_win = heads(linear(layer, "v_win_proj", h), kvh, vhd)
    else:
        k_cmp_raw, v_cmp_raw = k_slc_raw, v_slc
        k_win, v_win = None, v_slc
    k_slc = rope(k_slc_raw, pos, cfg.rope_theta)
    if k_win is None:
        k_win = k_slc

    def per_head(x):        # KV head g serves query heads g*G .. g*G+G-1
        return x.repeat_interleave(G, dim=0)

    # ---- compressed branch ----
    nc = n_cmp(cfg, T)
    kc, vc = compress_kv(cfg, layer, k_cmp_raw, v_cmp_raw, nc)
    t_idx = torch.arange(T)[:, None]
    cmp_mask = (torch.arange(nc)[None, :] * cfg.d + cfg.l - 1) <= t_idx     # [T, nc]
    o_cmp, p_cmp = masked_attention(q, per_head(kc), per_head(vc), cmp_mask, scale)

    # ---- selected branch ----
    ns = (T + cfg.lp - 1) // cfg.lp
    W = score_weights(cfg, nc, ns, dtype=h.dtype)
    p_slc = p_cmp @ W.T                                           # [nh, T, ns]
    group_scores = p_slc.view(kvh, G, T, ns).sum(1)               # [kvh, T, ns]
    selected = [[select_blocks(cfg, t, group_scores[g, t].tolist()) for t in range(T)]
                for g in range(kvh)]
    slc_mask = torch.zeros(kvh, T, T, dtype=torch.bool)
    key_block = torch.arange(T) // cfg.lp
    causal = torch.arange(T)[None, :] <= t_idx                    # [T, S]
    for g in range(kvh):
        for t in range(T):
            blk = torch.zeros(ns, dtype=torch.bool)
            blk[selected[g][t]] = True
            slc_mask[g, t] = blk[key_block] & causal[t]
    o_slc, _ = masked_attention(q, per_head(k_slc), per_head(v_slc), per_head(slc_mask), scale)

    # ---- window branch: keys [max(0, t-w+1), t] ----
    s_idx = torch.arange(T)[None, :]
    win_mask = causal & (s_idx > t_idx - cfg.w)
    o_win, _ = masked_attention(q, per_head(k_win), per_head(v_win), win_mask, scale)

    # ---- gates and output ----
    gates = compute_gates(cfg, layer, h)
    if gate_override is not None:
        gates = torch.tensor(gate_override, dtype=h.dtype).expand(T, nh, 3)
    g = gates.permute(1, 0, 2)                                    # [nh, T, 3]
    o = g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_win
    out = o.transpose(0, 1).reshape(T, nh * vhd) @ layer["o_proj"].T
    return dict(q=q, k_slc=k_slc, v_slc=v_slc, k_cmp_raw=k_cmp_raw, v_cmp_raw=v_cmp_raw,
                k_win=k_win, v_win=v_win, k_cmp=kc, v_cmp=vc, cmp_mask=cmp_mask, p_cmp=p_cmp,
                score_weights=W, group_scores=group_scores, selected=selected,
                slc_mask=slc_mask, win_mask=win_mask, o_cmp=o_cmp, o_slc=o_slc, o_win=o_win,
                gates=gates, out=out)


def nsa_attention(cfg, layer, h, gate_override=None):
    return nsa_branches(cfg, layer, h, gate_override)["out"]


def mlp(layer, h):
    return (torch.nn.functional.silu(h @ layer["gate_proj"].T) * (h @ layer["up_proj"].T)) @ layer["down_proj"].T


def forward_hidden(model, token_ids, gate_override=None, attention_fn=None):
    """Residual stream after each layer: list of [T, H] (index 0 = embeddings)."""
    cfg = model.cfg
    attention_fn = attention_fn or nsa_attention
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    if ids.numel() and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError("token id out of range")
    x = model.w["embeddings"][ids]
    states = [x]
    for layer in model.layers:
        x = x + attention_fn(cfg, layer, rmsnorm(x, layer["attn_norm"], cfg.norm_eps), gate_override)
        x = x + mlp(layer, rmsnorm(x, layer["mlp_norm"], cfg.norm_eps))
        states.append(x)
    return states


def forward_logits(model, token_ids, gate_override=None, attention_fn=None):
    """Logits [T, V] for every position (prefill semantics, causal, no cache).

    gate_override: optional (g_cmp, g_slc, g_win) replacing the learned gates in every layer.
    attention_fn(cfg, layer, h, gate_override) -> [T, H]: replaces NSA attention (tests).
    """
    x = forward_hidden(model, token_ids, gate_override, attention_fn)[-1]
    return rmsnorm(x, model.w["norm"], model.cfg.norm_eps) @ model.w["lm_head"].T
