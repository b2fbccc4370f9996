"""The sharded (Ulysses over active tokens) path against the plain path, side by side in one run.

    python bench/parallel.py --preset cpu --ranks 2 --steps 20            # CPU: P = 1 against P = 2 (gloo)
    python bench/parallel.py --preset wan2.1-1.3b --device cuda --ranks 1  # one GPU: the sharded code
                                                                           # path at P = 1 against the plain path

For each budget: seconds of the plain single-process run, seconds of the sharded run on --ranks
ranks, their ratio, and the all-to-all megabytes rank 0 sent per step (mean over full steps and
over sparse steps). On CPU the plain run gets every core; each of P ranks gets cores / P.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import speed  # noqa: E402

from hsa import HSAConfig, plan_budget  # noqa: E402
from pipeline.parallel import Comm, ParallelConfig  # noqa: E402


def _sharded(rank: int, world: int, rendezvous: str, args: argparse.Namespace, out: str) -> None:
    device = f"cuda:{rank}" if args.device == "cuda" else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo", init_method=f"file://{rendezvous}",
                            rank=rank, world_size=world)
    try:
        pipe, inputs = speed.build(args.preset, device)
        comm = Comm(ParallelConfig(ulysses=world))
        speed.timed(pipe, inputs, 0.5, min(args.steps, 8), args.guidance, device, comm)  # warm-up
        rows = []
        for budget in [1.0, *args.budgets]:
            comm.all_to_all_bytes.clear()
            row = speed.timed(pipe, inputs, budget, args.steps, args.guidance, device, comm)
            plan = plan_budget(args.steps, HSAConfig(budget=budget))
            sent = comm.all_to_all_bytes
            full = [sent[k] for k in range(args.steps) if plan.kind(k) != "sparse"]
            sparse = [sent[k] for k in range(args.steps) if plan.kind(k) == "sparse"]
            row["a2a_mb_full"] = statistics.mean(full) / 2**20
            row["a2a_mb_sparse"] = statistics.mean(sparse) / 2**20 if sparse else None
            rows.append(row)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(speed.PRESETS), default="cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    device = "cuda:0" if args.device == "cuda" else "cpu"
    pipe, inputs = speed.build(args.preset, device)
    speed.timed(pipe, inputs, 0.5, min(args.steps, 8), args.guidance, device)  # warm-up
    plain = [speed.timed(pipe, inputs, b, args.steps, args.guidance, device) for b in [1.0, *args.budgets]]
    del pipe, inputs

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/rows.json"
        if args.ranks == 1:
            _sharded(0, 1, f"{tmp}/rdzv", args, out)
        else:
            mp.start_processes(_sharded, args=(args.ranks, f"{tmp}/rdzv", args, out), nprocs=args.ranks,
                               start_method="spawn")
        sharded = json.loads(Path(out).read_text())

    frames, height, width = speed.PRESETS[args.preset][1]
    tokens = frames * height * width // 4
    print(f"preset {args.preset}, {tokens} tokens, {args.steps} steps, guidance {args.guidance}, {args.device}, "
          f"P = {args.ranks}, torch {torch.__version__}, {datetime.date.today()}")
    print(f"| budget | plain P=1 s | sharded P={args.ranks} s | sharded / plain | a2a MB/step full | a2a MB/step sparse |")
    print("|---|---|---|---|---|---|")
    rows = []
    for p, s in zip(plain, sharded):
        sparse = "-" if s["a2a_mb_sparse"] is None else f"{s['a2a_mb_sparse']:.2f}"
        print(f"| {s['budget']} | {p['seconds']:.2f} | {s['seconds']:.2f} | {s['seconds'] / p['seconds']:.3f} | "
              f"{s['a2a_mb_full']:.2f} | {sparse} |")
        rows.append({"budget": s["budget"], "plain": p, "sharded": s})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
