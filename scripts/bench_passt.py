#!/usr/bin/env python
"""Training-step throughput of our PaSST-S (SDPA, patchout) next to AST-base and the reference PaSST code.

All models run in the same process on the same device with the same recipe: random log-mel inputs already on
the device (feature extraction is not timed), BCE-with-logits loss on 527 random multi-hot targets, backward,
one AdamW step. Rows:

* ``AST-base``: transformers' ``ASTForAudioClassification`` (default ``ASTConfig``, 1024 frames at 10 s);
* ``hear21passt PaSST-S, patchout``: the reference model (``hear21passt.models.passt.get_model``,
  pretrained=False) with PaSST-S's usual structured patchout ``s_patchout_t=40, s_patchout_f=4``;
* ``ours PaSST-S, patchout``: ``PaSSTBackbone`` with the same patchout;
* ``ours PaSST-S, no patchout``: the full 12 x 99 grid, for scale (``--reference-no-patchout`` adds the
  reference without patchout too).

On CUDA (the issue's setting): bf16 autocast, batch 48, 10 s clips; prints samples/s and peak memory.
On CPU it prints a REDUCED comparison (float32, batch 2, 2 s clips, patchout scaled to the shorter grid),
clearly labelled: the ratios are indicative only; the goal figures are for the GPU run.

Usage::

    python scripts/bench_passt.py                       # CUDA if available, else the CPU reduction
    python scripts/bench_passt.py --steps 30 --warmup 5 --batch-size 48
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

NUM_CLASSES = 527
# PaSST's front end gives 100 frames per second (hop 320 at 32 kHz; 10 s -> 1000 frames). AST's gives 1024 for 10 s.
PASST_FRAMES_PER_SECOND = 100
AST_FRAMES_PER_SECOND = 102.4
PASST_S_PATCHOUT = {"s_patchout_t": 40, "s_patchout_f": 4}  # on the 12 x 99 grid of a 10 s clip


@dataclass
class Result:
    name: str
    samples_per_second: float | None
    peak_memory_gib: float | None
    note: str = ""


def _scaled_patchout(seconds: float) -> dict[str, int]:
    """PaSST-S's patchout, keeping the same fraction of time columns for clips shorter than 10 s."""
    columns = (int(seconds * PASST_FRAMES_PER_SECOND) - 16) // 10 + 1
    return {"s_patchout_t": min(round(40 * columns / 99), columns - 1), "s_patchout_f": 4}


def _time_training(
    name: str,
    build: Callable[[], torch.nn.Module],
    make_input: Callable[[], torch.Tensor],
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype | None,
    batch_size: int,
    steps: int,
    warmup: int,
) -> Result:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = build().to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
        inputs = make_input()
        targets = (torch.rand(batch_size, NUM_CLASSES, device=device) < 0.01).float()
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

        def step() -> None:
            with autocast:
                logits = forward(model, inputs)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hear21passt warns when the frame count differs from 998
            for _ in range(warmup):
                step()
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        return Result(name, batch_size * steps / elapsed, peak)
    except torch.cuda.OutOfMemoryError:
        return Result(name, None, None, "out of memory")
    finally:
        model = optimizer = None  # noqa: F841 - release before the next model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> list[Result]:
    from transformers import ASTConfig, ASTForAudioClassification

    from hlp_audio.conversion.from_passt import import_hear21passt
    from hlp_audio.modeling.modeling_passt import PaSSTBackbone

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else None
    if cuda:
        torch.backends.cudnn.benchmark = True
    passt_frames = int(args.seconds * PASST_FRAMES_PER_SECOND)
    ast_frames = int(round(args.seconds * AST_FRAMES_PER_SECOND))
    patchout = PASST_S_PATCHOUT if args.seconds >= 10 else _scaled_patchout(args.seconds)
    common = dict(device=device, dtype=dtype, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup)

    def passt_input() -> torch.Tensor:
        return torch.randn(args.batch_size, 128, passt_frames, device=device)

    def ast_input() -> torch.Tensor:
        return torch.randn(args.batch_size, ast_frames, 128, device=device)

    results = [
        _time_training(
            "AST-base (transformers)",
            lambda: ASTForAudioClassification(ASTConfig(max_length=ast_frames, num_labels=NUM_CLASSES)),
            ast_input,
            lambda model, x: model(input_values=x).logits,
            **common,
        )
    ]

    reference = None
    try:
        reference = import_hear21passt()
    except ImportError as error:
        results.append(Result("hear21passt PaSST-S, patchout", None, None, f"not installed ({error})"))
    reference_rows = [("hear21passt PaSST-S, patchout", patchout)]
    if args.reference_no_patchout:
        reference_rows.append(("hear21passt PaSST-S, no patchout", {"s_patchout_t": 0, "s_patchout_f": 0}))
    for name, settings in reference_rows if reference is not None else []:
        results.append(
            _time_training(
                name,
                lambda settings=settings: reference.get_model(
                    arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=NUM_CLASSES,
                    input_tdim=max(998, passt_frames), **settings,
                ),
                lambda: passt_input().unsqueeze(1),
                lambda model, x: model(x)[0],
                **common,
            )
        )

    for name, settings in (("ours PaSST-S, patchout", patchout), ("ours PaSST-S, no patchout", None)):
        config = PaSSTBackbone.default_config("s")
        config = config.replace(**(settings or {"s_patchout_t": 0, "s_patchout_f": 0, "u_patchout": 0}))
        config = config.replace(max_length=max(config.max_length, passt_frames))
        results.append(
            _time_training(
                name, lambda config=config: PaSSTBackbone(config, NUM_CLASSES), passt_input,
                lambda model, x: model(x), **common,
            )
        )
    return results


def _report(args: argparse.Namespace, results: list[Result]) -> None:
    device = torch.device(args.device)
    if device.type == "cuda":
        header = f"GPU: {torch.cuda.get_device_name(device)}, bf16 autocast"
    else:
        header = f"CPU ({torch.get_num_threads()} threads), float32 -- REDUCED SIZE, indicative only"
    patchout = PASST_S_PATCHOUT if args.seconds >= 10 else _scaled_patchout(args.seconds)
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"PaSST training-step throughput | {header} | {versions}")
    print(
        f"batch {args.batch_size}, {args.seconds:g} s clips, {args.steps} timed steps after {args.warmup} warm-up; "
        f"patchout {patchout}"
    )
    print(f"{'model':36s} {'samples/s':>10s} {'peak GiB':>9s}")
    by_name = {}
    for result in results:
        rate = "-" if result.samples_per_second is None else f"{result.samples_per_second:10.1f}"
        peak = "-" if result.peak_memory_gib is None else f"{result.peak_memory_gib:9.2f}"
        print(f"{result.name:36s} {rate:>10s} {peak:>9s} {result.note}")
        by_name[result.name] = result.samples_per_second
    ours = by_name.get("ours PaSST-S, patchout")
    for reference, goal in (("AST-base (transformers)", 2.0), ("hear21passt PaSST-S, patchout", 1.5)):
        if ours and by_name.get(reference):
            ratio = ours / by_name[reference]
            verdict = "meets" if ratio >= goal else "below"
            print(f"ours PaSST-S, patchout / {reference}: {ratio:.2f}x ({verdict} the {goal:g}x goal)")
    if device.type != "cuda":
        print("(CPU figures: the goals are stated for the CUDA run, bf16, batch 48, 10 s clips)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 48 on CUDA, 2 on CPU")
    parser.add_argument("--seconds", type=float, default=None, help="clip length; default: 10 on CUDA, 2 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default: 20 on CUDA, 2 on CPU")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps; default: 5 on CUDA, 1 on CPU")
    parser.add_argument("--reference-no-patchout", action="store_true", help="also time the reference without patchout")
    args = parser.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    for name, on_cuda, on_cpu in (("batch_size", 48, 2), ("seconds", 10.0, 2.0), ("steps", 20, 2), ("warmup", 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    if args.seconds * PASST_FRAMES_PER_SECOND < 16:
        parser.error("--seconds must give at least 16 frames (0.16 s)")
    _report(args, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
