#!/usr/bin/env python
"""Training throughput: the HLP tagger with an AST backbone next to plain ``ASTForAudioClassification``.

Measured in one process, on the same device, interleaved (A, B, A, B, ...) so that drift hits both:

1. **Model step** (forward + BCE + backward + AdamW, synthetic in-memory features): transformers'
   ``ASTForAudioClassification`` (the reference) and ``HLPAudioForAudioClassification`` built from it with
   ``from_ast`` (same weights, 527 AudioSet classes), with post-HLP in ``forward`` and HLP targets in the loss
   both on -- the upper bound of HLP's cost. Goal: the HLP model at >= 97 % of the reference's samples/s.
2. **Data path**: clips decoded from audio files by ``AudioClipDataset`` in DataLoader workers (soundfile,
   random crop), collated, moved to the device and turned into AST filter banks by the batched
   ``KaldiFbankFrontEnd``; next to the same front end on in-memory waveforms, and to transformers'
   ``ASTFeatureExtractor`` (per clip, on CPU: what a loader without a batched front end would run).
3. **Training loop** of the HLP model fed by that real data path, next to the model step on synthetic input:
   if the data path is not the bottleneck, the two are equal. The epoch time of AudioSet-2M (balanced +
   unbalanced train, 2,063,949 clips) is projected from it.

GPU (the acceptance run): AST-base, batch 48, bf16 autocast. Without CUDA a **reduced CPU comparison** runs
instead (a small AST, batch 8, fp32, fewer steps), clearly labelled: its ratio says something about the
HLP overhead, its absolute figures nothing about a GPU.

    python scripts/bench_train.py                       # GPU if available, else the CPU fallback
    python scripts/bench_train.py --steps 30 --num-workers 12 --clips 384
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

AUDIOSET_2M_CLIPS = 22_160 + 2_041_789  # balanced_train + unbalanced_train segments

# A small AST for the CPU fallback: 10 s input, non-overlapping patches (8 x 64), 4 layers of width 192.
CPU_AST = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
               patch_size=16, frequency_stride=16, time_stride=16, max_length=1024, num_mel_bins=128)


def _audioset_dir(explicit):
    if explicit or os.environ.get("HLP_AUDIOSET_DIR"):
        return explicit
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset"
    return shared if shared.is_dir() else None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """One model + AdamW; ``run(batches)`` trains on them and returns the seconds per step."""

    def __init__(self, model, device, dtype):
        self.model = model.to(device).train()
        self.device, self.dtype = device, dtype
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, fused=fused)

    def step(self, features, labels):
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = self.model(input_values=features, labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def run(self, batches):
        _sync(self.device)
        start = time.perf_counter()
        for features, labels in batches:
            self.step(features, labels)
        _sync(self.device)
        return (time.perf_counter() - start) / len(batches)


def build_models(ast_size: dict, ontology, device):
    from transformers import ASTConfig, ASTForAudioClassification

    from hlp_audio.conversion import hlp_tagger_from_ast

    torch.manual_seed(0)
    config = ASTConfig(**ast_size, num_labels=len(ontology), problem_type="multi_label_classification",
                       id2label=dict(enumerate(ontology.names)), label2id={n: i for i, n in enumerate(ontology.names)})
    reference = ASTForAudioClassification(config)
    # the same weights, copied under ``backbone.``
    hlp = hlp_tagger_from_ast(reference, ontology, post_hlp=True, hlp_targets=True, check_labels=False)
    return reference, hlp


def synthetic_batches(count, batch, ast_size, num_classes, device):
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        features = torch.randn(batch, ast_size["max_length"], ast_size["num_mel_bins"], generator=generator)
        labels = (torch.rand(batch, num_classes, generator=generator) < 0.005).float()
        out.append((features.to(device), labels.to(device)))
    return out


def write_clips(folder: Path, count: int, seconds: float, sampling_rate: int, fmt: str, ontology):
    """``count`` clips of noise with tones, and a manifest of random AudioSet labels."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    for i in range(count):
        audio = 0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        path = folder / f"clip_{i:05d}.{fmt}"
        sf.write(path, audio.astype(np.float32), sampling_rate, subtype="PCM_16")
        labels = rng.choice(len(ontology), size=rng.integers(1, 4), replace=False)
        rows.append(f'{path.name},"{",".join(ontology.labels[j] for j in labels)}"')
    manifest = folder / "manifest.csv"
    manifest.write_text("audio,labels\n" + "\n".join(rows) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, help="default: 48 on GPU, 8 on CPU")
    parser.add_argument("--steps", type=int, help="timed steps per model and round (default: 10 on GPU, 2 on CPU)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--clips", type=int, help="audio files written for the data path (default: 8 batches)")
    parser.add_argument("--format", choices=["wav", "flac"], default="flac", help="format of the audio files")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--audioset-dir", help="AudioSet metadata folder (default: $HLP_AUDIOSET_DIR, ../shared/data/audioset)")
    args = parser.parse_args(argv)

    from transformers import ASTFeatureExtractor

    from hlp_audio import Ontology
    from hlp_audio.modeling.front_ends import KaldiFbankFrontEnd
    from hlp_audio.modeling.modeling_ast_backbone import ASTBackbone
    from hlp_audio.training import AudioClipDataset, ShuffleSampler, read_manifest

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    batch = args.batch_size or (48 if on_gpu else 8)
    steps = args.steps or (10 if on_gpu else 2)
    precision = args.precision or ("bf16" if on_gpu else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    ast_size = ASTBackbone.default_config("base").to_dict() if on_gpu else CPU_AST
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        label = f"GPU {torch.cuda.get_device_name(device)}: AST-base, batch {batch}, {precision} autocast"
    else:
        label = (f"CPU FALLBACK (reduced; not the GPU acceptance figure): small AST (hidden {CPU_AST['hidden_size']}, "
                 f"{CPU_AST['num_hidden_layers']} layers, stride 16), batch {batch}, {precision}, "
                 f"{torch.get_num_threads()} threads")
    ontology = Ontology.from_audioset(audioset_dir=_audioset_dir(args.audioset_dir))
    print(label)
    print(f"{len(ontology)} classes, {len(ontology.ancestor_pairs[0])} ancestor pairs; "
          f"{steps} timed steps x {args.rounds} interleaved rounds per model after {args.warmup} warm-up steps\n")

    # ------------------------------------------------------------------ 1. model step, synthetic input
    reference, hlp = build_models(ast_size, ontology, device)
    timers = {"ASTForAudioClassification (reference)": StepTimer(reference, device, dtype),
              "HLPAudioForAudioClassification (post-HLP + HLP targets)": StepTimer(hlp, device, dtype)}
    batches = synthetic_batches(steps, batch, ast_size, len(ontology), device)
    for timer in timers.values():
        timer.run(batches[: max(1, args.warmup)])
    per_step = {name: [] for name in timers}
    names = list(timers)
    for round_index in range(args.rounds):  # A B, B A, A B, ...: drift within a round cancels out
        for name in names if round_index % 2 == 0 else names[::-1]:
            per_step[name].append(timers[name].run(batches))
    rates = {name: batch / statistics.median(times) for name, times in per_step.items()}
    (ref_name, ref_rate), (hlp_name, hlp_rate) = rates.items()
    print("1. training step on synthetic in-memory features")
    for name, rate in rates.items():
        print(f"   {name:<58s} {rate:9.1f} samples/s")
    # the median of the per-round ratios: robust to a load change between rounds
    ratio = statistics.median(r / h for r, h in zip(per_step[ref_name], per_step[hlp_name]))
    verdict = "meets" if ratio >= 0.97 else "MISSES"
    print(f"   HLP / reference (median of the per-round ratios): {100 * ratio:.1f} % "
          f"({verdict} the >= 97 % goal{'' if on_gpu else ' -- CPU fallback'})\n")
    del timers[ref_name], reference
    if on_gpu:
        torch.cuda.empty_cache()

    # ------------------------------------------------------------------ 2. data path
    extractor = ASTFeatureExtractor(num_mel_bins=ast_size["num_mel_bins"], max_length=ast_size["max_length"])
    front_end = KaldiFbankFrontEnd.from_feature_extractor(extractor).to(device)
    clip_seconds = 10.0
    num_clips = args.clips or batch * 8
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        manifest_path = write_clips(Path(tmp), num_clips, clip_seconds, extractor.sampling_rate, args.format, ontology)
        manifest = read_manifest(manifest_path, ontology).with_hlp(ontology)
        dataset = AudioClipDataset(manifest, sampling_rate=extractor.sampling_rate, clip_seconds=clip_seconds, random_crop=True)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch, sampler=ShuffleSampler(len(dataset)), num_workers=args.num_workers,
            pin_memory=on_gpu, drop_last=True, persistent_workers=args.num_workers > 0,
        )

        def data_path_rate(with_front_end=True, model_timer=None):
            count = 0
            _sync(device)
            start = time.perf_counter()
            for item in loader:
                waves = item["waveform"].to(device, non_blocking=True)
                if with_front_end:
                    features = front_end(waves)
                    if model_timer is not None:
                        model_timer.step(features, item["labels"].to(device, non_blocking=True))
                count += waves.shape[0]
            _sync(device)
            return count / (time.perf_counter() - start)

        data_path_rate()  # warm-up: start the workers, fill the page cache
        decode_rate = data_path_rate(with_front_end=False)
        full_rate = data_path_rate()
        waves = torch.from_numpy(np.stack([dataset[i]["waveform"].numpy() for i in range(batch)])).to(device)
        front_end(waves)
        _sync(device)
        start = time.perf_counter()
        repeats = 5 if on_gpu else 2
        for _ in range(repeats):
            front_end(waves)
        _sync(device)
        memory_rate = repeats * batch / (time.perf_counter() - start)
        cpu_waves = list(waves.cpu().numpy())
        start = time.perf_counter()
        extractor(cpu_waves, sampling_rate=extractor.sampling_rate, return_tensors="np")
        reference_rate = len(cpu_waves) / (time.perf_counter() - start)
        print(f"2. data path ({num_clips} {args.format} files of {clip_seconds:.0f} s at {extractor.sampling_rate} Hz, "
              f"{args.num_workers} DataLoader workers, batch {batch})")
        print(f"   decode + crop + collate (workers)                          {decode_rate:9.1f} samples/s")
        print(f"   ... + transfer + batched fbank on {device.type:<4s}                      {full_rate:9.1f} samples/s")
        print(f"   batched fbank alone on in-memory waveforms                 {memory_rate:9.1f} samples/s")
        print(f"   reference: ASTFeatureExtractor, CPU, one process           {reference_rate:9.1f} samples/s\n")

        # ------------------------------------------------------------------ 3. loop fed by files
        hlp_timer = timers[hlp_name]
        loop_rate = data_path_rate(model_timer=hlp_timer)
        print("3. HLP training loop")
        print(f"   fed from audio files (decode in workers + fbank + step)    {loop_rate:9.1f} samples/s")
        print(f"   synthetic in-memory features (step only, from 1.)         {hlp_rate:9.1f} samples/s")
        print(f"   data path capacity (2.) / model step (1.): {full_rate / hlp_rate:.1f}x "
              f"({'keeps up' if full_rate >= hlp_rate else 'TOO SLOW'})")
        share = loop_rate / hlp_rate
        if on_gpu:
            bottleneck = "the model step" if share >= 0.95 else "the DATA PATH"
            print(f"   real / synthetic: {100 * share:.1f} % -> the bottleneck is {bottleneck}")
        else:
            print(f"   real / synthetic: {100 * share:.1f} % (CPU: the {args.num_workers} workers and the model share "
                  f"{os.cpu_count()} cores, so this measures their contention, not a bottleneck)")
        hours = AUDIOSET_2M_CLIPS / loop_rate / 3600
        print(f"   projected AudioSet-2M epoch ({AUDIOSET_2M_CLIPS:,} clips) on this device: {hours:.1f} h"
              f"{'' if on_gpu else ' (CPU fallback model; meaningless for a GPU)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
