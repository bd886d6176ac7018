"""PyTorch gloo reference for scripts/bench-allreduce: all-reduce (SUM) of one
fp32 buffer across N processes on loopback, timed as bench-allreduce times
its own ranks (the slowest rank, after a barrier). Prints one JSON line.

    python3 scripts/torch_gloo_allreduce.py --world 2 --size 23520842 --iters 5 --warmup 2
"""
import argparse
import json
import resource
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank, args, port, results):
    # One thread per process, as each tfjs-ddp rank is one Node thread: 4 ranks on 2 cores compete the same way.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.world)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    buf = torch.empty(args.size, dtype=dtype)
    expected = args.world * (args.world + 1) / 2
    times = []
    for i in range(args.warmup + args.iters):
        buf.fill_(rank + 1)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        elapsed = (time.perf_counter() - start) * 1000
        if buf[0].item() != expected or buf[-1].item() != expected:
            raise RuntimeError(f"rank {rank}: gloo summed to {buf[0].item()}, expected {expected}")
        if i >= args.warmup:
            times.append(elapsed)
    # The slowest rank's time per iteration, and the largest rank's peak RSS (ru_maxrss is in KiB on Linux).
    slowest = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024], dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if rank == 0:
        results.put({"times_ms": slowest.tolist(), "peak_rss_mb": peak.item(), "torch": torch.__version__})
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    # fp16/bf16: gloo's own 16-bit all-reduce (the whole buffer is 16-bit, sums
    # included), where this PyTorch build supports it; compressed, like ours.
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(run, args=(args, free_port(), results), nprocs=args.world, start_method="spawn")
    print(json.dumps(results.get()))


if __name__ == "__main__":
    main()
