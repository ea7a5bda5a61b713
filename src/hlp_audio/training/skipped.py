"""Clips left out with ``--skip-bad-audio``: each one logged when it is met, all counted and listed per epoch.

Nothing vanishes silently: a DataLoader worker turns a clip it cannot decode into a ``skipped`` entry of
its batch (:func:`~hlp_audio.training.clips.collate_clips`); the loop hands those to :meth:`SkippedClips.add`
(a warning naming the source, shard, row and id), and :meth:`SkippedClips.report` gathers them from all
processes at the end of an epoch or an evaluation, prints the count and appends them to a JSON-lines file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, List, Tuple

__all__ = ["SkippedClips", "write_skipped"]

logger = logging.getLogger("hlp_audio.training")


def write_skipped(path: Path, stage: str, clips: Iterable[Tuple[str, str]]) -> None:
    """Append ``(clip, reason)`` pairs to the JSON-lines list of skipped clips at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for clip, reason in clips:
            handle.write(json.dumps({"stage": stage, "clip": clip, "reason": reason}) + "\n")


class SkippedClips:
    def __init__(self, path: Path, accelerator):
        self.path, self.accelerator = Path(path), accelerator
        self.current: List[Tuple[str, str]] = []  # (clip, reason) met since the last report, this process

    def add(self, skipped: Iterable[Tuple[str, str]]) -> None:
        for clip, reason in skipped:
            logger.warning("skipped %s: %s", clip, reason)
            self.current.append((clip, reason))

    def report(self, stage: str) -> int:
        """Gather the skipped clips of every process, print and record them; returns their number (on every process)."""
        clips = self.current
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            clips = gather_object(clips)
        self.current = []
        if clips and self.accelerator.is_main_process:
            write_skipped(self.path, stage, clips)
            self.accelerator.print(f"{stage}: {len(clips)} clips skipped as undecodable (--skip-bad-audio), listed in {self.path}")
        return len(clips)
