"""Benchmark: HLP on all 2,084,320 AudioSet segments through ``Dataset.map``, on one CPU core.

Compares, on the same in-memory ``Dataset`` (balanced_train + eval + unbalanced_train):

- ``ds.map(hlp_propagate(ontology), batched=True)``, in memory and writing a cache file;
- a naive batched map function doing a per-row Python set union over each label's ancestors
  (the reference: run on all rows, its output must be identical);
- both functions unbatched (one call per row), timed on a subsample and extrapolated.

Usage: python scripts/bench_datasets.py [--audioset-dir DIR] [--batch-size N] [--per-row-sample N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pyarrow as pa


def pin_to_one_core() -> str:
    """Run on one core: the process affinity and pyarrow's thread pools."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        where = f"CPU {core}"
    else:  # pragma: no cover - not Linux
        where = "any CPU (affinity not supported here)"
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    return where


def naive_function(ontology, column: str = "labels", output_column: str = "hlp_labels"):
    """Per-row Python set union: labels in order, then the added ancestors in class order."""
    ancestor_sets = [set(ontology.ancestors(index)) for index in range(len(ontology))]

    def propagate_rows(batch):
        out = []
        for row in batch[column]:
            present = set(row)
            added = set()
            for label in row:
                added |= ancestor_sets[label]
            out.append(row + sorted(added - present))
        return {output_column: out}

    def propagate_row(example):
        return {output_column: propagate_rows({column: [example[column]]})[output_column][0]}

    return propagate_rows, propagate_row


def timed(label: str, function):
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.2f} s", flush=True)
    return result, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audioset-dir", default=None, help="folder with the AudioSet metadata files")
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--per-row-sample", type=int, default=50_000, help="rows for the unbatched naive map")
    args = parser.parse_args(argv)

    where = pin_to_one_core()
    import datasets

    from hlp_audio import Ontology
    from hlp_audio import hlp_propagate, load_audioset

    datasets.disable_progress_bars()
    print(f"Running on {where}, pyarrow threads: {pa.cpu_count()}; datasets {datasets.__version__}")
    ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir)
    splits, _ = timed(
        "load_audioset (3 splits)", lambda: load_audioset(audioset_dir=args.audioset_dir, ontology=ontology)
    )
    ds = datasets.concatenate_datasets(list(splits.values()))
    rows = len(ds)
    print(f"Dataset: {rows:,} rows, features {list(ds.features)}, in memory: {not ds.cache_files}")

    common = dict(batched=True, batch_size=args.batch_size, load_from_cache_file=False)
    print("Timing:")
    fast, fast_s = timed(
        "hlp_propagate, batched, in memory",
        lambda: ds.map(hlp_propagate(ontology, output_column="hlp_labels"), keep_in_memory=True, **common),
    )
    with tempfile.TemporaryDirectory() as tmp:
        cached, cached_s = timed(
            "hlp_propagate, batched, cache file",
            lambda: ds.map(
                hlp_propagate(ontology, output_column="hlp_labels"),
                cache_file_name=os.path.join(tmp, "hlp.arrow"),
                **common,
            ),
        )
        cached_column = cached.data.column("hlp_labels").combine_chunks()
        del cached
    propagate_rows, propagate_row = naive_function(ontology)
    naive, naive_s = timed(
        "naive set union, batched, in memory", lambda: ds.map(propagate_rows, keep_in_memory=True, **common)
    )
    sample = ds.select(range(min(args.per_row_sample, rows)))
    _, per_row_sample_s = timed(
        f"naive set union, unbatched, {len(sample):,} rows",
        lambda: sample.map(propagate_row, keep_in_memory=True, load_from_cache_file=False),
    )
    per_row_s = per_row_sample_s * rows / len(sample)
    fast_row, fast_row_sample_s = timed(
        f"hlp_propagate, unbatched, {len(sample):,} rows",
        lambda: sample.map(
            hlp_propagate(ontology, output_column="hlp_labels"), keep_in_memory=True, load_from_cache_file=False
        ),
    )
    fast_row_s = fast_row_sample_s * rows / len(sample)

    fast_column = fast.data.column("hlp_labels").combine_chunks()
    naive_column = naive.data.column("hlp_labels").combine_chunks()
    identical = (
        fast_column.equals(naive_column)
        and cached_column.equals(naive_column)
        and fast_row.data.column("hlp_labels").combine_chunks().equals(naive_column.slice(0, len(sample)))
    )

    print()
    print(f"HLP over {rows:,} AudioSet segments, Dataset.map, batch_size={args.batch_size:,}, one core")
    print(f"{'map function':<58}{'seconds':>9}{'rows/s':>13}{'vs naive batched':>18}")
    lines = [
        ("hlp_propagate, batched, in memory", fast_s),
        ("hlp_propagate, batched, cache file", cached_s),
        ("naive set union, batched (reference)", naive_s),
        (f"hlp_propagate, unbatched (extrapolated from {len(sample):,} rows)", fast_row_s),
        (f"naive set union, unbatched (extrapolated from {len(sample):,} rows)", per_row_s),
    ]
    for label, seconds in lines:
        print(f"{label:<58}{seconds:>9.2f}{rows / seconds:>13,.0f}{naive_s / seconds:>17.2f}x")
    print(f"Results identical to the naive reference on all {rows:,} rows: {identical}")
    verdict = "met" if fast_s < 10 else "NOT met"
    print(f"Target: under 10 s for the batched hlp_propagate map -> {verdict} ({fast_s:.2f} s)")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
