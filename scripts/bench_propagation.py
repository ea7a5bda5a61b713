#!/usr/bin/env python
"""Benchmark HLP label propagation and post-HLP against the peer package, in one run.

Figures (issue 2 goals):
- dense labels (4096, 527): rows/s, at least 100x ``hierarchical-label-propagation`` 0.1.0;
- all 2,084,320 AudioSet clips as a pyarrow list array of class indices: under 1 s on one core;
- post-HLP on (4096, 527) float32 logits: under 10 ms on one CPU thread (the peer takes ~2 s);
- peak extra memory of each call (nothing may build an (N, C, C) tensor).

Usage: python scripts/bench_propagation.py [--audioset-dir DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import pyarrow as pa
import psutil
import torch

from hlp_audio import Ontology, load_segments, propagate_labels, propagate_scores


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.process = psutil.Process(os.getpid())
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (caches, lazy init)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audioset-dir", default=os.environ.get("HLP_AUDIOSET_DIR"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from hierarchical_label_propagation import HLP

    peer = HLP()
    onto = Ontology.from_audioset(audioset_dir=args.audioset_dir)
    rng = np.random.default_rng(0)
    print(f"torch threads: {torch.get_num_threads()}; ontology: {onto}")

    # 1. dense labels (4096, 527), ~2.4 positives per row like AudioSet
    labels_np = rng.random((4096, 527)) < 2.4 / 527
    labels_t = torch.from_numpy(labels_np).float()
    assert torch.equal(propagate_labels(labels_t, onto), peer.propagate(labels_t)), "differs from the peer (binary)"
    probs = torch.rand(4096, 527)
    assert torch.equal(propagate_labels(probs, onto), peer.propagate(probs)), "differs from the peer (probabilities)"
    t_peer = best_time(lambda: peer.propagate(labels_t), max(1, args.repeats // 2))
    t_np = best_time(lambda: propagate_labels(labels_np, onto), args.repeats)
    t_torch = best_time(lambda: propagate_labels(labels_t, onto), args.repeats)
    with PeakRSS() as m_peer:
        peer.propagate(labels_t)
    with PeakRSS() as m_ours:
        propagate_labels(labels_t, onto)
    print("\n[dense labels, (4096, 527)] outputs identical to the peer on binary labels and probabilities")
    print(f"  peer HLP().propagate         {4096 / t_peer:>14,.0f} rows/s   peak +{m_peer.extra_mib:,.0f} MiB")
    print(f"  hlp-audio, numpy bool        {4096 / t_np:>14,.0f} rows/s   ({t_peer / t_np:,.0f}x the peer)")
    print(f"  hlp-audio, torch float32     {4096 / t_torch:>14,.0f} rows/s   ({t_peer / t_torch:,.0f}x the peer; goal >= 100x)   peak +{m_ours.extra_mib:,.1f} MiB")

    # 2. all AudioSet clips as an Arrow list array
    start = time.perf_counter()
    segments = load_segments(None, onto, audioset_dir=args.audioset_dir)
    read_s = time.perf_counter() - start
    all_labels = pa.concat_arrays([s.labels for s in segments.values()])
    t_arrow = best_time(lambda: propagate_labels(all_labels, onto), max(1, args.repeats // 2))
    with PeakRSS() as m_arrow:
        out = propagate_labels(all_labels, onto)
    print(f"\n[all AudioSet segments as a pyarrow list array] {len(all_labels):,} clips, {len(all_labels.values):,} labels (read in {read_s:.1f} s)")
    print(f"  hlp-audio propagate_labels   {t_arrow:.3f} s  ({len(all_labels) / t_arrow:,.0f} rows/s; goal < 1 s)   peak +{m_arrow.extra_mib:,.0f} MiB")
    print(f"  labels per clip              {len(all_labels.values) / len(all_labels):.3f} -> {len(out.values) / len(out):.3f}  (paper: 1.98 -> 2.39)")
    peer_rows_per_s = 4096 / t_peer
    print(f"  the peer, dense, would need  ~{len(all_labels) / peer_rows_per_s:,.0f} s at its measured rate")

    # 3. post-HLP on logits (4096, 527), one thread
    logits = torch.randn(4096, 527) * 3 - 4
    logits_np = logits.numpy()
    peer_post = peer.propagate(logits)  # the peer multiplies by a 0/1 mask: wrong on negative logits
    ours_post = propagate_scores(logits, onto)
    mismatched = (peer_post != ours_post).any(dim=1).float().mean().item()
    probs_post_equal = torch.equal(peer.propagate(torch.sigmoid(logits)), propagate_scores(torch.sigmoid(logits), onto))
    t_peer_post = best_time(lambda: peer.propagate(logits), max(1, args.repeats // 2))
    t_post_t = best_time(lambda: propagate_scores(logits, onto), args.repeats * 4)
    t_post_np = best_time(lambda: propagate_scores(logits_np, onto), args.repeats * 4)
    logits_grad = logits.clone().requires_grad_()
    t_post_grad = best_time(lambda: propagate_scores(logits_grad, onto), args.repeats * 4)
    with PeakRSS() as m_post:
        propagate_scores(logits, onto)
    print("\n[post-HLP, (4096, 527) float32 logits, 1 thread]")
    print(f"  peer HLP().propagate         {t_peer_post * 1e3:>10.1f} ms")
    print(f"  hlp-audio, torch             {t_post_t * 1e3:>10.2f} ms  ({t_peer_post / t_post_t:,.0f}x; goal < 10 ms)   peak +{m_post.extra_mib:,.1f} MiB")
    print(f"  hlp-audio, numpy             {t_post_np * 1e3:>10.2f} ms")
    print(f"  hlp-audio, torch + autograd  {t_post_grad * 1e3:>10.2f} ms  (the training path: pure torch ops)")
    print(f"  on probabilities the outputs are identical to the peer's: {probs_post_equal}")
    print(f"  on logits the peer's mask product differs from the max in {mismatched:.0%} of rows (it zeroes negative logits)")


if __name__ == "__main__":
    main()
