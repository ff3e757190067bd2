#!/usr/bin/python3
"""Self-tests of the NSA PyTorch reference (plain unittest).

    /usr/bin/python3 tests/reference/test_nsa_torch.py [-v]

Checks invariants of /work/shared/docs/nsa-spec.md section 6 and brute-force versions of each
branch on tiny random models (see make_random_model.py).  A few seconds on 2 CPU cores.
"""

import math
import os
import shutil
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nsa_torch as N  # noqa: E402
import make_random_model as R  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_cfg(**over):
    c = dict(R.PRESETS["fla"])
    c.update(over)
    return N.NSAConfig.from_dict(c)


def random_model(preset, seed=0, dtype=torch.float64, **over):
    """In-memory random model (same tensors make_random_model would write)."""
    c = dict(R.PRESETS[preset])
    c.update(over)
    cfg = N.NSAConfig.from_dict(c)
    return N.build_model(cfg, R.random_tensors(cfg, seed), dtype)


def tokens(T, vocab, seed=1):
    return torch.randint(3, vocab, (T,), generator=torch.Generator().manual_seed(seed))


def rope_vec(x, pos, theta):
    """RoPE of one vector written straight from the formula (independent of N.rope)."""
    hd = x.shape[0]
    out = x.clone()
    for i in range(hd // 2):
        a = pos * theta ** (-2.0 * i / hd)
        c, s = math.cos(a), math.sin(a)
        out[i] = x[i] * c - x[i + hd // 2] * s
        out[i + hd // 2] = x[i + hd // 2] * c + x[i] * s
    return out


def softmax_attend(q, keys, values, scale):
    """Attention of one query over a list of keys; empty list -> zeros (caller passes shape)."""
    logits = torch.stack([scale * torch.dot(q, k) for k in keys])
    p = torch.softmax(logits, dim=0)
    return sum(p[i] * values[i] for i in range(len(keys))), p


def layer0_input(model, T, seed=1):
    ids = tokens(T, model.cfg.vocab_size, seed)
    return N.rmsnorm(model.w["embeddings"][ids], model.layers[0]["attn_norm"], model.cfg.norm_eps)


def dense_attention_fn(branch):
    """Plain causal softmax attention (torch.softmax) using the keys/values NSA's `branch` uses."""
    def fn(cfg, layer, h, gate_override=None):
        T = h.shape[0]
        kname, vname = ("k_proj", "v_proj") if (branch == "slc" or cfg.kv_sharing == "shared") \
            else ("k_win_proj", "v_win_proj")
        pos = torch.arange(T)
        q = N.rope(N.linear(layer, "q_proj", h).view(T, cfg.num_heads, cfg.head_dim).transpose(0, 1), pos, cfg.rope_theta)
        k = N.rope(N.linear(layer, kname, h).view(T, cfg.num_kv_heads, cfg.head_dim).transpose(0, 1), pos, cfg.rope_theta)
        v = N.linear(layer, vname, h).view(T, cfg.num_kv_heads, cfg.v_head_dim).transpose(0, 1)
        k = k.repeat_interleave(cfg.G, 0)
        v = v.repeat_interleave(cfg.G, 0)
        s = q @ k.transpose(1, 2) / math.sqrt(cfg.head_dim)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        o = torch.softmax(s, -1) @ v                                 # [nh, T, vhd]
        return o.transpose(0, 1).reshape(T, -1) @ layer["o_proj"].T
    return fn


class TestScoreMapAndSelection(unittest.TestCase):
    def test_geometric_weights_32_16_64(self):
        # spec 1.2: l=32, d=16, l'=64 -> blocks 4j-1 .. 4j+3 with weights 1,2,2,2,1
        cfg = make_cfg(block_size=64, compress_block_size=32, compress_stride=16, window_size=64)
        self.assertEqual(cfg.score_map, "geometric")
        W = N.score_weights(cfg, num_cmp=40, num_sel=10)
        for j in range(10):
            want = torch.zeros(40, dtype=W.dtype)
            for off, wt in zip(range(-1, 4), [1, 2, 2, 2, 1]):
                if 0 <= 4 * j + off < 40:
                    want[4 * j + off] = wt
            self.assertTrue(torch.equal(W[j], want), f"row {j}: {W[j].tolist()}")

    def test_geometric_equals_identity_when_all_equal(self):
        cfg_i = make_cfg()
        cfg_g = make_cfg(score_map="geometric")
        self.assertEqual(cfg_i.score_map, "identity")
        self.assertTrue(torch.equal(N.score_weights(cfg_i, 6, 7), N.score_weights(cfg_g, 6, 7)))
        self.assertTrue(torch.equal(N.score_weights(cfg_i, 6, 7)[:6], torch.eye(6, dtype=torch.float64)))

    def test_select_blocks(self):
        cfg = make_cfg(block_counts=4, block_size=16)          # init 1, local 2
        # c + 1 <= n: everything
        self.assertEqual(N.select_blocks(cfg, 63, [0.0] * 4), [0, 1, 2, 3])
        # t = 100 -> c = 6; forced {0, 5, 6}; one free slot: highest of 1..4
        self.assertEqual(N.select_blocks(cfg, 100, [0, .1, .5, .2, .3, 0, 0]), [0, 2, 5, 6])
        # forced blocks win even with the lowest scores
        self.assertEqual(N.select_blocks(cfg, 100, [-9, 5, 4, 3, 2, -9, -9]), [0, 1, 5, 6])
        # ties -> lower index
        self.assertEqual(N.select_blocks(cfg, 100, [0, .3, .3, .3, .3, 0, 0]), [0, 1, 5, 6])
        # more free slots, exact tie between 2 and 4 for the last slot
        cfg6 = make_cfg(block_counts=5)
        self.assertEqual(N.select_blocks(cfg6, 100, [0, .1, .4, .9, .4, 0, 0]), [0, 2, 3, 5, 6])
        # init_blocks = 0, local_blocks = 1
        cfg01 = make_cfg(block_counts=2, init_blocks=0, local_blocks=1)
        self.assertEqual(N.select_blocks(cfg01, 100, [.9, .1, .5, .2, .3, .95, 0]), [5, 6])
        # forced blocks overlapping (c small): init 1 + local 2 at c = 1 -> {0, 1}
        cfg1 = make_cfg(block_counts=1)
        self.assertEqual(N.select_blocks(cfg1, 20, [1.0, 0.0]), [0, 1])


class TestBuildingBlocks(unittest.TestCase):
    def test_rope_formula(self):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
        pos = torch.tensor([0, 1, 7, 100, 4095])
        y = N.rope(x, pos, 10000.0)
        for h in range(2):
            for t in range(5):
                self.assertTrue(torch.allclose(y[h, t], rope_vec(x[h, t], int(pos[t]), 10000.0), atol=1e-12))

    def test_empty_key_set_gives_zero(self):
        q = torch.randn(2, 3, 4, dtype=torch.float64)
        k = torch.randn(2, 5, 4, dtype=torch.float64)
        v = torch.randn(2, 5, 6, dtype=torch.float64)
        mask = torch.ones(3, 5, dtype=torch.bool)
        mask[1] = False
        o, p = N.masked_attention(q, k, v, mask, 0.5)
        self.assertTrue(torch.isfinite(o).all())
        self.assertTrue(torch.equal(o[:, 1], torch.zeros(2, 6, dtype=torch.float64)))
        ref = torch.softmax((q @ k.transpose(1, 2)) * 0.5, -1) @ v
        self.assertTrue(torch.allclose(o[:, 0], ref[:, 0], atol=1e-12))

    def test_gate_channel_layout(self):
        model = random_model("fla")
        layer = dict(model.layers[0])
        g = torch.zeros_like(layer["g_proj"])
        g[3 * 1 + 2] = 1000.0        # head 1, window channel -> ~1 for positive inputs
        g[3 * 2 + 0] = -1000.0       # head 2, compressed channel -> ~0
        layer["g_proj"] = g
        h = torch.ones(3, model.cfg.hidden_size, dtype=torch.float64)
        gates = N.compute_gates(model.cfg, layer, h)
        self.assertAlmostEqual(float(gates[0, 1, 2]), 1.0)
        self.assertAlmostEqual(float(gates[0, 2, 0]), 0.0)
        self.assertAlmostEqual(float(gates[0, 0, 0]), 0.5)

    def test_intermediate_size_rounding(self):
        self.assertEqual(make_cfg(hidden_size=128, intermediate_size=None).intermediate_size, 512)
        self.assertEqual(make_cfg(hidden_size=2048, intermediate_size=None).intermediate_size, 5632)
        self.assertEqual(make_cfg(intermediate_size=300).intermediate_size, 300)

    def test_config_rejections(self):
        for over, key in [(dict(compress_block_size=12, compress_stride=8), "compress_stride"),
                          (dict(compress_stride=5), "compress_stride"),
                          (dict(compress_block_size=32, compress_stride=16), "compress_block_size"),
                          (dict(compress_block_size=8, compress_stride=4, score_map="identity"), "score_map"),
                          (dict(compress_fn="max"), "compress_fn"),
                          (dict(kv_sharing="x"), "kv_sharing"),
                          (dict(num_kv_heads=3), "num_kv_heads")]:
            with self.assertRaises(ValueError) as cm:
                make_cfg(**over)
            self.assertIn(key, str(cm.exception), over)
        cfg = make_cfg()
        tensors = R.random_tensors(cfg, 0)
        t2 = dict(tensors)
        del t2["model.layers.1.attn.g_proj.weight"]
        with self.assertRaisesRegex(ValueError, "g_proj"):
            N.build_model(cfg, t2)
        t2 = dict(tensors)
        t2["model.layers.0.attn.k_proj.weight"] = torch.zeros(3, 3)
        with self.assertRaisesRegex(ValueError, "k_proj"):
            N.build_model(cfg, t2)
        t2 = dict(tensors)
        t2["model.layers.0.attn.q_proj.bias"] = torch.zeros(cfg.num_heads * cfg.head_dim)
        with self.assertRaisesRegex(ValueError, "q_proj.bias"):
            N.build_model(cfg, t2)


class TestSafetensors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_roundtrip_f32_bf16_shards(self):
        for dtype, shards in [("f32", 1), ("bf16", 1), ("bf16", 3)]:
            d = os.path.join(self.tmp, f"{dtype}{shards}")
            c = dict(R.PRESETS["paper"], tie_word_embeddings=True, qkv_bias=True)
            tensors = R.make_random_model(d, c, seed=5, dtype=dtype, shards=shards)
            got = N.read_model_tensors(d)
            self.assertEqual(set(got), set(tensors))
            for name, t in tensors.items():
                want = t.to(torch.bfloat16).to(torch.float32) if dtype == "bf16" else t
                self.assertTrue(torch.equal(got[name], want), f"{dtype} {name}")
            model = N.load_model(d, torch.float64)
            self.assertIs(model.w["lm_head"], model.w["embeddings"])
            self.assertIn("q_proj.bias", model.layers[0])
            self.assertIn("k_win_proj.bias", model.layers[0])
            L = N.forward_logits(model, tokens(20, 2000))
            self.assertTrue(torch.isfinite(L).all())


class TestBranchesBruteForce(unittest.TestCase):
    """(b) branch outputs against per-query Python loops over the visible keys."""

    def check_branches(self, preset, T=100, **over):
        model = random_model(preset, seed=2, **over)
        cfg, layer = model.cfg, model.layers[0]
        h = layer0_input(model, T)
        b = N.nsa_branches(cfg, layer, h)
        scale = 1 / math.sqrt(cfg.head_dim)
        l, d, hd = cfg.l, cfg.d, cfg.head_dim
        nc = (T - l) // d + 1 if T >= l else 0
        self.assertEqual(b["k_cmp"].shape[1], nc)
        # compressed keys / values from the raw projections, block by block
        kc = torch.zeros(cfg.num_kv_heads, nc, hd, dtype=h.dtype)
        vc = torch.zeros(cfg.num_kv_heads, nc, cfg.v_head_dim, dtype=h.dtype)
        for g in range(cfg.num_kv_heads):
            for i in range(nc):
                toks = range(i * d, i * d + l)
                if cfg.compress_fn == "mean":
                    kc[g, i] = sum(rope_vec(b["k_cmp_raw"][g, s], s, cfg.rope_theta) for s in toks) / l
                    vc[g, i] = sum(b["v_cmp_raw"][g, s] for s in toks) / l
                else:
                    acc = torch.zeros(hd, dtype=h.dtype)
                    vacc = torch.zeros(cfg.v_head_dim, dtype=h.dtype)
                    for j, s in enumerate(toks):   # concat index j*hd + c
                        acc += (b["k_cmp_raw"][g, s] + layer["intra_block_pe"][g, j]) @ layer["compress_key"][g, j * hd:(j + 1) * hd]
                        vacc += b["v_cmp_raw"][g, s] @ layer["compress_value"][g, j * cfg.v_head_dim:(j + 1) * cfg.v_head_dim]
                    kc[g, i] = rope_vec(acc, i * d, cfg.rope_theta)
                    vc[g, i] = vacc
        self.assertTrue(torch.allclose(b["k_cmp"], kc, atol=1e-10))
        self.assertTrue(torch.allclose(b["v_cmp"], vc, atol=1e-10))
        for t in range(T):
            c = t // cfg.lp
            for hh in range(cfg.num_heads):
                g = hh // cfg.G
                q = b["q"][hh, t]
                # compressed: blocks with i*d + l - 1 <= t
                vis = [i for i in range(nc) if i * d + l - 1 <= t]
                if vis:
                    o, p = softmax_attend(q, [kc[g, i] for i in vis], [vc[g, i] for i in vis], scale)
                    self.assertTrue(torch.allclose(b["o_cmp"][hh, t], o, atol=1e-10), (t, hh))
                    self.assertTrue(torch.allclose(b["p_cmp"][hh, t, vis], p, atol=1e-12))
                else:
                    self.assertTrue(torch.equal(b["o_cmp"][hh, t], torch.zeros_like(b["o_cmp"][hh, t])))
                # selected: tokens of the chosen blocks, <= t
                sel = b["selected"][g][t]
                keys = [s for s in range(t + 1) if s // cfg.lp in sel]
                o, _ = softmax_attend(q, [b["k_slc"][g, s] for s in keys], [b["v_slc"][g, s] for s in keys], scale)
                self.assertTrue(torch.allclose(b["o_slc"][hh, t], o, atol=1e-10), (t, hh))
                # window: last w tokens incl. t
                keys = list(range(max(0, t - cfg.w + 1), t + 1))
                o, _ = softmax_attend(q, [b["k_win"][g, s] for s in keys], [b["v_win"][g, s] for s in keys], scale)
                self.assertTrue(torch.allclose(b["o_win"][hh, t], o, atol=1e-10), (t, hh))
            # selection: recompute block scores with explicit overlap counting, then the rule
            for g in range(cfg.num_kv_heads):
                score = [0.0] * (c + 1)
                for j in range(c + 1):
                    for i in range(nc):
                        if i * d + l - 1 > t:
                            continue
                        ci, cj = set(range(i, i + l // d)), set(range(j * cfg.lp // d, (j + 1) * cfg.lp // d))
                        score[j] += len(ci & cj) * float(b["p_cmp"][g * cfg.G:(g + 1) * cfg.G, t, i].sum())
                if c + 1 <= cfg.n:
                    want = list(range(c + 1))
                else:
                    forced = set(range(min(cfg.init_blocks, c + 1))) | set(range(max(0, c - cfg.local_blocks + 1), c + 1))
                    others = sorted((j for j in range(c + 1) if j not in forced), key=lambda j: (-score[j], j))
                    want = sorted(forced | set(others[:max(0, cfg.n - len(forced))]))
                self.assertEqual(b["selected"][g][t], want, (g, t))
                self.assertLessEqual(len(want), max(cfg.n, cfg.init_blocks + cfg.local_blocks))
        return b

    def test_fla_default(self):
        b = self.check_branches("fla")
        # the scores must actually matter: some query picks a free block other than the
        # lowest-index candidate (otherwise the model would not exercise top-n at all)
        cfg = make_cfg()
        nontrivial = [sel for g in b["selected"] for t, sel in enumerate(g)
                      if t // cfg.lp + 1 > cfg.n and sel != N.select_blocks(cfg, t, [0.0] * (t // cfg.lp + 1))]
        self.assertTrue(nontrivial)

    def test_paper_like(self):
        self.check_branches("paper")

    def test_paper_like_mean_shared(self):
        self.check_branches("paper", compress_fn="mean", kv_sharing="shared", T=70)


class TestModelInvariants(unittest.TestCase):
    def test_gated_branch_equals_full_causal_attention(self):
        # (a) n*l' >= T and w >= T: gates (0,1,0) and (0,0,1) give dense causal attention
        for preset in ("fla", "paper"):
            model = random_model(preset, seed=4, window_size=64)        # n*l' = 64 = w
            for T in (1, 17, 50, 64):
                ids = tokens(T, model.cfg.vocab_size, seed=T)
                for gates, branch in (((0., 1., 0.), "slc"), ((0., 0., 1.), "win")):
                    got = N.forward_logits(model, ids, gate_override=gates)
                    want = N.forward_logits(model, ids, attention_fn=dense_attention_fn(branch))
                    err = (got - want).abs().max().item()
                    self.assertLess(err, 1e-10, (preset, T, branch, err))
            # and the test can fail: beyond n*l' (resp. w) the branch is sparse
            ids = tokens(100, model.cfg.vocab_size)
            for gates, branch in (((0., 1., 0.), "slc"), ((0., 0., 1.), "win")):
                got = N.forward_logits(model, ids, gate_override=gates)
                want = N.forward_logits(model, ids, attention_fn=dense_attention_fn(branch))
                self.assertGreater((got[70:] - want[70:]).abs().max().item(), 1e-4, (preset, branch))

    def test_variants_run_finite(self):
        # (c) both variants on T = 100, float32 and float64, finite and consistent
        for preset in ("fla", "paper"):
            m64 = random_model(preset, seed=6, dtype=torch.float64)
            m32 = random_model(preset, seed=6, dtype=torch.float32)
            ids = tokens(100, m64.cfg.vocab_size)
            L64 = N.forward_logits(m64, ids)
            L32 = N.forward_logits(m32, ids)
            self.assertEqual(tuple(L64.shape), (100, m64.cfg.vocab_size))
            self.assertTrue(torch.isfinite(L64).all() and torch.isfinite(L32).all())
            rel = ((L32.double() - L64).abs().amax(-1) / L64.abs().amax(-1)).max().item()
            self.assertLess(rel, 1e-4, preset)

    def test_prefix_consistency_at_boundaries(self):
        # Decoding token by token == one prefill: with a causal prefill reference this means the
        # logits of every prefix equal the corresponding rows of the full run (no future leaks,
        # e.g. through block scores or compressed blocks that end after t).
        for preset in ("fla", "paper"):
            model = random_model(preset, seed=7)
            cfg = model.cfg
            ids = tokens(100, cfg.vocab_size, seed=9)
            full = N.forward_logits(model, ids)
            Ts = {1, cfg.l - 1, cfg.l, cfg.l + 1, cfg.lp - 1, cfg.lp, cfg.lp + 1,
                  cfg.n * cfg.lp - 1, cfg.n * cfg.lp, cfg.n * cfg.lp + 1, cfg.w, cfg.w + 1, 100}
            Ts |= {m * cfg.d + e for m in range(1, 100 // cfg.d + 1) for e in (-1, 0, 1)}
            for T in sorted(x for x in Ts if 1 <= x <= 100):
                part = N.forward_logits(model, ids[:T])
                err = (part - full[:T]).abs().max().item()
                self.assertLess(err, 1e-9, (preset, T, err))


if __name__ == "__main__":
    unittest.main()
