"""Dense causal FlashAttention prefill baseline (torch SDPA, flash backend), for the NSA prefill
table of nsa_decode_bench (issue 8): one prompt, the 7b attention shape (64 query heads over 4 KV
heads, head dim 128, bf16, the KV heads repeated for the dense kernel). Prints a markdown table:
time and TFLOP/s (4 T^2/2 H d FLOPs of causal attention)."""
import sys

import torch
import torch.nn.functional as F


def main():
    quick = "--quick" in sys.argv
    heads, kv_heads, dim = 64, 4, 128
    print("| prompt | dense causal SDPA (ms) | TFLOP/s |\n|---|---|---|")
    for context in (8192, 16384, 32768, 65536, 131072):
        if quick and context != 65536:
            continue
        try:
            q = torch.randn(1, heads, context, dim, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, kv_heads, context, dim, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        except torch.cuda.OutOfMemoryError:
            print(f"| {context // 1024}k | (does not fit) | |")
            continue
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
            times = []
            for _ in range(3 if context >= 65536 else 5):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
                e.record()
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
        times.sort()
        ms = times[len(times) // 2]
        flops = 4.0 * context * context / 2 * heads * dim
        print(f"| {context // 1024}k | {ms:.1f} | {flops / ms / 1e9:.0f} |")
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
