"""Bad input gives a clear error naming the source (repo and split, or shard) and the row; with
--skip-bad-audio, undecodable clips are left out and every one is reported. Also the audio check that
runs before training (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from replica_helpers import copy_replica, garbled_flac, rewrite_row, write_replicas, zero_length_wav

from hlp_audio.training import AudioClipDataset
from hlp_audio.training.audio_check import audio_problems, checked_manifest
from hlp_audio.training.columns import SourceError
from hlp_audio.training.manifests import ManifestError, read_manifest
from hlp_audio.training.sources import open_source
from hlp_audio.training.streaming import ClipStream, StreamLoader


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, shared_data):
    return write_replicas(tmp_path_factory.mktemp("replicas"), shared_data)


@pytest.fixture
def agk(replicas, tmp_path):
    """A fresh copy of the agkphysics replica to damage; row 2 of shard 1 is row 6 of bal_train."""
    return copy_replica(replicas["agkphysics"], tmp_path / "agk")


def _whole(path, ontology, tmp_path, **kwargs):
    return open_source(path, ontology, config="balanced", split="train", cache_dir=str(tmp_path / "cache"), **kwargs)


def _stream(path, ontology, skip=False, **kwargs):
    source = open_source(path, ontology, config="balanced", split="train", streaming=True, **kwargs)
    stream = ClipStream(source, ontology, sampling_rate=16000, clip_seconds=0.5, skip_bad_audio=skip)
    return list(StreamLoader(stream, batch_size=4))


BAD_AUDIO = {
    "undecodable": (b"this is not audio " * 10, r"cannot (decode|read the header of) <180 bytes of audio>"),
    "empty": (b"", r"the audio bytes are empty"),
    "zero-length": (zero_length_wav(), r"<44 bytes of audio> (is a zero-length clip|contains no audio samples)"),
    "null": (None, r"no audio \(null"),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_blobs_name_the_split_or_shard_and_the_row(agk, audioset_ontology, tmp_path, case):
    blob, message = BAD_AUDIO[case]
    shard = agk / "data" / "bal_train" / "00001.parquet"
    clip = pq.read_table(shard).column("video_id")[2].as_py()
    rewrite_row(shard, 2, audio=blob)
    # read whole: the audio check finds it before anything runs
    manifest = _whole(agk, audioset_ontology, tmp_path)
    with pytest.raises(SourceError, match=rf"agk \[balanced/train\]: 1 of 12 clips cannot be used \(first: row 6 \(id {clip}\): {message}"):
        checked_manifest(manifest)
    report = tmp_path / "skipped.jsonl"
    kept = checked_manifest(manifest, skip=True, report=report, log=lambda *_: None)
    assert len(kept) == 11 and clip not in kept.ids.to_pylist()
    assert [json.loads(line)["clip"] for line in report.read_text().splitlines()] == [f"{manifest.source}, row 6 (id {clip})"]
    # decoding it anyway (no check) is an error naming the row
    with pytest.raises(ValueError, match=rf"\[balanced/train\], row 6 \(id {clip}\): {message}"):
        AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.5)[6]
    # streamed: the error names the shard file and the row in it
    with pytest.raises(ValueError, match=rf"\[balanced/train\], shard 1 \(.*00001\.parquet\), row 2 \(id {clip}\): {message}"):
        _stream(agk, audioset_ontology)
    batches = _stream(agk, audioset_ontology, skip=True)
    skipped = [entry for batch in batches for entry in batch["skipped"]]
    assert len(skipped) == 1 and f"row 2 (id {clip})" in skipped[0][0] and sum(len(b["ids"]) for b in batches) == 11


def test_a_header_that_reads_but_frames_that_do_not(agk, audioset_ontology, tmp_path):
    """The cheap check reads headers only: a clip garbled after its header fails when decoded, naming its row."""
    rewrite_row(agk / "data" / "bal_train" / "00000.parquet", 1, audio=garbled_flac())
    manifest = _whole(agk, audioset_ontology, tmp_path)
    assert audio_problems(manifest) == []
    with pytest.raises(ValueError, match=r"\[balanced/train\], row 1 \(id .*\): cannot decode <\d+ bytes of audio>"):
        AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.5)[1]
    assert "skipped" in AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.5, skip_bad_audio=True)[1]


@pytest.mark.parametrize(
    "labels, message",
    [(None, r"row {row}: missing labels in column 'labels'"), (["/m/09x0r", "/m/nope"], r"row {row}: unknown label '/m/nope'")],
    ids=["no labels", "unknown mid"],
)
def test_bad_labels_name_the_row(agk, audioset_ontology, tmp_path, labels, message):
    rewrite_row(agk / "data" / "bal_train" / "00001.parquet", 2, labels=labels)
    with pytest.raises(ManifestError, match=r"agk \[balanced/train\], (column 'labels', )?" + message.format(row=6)):
        _whole(agk, audioset_ontology, tmp_path)
    with pytest.raises(ManifestError, match=r"\[balanced/train\], shard 1 \(.*00001\.parquet\), (column 'labels', )?" + message.format(row=2)):
        _stream(agk, audioset_ontology, skip=True)  # labels are never skipped


def test_a_parquet_shard_that_ends_early(agk, audioset_ontology, tmp_path):
    shard = agk / "data" / "bal_train" / "00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(SourceError, match=r"agk \[balanced/train\]: cannot be prepared: shard .*00001\.parquet: "):
        _whole(agk, audioset_ontology, tmp_path)
    with pytest.raises(SourceError, match=r"\[balanced/train\], shard 1 \(.*00001\.parquet\): unreadable after row 0"):
        _stream(agk, audioset_ontology)


@pytest.mark.parametrize("cut", ["inside a member", "between samples"])
def test_a_tar_shard_that_ends_early(replicas, audioset_ontology, tmp_path, cut):
    import tarfile

    confit = copy_replica(replicas["confit"], tmp_path / "confit")
    shard = confit / "20k" / "train" / "shard-00001.tar"
    with tarfile.open(shard) as archive:
        members = archive.getmembers()
    end = members[3].offset_data + 10 if cut == "inside a member" else members[4].offset  # after 2 whole samples
    shard.write_bytes(shard.read_bytes()[:end])
    options = dict(config="20k", split="train", labels_column="json.label_id")
    with pytest.raises(SourceError, match=r"confit \[20k/train\]: cannot be prepared: shard .*shard-00001\.tar|confit \[20k/train\], shard .*shard-00001\.tar: no end-of-archive marker"):
        open_source(confit, audioset_ontology, cache_dir=str(tmp_path / "cache"), **options)
    source = open_source(confit, audioset_ontology, streaming=True, **options)
    stream = ClipStream(source, audioset_ontology, sampling_rate=16000, clip_seconds=0.5)
    expected = r"unreadable after row" if cut == "inside a member" else r"no end-of-archive marker: the file is truncated \(it ends early\) \(after row 1\)"
    with pytest.raises(SourceError, match=r"confit \[20k/train\], shard 1 \(.*shard-00001\.tar\): " + expected):
        list(StreamLoader(stream, batch_size=4))


def test_audio_check_of_loose_files(audioset_ontology, tmp_path):
    """Issue 12: every listed file exists and its header reads, counted, before training starts."""
    good = tmp_path / "good.flac"
    sf.write(good, np.zeros(1600, np.float32), 16000)
    (tmp_path / "text.flac").write_text("not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(0, np.float32), 16000)
    rows = ["good.flac", "missing.flac", "text.flac", "empty.flac", "silent.wav", "good.flac"]
    pq.write_table(pa.table({"audio": rows, "labels": [["/m/09x0r"]] * len(rows)}), tmp_path / "m.parquet")
    manifest = read_manifest(tmp_path / "m.parquet", audioset_ontology)
    problems = dict(audio_problems(manifest, threads=3))
    assert sorted(problems) == [1, 2, 3, 4]
    assert "audio file not found" in problems[1] and "cannot read the header" in problems[2]
    assert "is empty (0 bytes)" in problems[3] and "zero-length clip" in problems[4]
    with pytest.raises(SourceError, match=r"m\.parquet: 4 of 6 clips cannot be used \(first: row 1: audio file not found: .*missing\.flac"):
        checked_manifest(manifest)
    assert checked_manifest(manifest, skip=True, log=lambda *_: None).audio.to_pylist() == [str(good), str(good)]
