"""Throughput of the 32 kHz mel front end and the EfficientAT mn04 backbone, next to ASTFeatureExtractor.

CPU (always): clips/s on 10 s clips, one clip per call as in ``pipeline("audio-classification")``,
in the same process and with the same torch thread count:

- ``ASTFeatureExtractor`` alone (the reference; 16 kHz input, its native rate),
- ``HLPAudioFeatureExtractor`` alone (32 kHz),
- ``HLPAudioFeatureExtractor`` + mn04 forward (what the pipeline runs per clip).

GPU (when CUDA is available, else reported as skipped): the batched ``MelFrontEnd`` (target: at
least 5,000 clips/s of 10 s at 32 kHz) and mn04 inference from mel spectrograms, fp32 and bf16
autocast.

The clips are the three real sample wavs of ``shared/data/models/efficientat_mn04_as`` (cycled).
mn04 weights come from ``--checkpoint`` (the original EfficientAT state dict) if given, else a
fresh initialisation: the speed does not depend on the values.

    python scripts/bench_frontend.py [--clips 60] [--threads 1] [--gpu-batch 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from hlp_audio import HLPAudioFeatureExtractor
from hlp_audio.conversion.from_efficientat import convert_original_state_dict
from hlp_audio.modeling.modeling_efficientat import EfficientATBackbone

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT.parent / "shared" / "data" / "models" / "efficientat_mn04_as" / "sample_audio"


def load_clips(folder: Path):
    import soundfile as sf
    import soxr

    clips_32k, clips_16k = [], []
    for path in sorted(folder.glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32")
        if rate != 32000 or audio.ndim != 1:
            raise SystemExit(f"{path}: expected 32 kHz mono, got {rate} Hz, shape {audio.shape}")
        clips_32k.append(audio)
        clips_16k.append(soxr.resample(audio, 32000, 16000).astype(np.float32))
    if not clips_32k:
        raise SystemExit(f"no .wav files in {folder}")
    return clips_32k, clips_16k


def rates(fns, items, rounds: int = 3, warmup: int = 2):
    """Best calls/s of each function over ``items``, rounds interleaved so that load from other
    processes on the machine hits every contender alike (best of rounds, as ``timeit`` reports)."""
    for fn in fns:
        for item in items[:warmup]:
            fn(item)
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            for item in items:
                fn(item)
            best[index] = max(best[index], len(items) / (time.perf_counter() - start))
    return best


def build_mn04(checkpoint: Path | None) -> EfficientATBackbone:
    model = EfficientATBackbone(EfficientATBackbone.default_config("mn04"), num_labels=527)
    if checkpoint is not None:
        original = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(convert_original_state_dict(original, model), strict=True)
    return model.eval()


def bench_cpu(args, clips_32k, clips_16k, model) -> None:
    from transformers import ASTFeatureExtractor

    ast_extractor = ASTFeatureExtractor()
    extractor = HLPAudioFeatureExtractor()
    items_32k = [clips_32k[i % len(clips_32k)] for i in range(args.clips)]
    items_16k = [clips_16k[i % len(clips_16k)] for i in range(args.clips)]

    def ast_features(audio):
        return ast_extractor(audio, sampling_rate=16000, return_tensors="pt")

    def our_features(audio):
        return extractor(audio, sampling_rate=32000, return_tensors="pt")

    @torch.inference_mode()
    def features_and_mn04(audio):
        return model(extractor(audio, sampling_rate=32000, return_tensors="pt")["input_values"])

    print(
        f"CPU, torch threads = {torch.get_num_threads()}, {args.clips} clips of 10 s, one clip per call, "
        f"best of {args.rounds} interleaved rounds"
    )
    reference, ours, full = rates(
        [lambda i: ast_features(items_16k[i]), lambda i: our_features(items_32k[i]), lambda i: features_and_mn04(items_32k[i])],
        list(range(args.clips)),
        rounds=args.rounds,
    )
    print(f"  ASTFeatureExtractor alone (16 kHz, reference)   {reference:8.1f} clips/s")
    print(f"  HLPAudioFeatureExtractor alone (32 kHz)          {ours:8.1f} clips/s  ({ours / reference:.2f}x the reference)")
    print(f"  HLPAudioFeatureExtractor + mn04 forward          {full:8.1f} clips/s  ({full / reference:.2f}x the reference)")


def bench_batched(args, clips_32k, model) -> None:
    """Batched front end and mn04 on ``args.device`` (CUDA by default; ``--device cpu`` dry-runs the code)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("GPU: skipped (no CUDA device)")
        return

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    front_end = HLPAudioFeatureExtractor().build_front_end().to(device)
    model = model.to(device)
    base = torch.from_numpy(np.stack(clips_32k))
    waveforms = base[torch.arange(args.gpu_batch) % base.shape[0]].to(device)
    waveforms = waveforms + 1e-4 * torch.randn_like(waveforms)  # distinct rows

    def timed(fn) -> float:
        fn()
        synchronize()
        start = time.perf_counter()
        for _ in range(args.gpu_repeats):
            fn()
        synchronize()
        return args.gpu_repeats * args.gpu_batch / (time.perf_counter() - start)

    with torch.inference_mode():
        mel = front_end(waveforms)
        mel_rate = timed(lambda: front_end(waveforms))
        fp32_rate = timed(lambda: model(mel))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16_rate = timed(lambda: model(mel))
        end_to_end = timed(lambda: model(front_end(waveforms)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"batched on {name}, batch {args.gpu_batch} clips of 10 s at 32 kHz, {args.gpu_repeats} repeats")
    print(f"  MelFrontEnd, batched                   {mel_rate:10.0f} clips/s  (target >= 5,000 on GPU)")
    print(f"  mn04 inference from mel, fp32          {fp32_rate:10.0f} clips/s")
    print(f"  mn04 inference from mel, bf16 autocast {bf16_rate:10.0f} clips/s")
    print(f"  front end + mn04 fp32, end to end      {end_to_end:10.0f} clips/s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="folder of 32 kHz mono .wav clips")
    parser.add_argument("--checkpoint", type=Path, default=None, help="original EfficientAT mn04 state dict (optional)")
    parser.add_argument("--clips", type=int, default=60, help="CPU: number of timed clips")
    parser.add_argument("--rounds", type=int, default=3, help="CPU: interleaved timing rounds (best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch and BLAS threads (default 1: one core)")
    parser.add_argument("--device", default="cuda", help="device of the batched part (default cuda; cpu dry-runs it)")
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-repeats", type=int, default=20)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:  # numpy's BLAS (used by ASTFeatureExtractor) gets the same number of threads as torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl is not installed: numpy's BLAS threads are not limited")
    clips_32k, clips_16k = load_clips(args.samples)
    model = build_mn04(args.checkpoint)
    if not args.skip_cpu:
        bench_cpu(args, clips_32k, clips_16k, model)
    bench_batched(args, clips_32k, model)


if __name__ == "__main__":
    main()
