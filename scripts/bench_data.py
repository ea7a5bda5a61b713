#!/usr/bin/env python
"""Can the data path feed a GPU? Clips/s per core per source format, DataLoader throughput, the model step, cores per GPU.

Measured in one run, on 10 s clips of real audio (UrbanSound8K clips, looped to 10 s, written in the
layouts users hold AudioSet in):

1. **One core** (torch and soxr on one thread): *soundfile decode* (from memory or the file: the
   reference) and the *full path* a DataLoader worker runs (read the row, decode, downmix, resample with
   soxr to the model's rate, crop; plain 16-bit WAV is read without a decoder), per format: parquet FLAC bytes 48 kHz 24-bit stereo
   (``agkphysics/AudioSet``), WebDataset FLAC 16 kHz mono (``confit/audioset-16khz-wds``), loose FLAC files
   at 32 kHz, and the same clips rewritten once by ``scripts/prepare_data.py`` (16-bit mono WAV bytes in
   Arrow at the model's rate).
2. **DataLoader throughput** with 1..N workers (streamed parquet; prepared), next to N x the one-core rate.
3. **The model step** (front end + forward + BCE + backward + AdamW) of EfficientAT mn04 and AST-base:
   on CPU (float32), or with ``--device cuda`` on the GPU (bf16, batch 48; and inference, batch 128).
4. **Cores per GPU**: the GPU's clips/s divided by the one-core full-path rate of each format. On CPU
   the GPU figures are AST-base's on an H200 (396 training / 1,488 inference, DESIGN.md) and, for mn04,
   an estimate (AST-base's times the CPU ratio); with ``--device cuda`` they are measured in the run.
5. **Disk** of the prepared form, for AudioSet's 2,063,949 training clips.
6. With ``--device cuda``: mn04 training fed by the real data path (stream of FLAC parquet; prepared
   WAV), next to its step on synthetic input: the share of the GPU the data path keeps busy.

    python scripts/bench_data.py [--clips 24] [--steps 2] [--workers 1 2]
    python scripts/bench_data.py --device cuda --clips 48 --steps 10 --workers 8 15   # scripts/bench_gpu.sh
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

AUDIOSET_TRAIN_CLIPS = 22_160 + 2_041_789  # balanced + unbalanced training segments
GPU_REFERENCE = {"ast-base": {"train": 396.0, "infer": 1488.0}}  # H200, bf16 (DESIGN.md)


def _shared(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / name


def rate(fn, count: int, rounds: int = 3) -> float:
    """Items per second of ``fn()`` over ``count`` items: the best of ``rounds`` (the neighbours' load is noise)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / min(times)


def write_sources(folder: Path, urbansound: Path, clips: int, ontology, model_rates) -> dict:
    """The formats of part 1 (10 s clips), each as a Manifest read the way train.py reads it."""
    import soundfile

    from hlp_audio.audio_loading import load_audio
    from hlp_audio.audioset_replicas import write_agkphysics_replica, write_confit_replica
    from hlp_audio.training import open_source, read_manifest
    from hlp_audio.training.prepare import prepare_split

    cache = str(folder / "cache")
    agk = write_agkphysics_replica(folder / "agk", urbansound, clips={"bal_train": clips}, rows_per_shard=max(1, clips // 4), lengths=(10.0,))
    confit = write_confit_replica(folder / "confit", urbansound, clips={"train": clips}, configs=("2m",), rows_per_shard=max(1, clips // 4),
                                  audio_format="flac", lengths=(10.0,))
    sources = {
        "parquet FLAC bytes 48 kHz 24-bit stereo": open_source(agk, ontology, config="balanced", split="train", cache_dir=cache),
        "WebDataset FLAC 16 kHz mono": open_source(confit, ontology, config="2m", split="train", labels_column="json.label_id", cache_dir=cache),
    }
    parquet = sources["parquet FLAC bytes 48 kHz 24-bit stereo"]
    loose = folder / "loose"
    loose.mkdir()
    rows = []
    for row in range(len(parquet)):
        path = loose / f"{parquet.ids[row].as_py()}.flac"
        soundfile.write(path, load_audio(parquet.audio[row], 32000), 32000, subtype="PCM_16")
        rows.append(f'{path.name},"{",".join(ontology.labels[i] for i in parquet.labels[row].as_py())}"')
    (loose / "manifest.csv").write_text("audio,labels\n" + "\n".join(rows) + "\n")
    sources["loose FLAC files 32 kHz mono"] = read_manifest(loose / "manifest.csv", ontology)
    prepare_rates = {}
    for model_rate in sorted(set(model_rates)):
        out = folder / f"prepared_{model_rate}"
        start = time.perf_counter()
        prepare_split(parquet, ontology, out, sampling_rate=model_rate, log=lambda *_: None)
        prepare_rates[model_rate] = len(parquet) / (time.perf_counter() - start)
        sources[f"prepared WAV bytes {model_rate // 1000} kHz (Arrow)"] = open_source(out, ontology)
    return sources, prepare_rates


def one_core(sources: dict, model_rates) -> dict:
    """Per format: decode alone, and the full worker path at each model rate (clips/s on one core)."""
    import soundfile

    from hlp_audio.training import AudioClipDataset

    results = {}
    for name, manifest in sources.items():
        blobs = [manifest.audio[row] for row in range(len(manifest))]
        blobs = [blob.as_py() if hasattr(blob, "as_py") else blob for blob in blobs]

        def decode():  # each result dropped at once, as a worker's items are once collated
            for blob in blobs:
                soundfile.read(io.BytesIO(blob) if isinstance(blob, bytes) else blob, dtype="float32")

        row = {"decode": rate(decode, len(blobs))}
        for model_rate in model_rates:
            if name.startswith("prepared") and f"{model_rate // 1000} kHz" not in name:
                continue
            dataset = AudioClipDataset(manifest, sampling_rate=model_rate, clip_seconds=10.0, random_crop=True)

            def full_path():
                for i in range(len(dataset)):
                    dataset[i]

            row[model_rate] = rate(full_path, len(dataset))
        results[name] = row
    return results


def steady_rate(batches) -> float:
    """Clips/s of an iterable of batches, from its first batch on (worker start-up left out)."""
    count, start = 0, None
    for batch in batches:
        if start is None:
            start = time.perf_counter()
            continue
        count += len(batch["ids"])
    return count / (time.perf_counter() - start)


def loader_throughput(sources: dict, workers_list, ontology, folder: Path, passes: int = 3) -> dict:
    """Clips/s of DataLoaders with N workers (steady state): the streamed parquet source (32 kHz) and the prepared one."""
    from hlp_audio.training import AudioClipDataset, ClipStream, StreamLoader, collate_clips, open_source

    stream_source = open_source(folder / "agk", ontology, config="balanced", split="train", streaming=True, min_shards=max(workers_list))
    prepared = sources["prepared WAV bytes 32 kHz (Arrow)"]
    results = {}
    for workers in workers_list:
        stream = ClipStream(stream_source, ontology, sampling_rate=32000, clip_seconds=10.0, random_crop=True, shuffle=True, passes=passes)
        streamed = steady_rate(StreamLoader(stream, batch_size=4, num_workers=workers))
        dataset = AudioClipDataset(prepared, sampling_rate=32000, clip_seconds=10.0, random_crop=True)
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=passes * 8 * len(dataset))
        map_style = steady_rate(torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_clips))
        results[workers] = {"streamed parquet FLAC 48 kHz": streamed, "prepared WAV 32 kHz": map_style}
    return results


MODELS = {"mn04": ("efficientat", "mn04"), "ast-base": ("ast", "base")}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ModelStep:
    """One model on ``device`` with its batched front end and AdamW: ``train(waves, labels)``, ``infer(waves)``.

    CUDA: bf16 autocast (the GPU recipe); CPU: float32.
    """

    def __init__(self, name: str, ontology, device):
        from hlp_audio.training import build_front_end, build_model

        backbone, size = MODELS[name]
        torch.manual_seed(0)
        model, extractor, _ = build_model(ontology=ontology, backbone_type=backbone, backbone_size=size)
        self.device, self.rate = device, int(extractor.sampling_rate)
        self.model = model.to(device)
        self.front_end = build_front_end(model, extractor).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, fused=device.type == "cuda")
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train(self, waves, labels):
        self.model.train()
        with self.autocast:
            loss = self.model(input_values=self.front_end(waves), labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer(self, waves):
        self.model.eval()
        with self.autocast:
            return self.model(input_values=self.front_end(waves)).raw_logits

    def timed(self, kind: str, batch: int, steps: int) -> float:
        """Clips/s of ``train`` or ``infer`` on synthetic 10 s clips already on the device (median step, after a warm-up)."""
        waves = torch.randn(batch, 10 * self.rate, device=self.device) * 0.1
        labels = (torch.rand(batch, self.model.config.num_labels, device=self.device) < 0.01).float()

        def run():
            return self.train(waves, labels) if kind == "train" else self.infer(waves)

        run()
        times = []
        for _ in range(steps):
            _sync(self.device)
            start = time.perf_counter()
            run()
            _sync(self.device)
            times.append(time.perf_counter() - start)
        return batch / statistics.median(times)


def model_steps(ontology, steps: int, device) -> dict:
    """Clips/s of mn04 and AST-base: training (front end + forward + BCE + backward + AdamW) and, on a GPU, inference."""
    gpu = device.type == "cuda"
    results = {}
    for name in MODELS:
        step = ModelStep(name, ontology, device)
        batch = 48 if gpu else (8 if name == "mn04" else 2)
        results[name] = {"train": step.timed("train", batch, steps), "rate": step.rate, "batch": batch}
        if gpu:
            results[name]["infer"] = step.timed("infer", 128, steps)
        del step
        if gpu:
            torch.cuda.empty_cache()
    return results


def training_loop(sources: dict, folder: Path, ontology, device, workers: int, steps: int, batch: int = 48) -> dict:
    """GPU: mn04 training steps fed by a real data path (DataLoader workers -> device -> front end -> step), clips/s."""
    from hlp_audio.training import AudioClipDataset, ClipStream, StreamLoader, collate_clips, open_source

    step = ModelStep("mn04", ontology, device)
    results = {}
    source = open_source(folder / "agk", ontology, config="balanced", split="train", streaming=True, min_shards=workers)
    stream = ClipStream(source, ontology, sampling_rate=32000, clip_seconds=10.0, random_crop=True, shuffle=True, passes=None)
    feeds = {"streamed parquet FLAC 48 kHz": StreamLoader(stream, batch_size=batch, num_workers=workers, device=device, pin_memory=True).batches(steps)}
    prepared = AudioClipDataset(sources["prepared WAV bytes 32 kHz (Arrow)"], sampling_rate=32000, clip_seconds=10.0, random_crop=True)
    sampler = torch.utils.data.RandomSampler(prepared, replacement=True, num_samples=batch * steps)
    feeds["prepared WAV 32 kHz"] = torch.utils.data.DataLoader(
        prepared, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_clips, pin_memory=True
    )
    for name, batches in feeds.items():
        count, start = 0, None
        for batch in batches:
            step.train(batch["waveform"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True))
            if start is None:  # timing starts after the first step (workers started, kernels compiled)
                _sync(device)
                start = time.perf_counter()
                continue
            count += batch["waveform"].shape[0]
        _sync(device)
        results[name] = count / (time.perf_counter() - start)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="10 s clips per format")
    parser.add_argument("--steps", type=int, default=2, help="timed model steps per model (and kind)")
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, max(1, min(4, os.cpu_count() or 1))}))
    parser.add_argument("--gpu-cores", type=int, default=16, help="CPU cores of the GPU host to judge")
    parser.add_argument("--device", default="cpu", help="cuda: model steps (and a real training loop) on the GPU")
    parser.add_argument("--urbansound-dir", type=Path, default=_shared("urbansound8k"))
    parser.add_argument("--audioset-dir", type=Path, default=_shared("audioset"))
    args = parser.parse_args(argv)

    from hlp_audio import Ontology

    ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir if args.audioset_dir.is_dir() else None)
    model_rates = (32000, 16000)  # EfficientAT / PaSST; AST
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sources, prepare_rates = write_sources(Path(tmp), args.urbansound_dir, args.clips, ontology, model_rates)
        cores = one_core(sources, model_rates)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        loaders = loader_throughput(sources, args.workers, ontology, Path(tmp))
        prepared_bytes = sum(p.stat().st_size for p in (Path(tmp) / "prepared_32000").glob("*.arrow")) / args.clips
        flac_bytes = sum(len(sources["parquet FLAC bytes 48 kHz 24-bit stereo"].audio[i]) for i in range(args.clips)) / args.clips
        prepare_rate = prepare_rates[32000]
        device = torch.device(args.device)
        models = model_steps(ontology, args.steps, device)
        loop = training_loop(sources, Path(tmp), ontology, device, max(args.workers), 3 * args.steps) if device.type == "cuda" else None

    print(f"1. one core, {args.clips} clips of 10 s per format (clips/s; best of 3 passes)")
    print(f"   {'format':<42s} {'soundfile (ref.)':>16s} {'full @32 kHz':>13s} {'full @16 kHz':>13s}")
    for name, row in cores.items():
        cells = [f"{row['decode']:16.1f}"] + [f"{row[key]:13.1f}" if key in row else f"{'-':>13s}" for key in (32000, 16000)]
        print(f"   {name:<42s} {' '.join(cells)}")
    print(f"   prepare (decode + resample + WAV encode + write, 1 process): {prepare_rate:.1f} clips/s")
    print("\n2. DataLoader throughput, batch 4 (clips/s; ideal: workers x one-core full path @32 kHz)")
    flac32 = cores["parquet FLAC bytes 48 kHz 24-bit stereo"][32000]
    prep32 = cores["prepared WAV bytes 32 kHz (Arrow)"][32000]
    for workers, row in loaders.items():
        print(f"   {workers} worker(s): streamed parquet FLAC 48 kHz {row['streamed parquet FLAC 48 kHz']:8.1f} (ideal {workers * flac32:8.1f}); "
              f"prepared WAV 32 kHz {row['prepared WAV 32 kHz']:8.1f} (ideal {workers * prep32:8.1f})")
    print(f"   ({os.cpu_count()} cores on this machine, shared: more workers than cores measure contention)")
    on_gpu = args.device.startswith("cuda")
    where = torch.cuda.get_device_name() + ", bf16 autocast" if on_gpu else f"CPU, {torch.get_num_threads()} threads, float32"
    print(f"\n3. model step ({where}; front end + forward + BCE + backward + AdamW; 10 s clips on the device)")
    for name, row in models.items():
        infer = f"; inference batch 128: {row['infer']:9.1f} clips/s" if "infer" in row else ""
        print(f"   {name:<9s} training batch {row['batch']}: {row['train']:9.2f} clips/s{infer} ({row['rate'] // 1000} kHz input)")
    if on_gpu:
        print(f"   reference (H200, same recipe, transformers ASTForAudioClassification): AST-base {GPU_REFERENCE['ast-base']['train']:.0f} "
              f"training / {GPU_REFERENCE['ast-base']['infer']:.0f} inference clips/s")
        gpu = {f"{name} {kind}": (models[name][kind], models[name]["rate"], "measured in this run") for name in models for kind in ("train", "infer")}
    else:
        ratio = models["mn04"]["train"] / models["ast-base"]["train"]
        note = f"estimate: AST-base x CPU ratio {ratio:.1f}; bench_gpu.sh measures it"
        gpu = {
            "ast-base train": (GPU_REFERENCE["ast-base"]["train"], 16000, "measured on an H200 (DESIGN.md)"),
            "ast-base infer": (GPU_REFERENCE["ast-base"]["infer"], 16000, "measured on an H200 (DESIGN.md)"),
            "mn04 train": (GPU_REFERENCE["ast-base"]["train"] * ratio, 32000, note),
            "mn04 infer": (GPU_REFERENCE["ast-base"]["infer"] * ratio, 32000, note),
        }
    print("\n4. cores per GPU = GPU clips/s / one-core full-path clips/s at the model's rate")
    formats = [name for name in cores if not name.startswith("prepared")] + ["prepared"]
    print(f"   {'model':<15s} {'GPU clips/s':>11s}  " + "  ".join(f"{name[:22]:>22s}" for name in formats))
    verdicts = []
    for model, (gpu_rate, model_rate, note) in gpu.items():
        cells = []
        for name in formats:
            key = f"prepared WAV bytes {model_rate // 1000} kHz (Arrow)" if name == "prepared" else name
            need = math.ceil(gpu_rate / cores[key][model_rate])
            cells.append(f"{need:22d}")
            if name.startswith("parquet") or name == "prepared":
                verdicts.append((model, name, need))
        print(f"   {model:<15s} {gpu_rate:11.0f}  " + "  ".join(cells) + f"   ({note})")
    print(f"\n   on a {args.gpu_cores}-core GPU host:")
    for model, name, need in verdicts:
        fits = "feeds it" if need <= args.gpu_cores - 1 else "CANNOT feed it"  # one core for the training process
        print(f"   - {model:<15s} from {name:<40s}: {need:4d} cores -> {fits}")
    print(f"\n5. disk: FLAC 48 kHz 24-bit stereo {flac_bytes / 1e6:.2f} MB per 10 s clip; prepared 32 kHz 16-bit mono "
          f"{prepared_bytes / 1e6:.2f} MB -> {prepared_bytes * AUDIOSET_TRAIN_CLIPS / 1e12:.2f} TB for the {AUDIOSET_TRAIN_CLIPS:,} "
          f"AudioSet training clips ({prepared_bytes * AUDIOSET_TRAIN_CLIPS / 2e12:.2f} TB at 16 kHz)")
    if loop is not None:
        print(f"\n6. mn04 training fed by the data path ({max(args.workers)} workers, batch 48) vs the step on synthetic input "
              f"({models['mn04']['train']:.0f} clips/s)")
        for name, value in loop.items():
            print(f"   {name:<32s} {value:9.1f} clips/s ({100 * value / models['mn04']['train']:.0f} % of the step's rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
