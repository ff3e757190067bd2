"""Dense FlashAttention decode baseline (torch SDPA, flash backend), same run as our kernels:
64 query heads over 4 KV heads, head dim 128, bf16, the 16 query heads of a group packed as 16
query rows against its KV head (gpu.md). Prints a markdown table."""
import sys

import torch
import torch.nn.functional as F


def main():
    quick = "--quick" in sys.argv
    print("| batch | context | dense SDPA decode (us) |\n|---|---|---|")
    for batch in (1, 8, 32):
        for context in (8192, 16384, 32768, 65536, 131072):
            if quick and context != 65536:
                continue
            try:
                q = torch.randn(batch, 4, 16, 128, device="cuda", dtype=torch.bfloat16)
                k = torch.randn(batch, 4, context, 128, device="cuda", dtype=torch.bfloat16)
                v = torch.randn_like(k)
            except torch.cuda.OutOfMemoryError:
                print(f"| {batch} | {context // 1024}k | (does not fit) |")
                continue
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                for _ in range(10):
                    F.scaled_dot_product_attention(q, k, v)
                times = []
                for _ in range(50):
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    F.scaled_dot_product_attention(q, k, v)
                    e.record()
                    torch.cuda.synchronize()
                    times.append(s.elapsed_time(e))
            times.sort()
            print(f"| {batch} | {context // 1024}k | {1e3 * times[len(times) // 2]:.1f} |")
            del q, k, v
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
