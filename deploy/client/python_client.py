#!/usr/bin/python3
"""Example nsa-server client: prints the model info, then streams a completion.

    deploy/client/python_client.py --target 127.0.0.1:50051 --prompt "Permission is hereby granted" \
        --max-tokens 64 --temperature 0.7 --seed 1

Needs grpcio and protobuf (Debian: python3-grpcio python3-protobuf) and protoc with the gRPC Python
plugin (protobuf-compiler, protobuf-compiler-grpc): the stubs are generated from
proto/nsa/v1/generate.proto into a temporary directory at start.
"""
import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = "nsa/v1/generate.proto"


def load_stubs(proto_root, out_dir):
    """Runs protoc into out_dir and imports the generated modules."""
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    cmd = ["protoc", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
           f"--plugin=protoc-gen-grpc={plugin}", "-I", proto_root, PROTO]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"protoc failed ({' '.join(cmd)}):\n{res.stderr}")
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("nsa.v1.generate_pb2")
    pb2_grpc = importlib.import_module("nsa.v1.generate_pb2_grpc")
    return pb2, pb2_grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gRPC server")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, help="0 = greedy; server default 1")
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument("--no-stream", action="store_true", help="print the text once, at the end")
    ap.add_argument("--timeout", type=float, default=300, help="deadline of the call in seconds")
    ap.add_argument("--proto-dir", default=os.path.join(REPO, "proto"), help="root of the .proto files")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="nsa-stubs-") as stubs:
        pb2, pb2_grpc = load_stubs(args.proto_dir, stubs)
        with grpc.insecure_channel(args.target) as channel:
            stub = pb2_grpc.GenerationStub(channel)
            try:
                return run(args, pb2, stub)
            except grpc.RpcError as e:
                sys.stdout.flush()
                print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
                return 1


def run(args, pb2, stub):
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    print(f"model {info.model_name}: backend {info.backend}, max_model_len {info.max_model_len}, "
          f"vocab {info.vocab_size}, {info.num_layers} layers, eos {list(info.eos_token_ids)}, "
          f"NSA block_size {info.nsa.block_size} block_counts {info.nsa.block_counts} "
          f"window {info.nsa.window_size}", file=sys.stderr)

    req = pb2.GenerateRequest(text=args.prompt)
    req.stop.max_tokens = args.max_tokens
    req.stop.stop.extend(args.stop)
    if args.temperature is not None:
        req.sampling.temperature = args.temperature
    if args.top_p is not None:
        req.sampling.top_p = args.top_p
    if args.seed is not None:
        req.sampling.seed = args.seed
    if args.no_stream and "stream" in req.DESCRIPTOR.fields_by_name:
        req.stream = False  # the server sends one Delta with everything, then the Final

    start = time.monotonic()
    first = None
    pieces = []
    final = None
    for resp in stub.Generate(req, timeout=args.timeout):
        kind = resp.WhichOneof("event")
        if kind == "delta":
            if first is None:
                first = time.monotonic() - start
            pieces.append(resp.delta.text)
            if not args.no_stream:
                sys.stdout.write(resp.delta.text)
                sys.stdout.flush()
        elif kind == "final":
            final = resp.final
    if args.no_stream:
        sys.stdout.write("".join(pieces))
    sys.stdout.write("\n")
    sys.stdout.flush()

    if final is None:
        print("error: the stream ended without a Final message", file=sys.stderr)
        return 1
    reason = pb2.FinishReason.Name(final.finish_reason)
    ttft = f"{first * 1000:.1f} ms" if first is not None else "-"
    print(f"[{resp.request_id}] finish {reason}"
          + (f" (stop {final.matched_stop!r})" if final.matched_stop else "")
          + f", prompt {final.usage.prompt_tokens} tokens, completion {final.usage.completion_tokens}, "
          f"cached {final.usage.cached_tokens}; client TTFT {ttft}, server TTFT "
          f"{final.timings.time_to_first_token_seconds * 1000:.1f} ms, total {final.timings.total_seconds:.3f} s",
          file=sys.stderr)
    if final.finish_reason == pb2.FINISH_REASON_ERROR:
        print(f"error: {final.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
