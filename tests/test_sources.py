"""Data sources as Hugging Face users hold AudioSet: local replicas of agkphysics/AudioSet (parquet) and
confit/audioset-16khz-wds (WebDataset), written from real UrbanSound8K clips and loaded offline through
``datasets.load_dataset``, whole and streamed; readers split over processes and workers; resumption."""

from __future__ import annotations

import csv
import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from replica_helpers import AGK_CLIPS, CONFIT_CLIPS, write_replicas

from hlp_audio.training import AudioClipDataset
from hlp_audio.training.columns import SourceError
from hlp_audio.training.manifests import ManifestError
from hlp_audio.training.sources import StreamSource, open_source
from hlp_audio.training.streaming import ClipStream, StreamLoader


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("replicas")
    found = write_replicas(folder, shared_data)
    found["cache"] = str(tmp_path_factory.mktemp("datasets_cache"))
    return found


@pytest.fixture(scope="module")
def metadata(shared_data):
    with open(shared_data / "urbansound8k" / "metadata.csv", newline="") as handle:
        return {row["slice_file_name"].rsplit(".", 1)[0]: row for row in csv.DictReader(handle)}


SOURCES = {
    "agkphysics": dict(config="balanced", split="train", clips=AGK_CLIPS["bal_train"], rate=48000),
    "confit": dict(config="20k", split="train", clips=CONFIT_CLIPS["train"], rate=16000, labels_column="json.label_id"),
}


def _open(replicas, audioset_ontology, name, streaming=False, **extra):
    spec = {k: v for k, v in SOURCES[name].items() if k not in ("clips", "rate")}
    spec.update(extra)
    return open_source(replicas[name], audioset_ontology, streaming=streaming, cache_dir=replicas["cache"], **spec)


def _stream_items(source, ontology, *, workers=0, processes=1, **options):
    items = []
    for process in range(processes):
        stream = ClipStream(
            source, ontology, sampling_rate=16000, clip_seconds=1.0, process_index=process, num_processes=processes, **options
        )
        for batch in StreamLoader(stream, batch_size=3, num_workers=workers):
            items += [(clip, wave) for clip, wave in zip(batch["ids"], batch["waveform"])]
    return items


def test_replicas_have_the_layouts_of_the_hub_copies(replicas):
    import datasets

    agk = replicas["agkphysics"]
    assert datasets.get_dataset_config_names(str(agk)) == ["balanced", "unbalanced", "full"]
    full = datasets.load_dataset(str(agk), "full", cache_dir=replicas["cache"])
    assert {name: len(split) for name, split in full.items()} == AGK_CLIPS
    balanced = datasets.load_dataset(str(agk), "balanced", split="train", cache_dir=replicas["cache"])
    assert balanced.column_names == ["video_id", "audio", "labels", "human_labels"]
    assert isinstance(balanced.features["audio"], datasets.Audio)
    blobs = balanced.cast_column("audio", datasets.Audio(decode=False))["audio"]
    infos = [sf.info(io.BytesIO(blob["bytes"])) for blob in blobs]
    assert {(i.format, i.subtype) for i in infos} == {("FLAC", "PCM_24")}
    assert {i.samplerate for i in infos} == {48000, 44100} and {i.channels for i in infos} == {1, 2}
    assert len({round(i.duration, 1) for i in infos}) >= 4  # mixed clip lengths
    assert all(blob["path"].startswith("audio/bal_train/") and blob["path"].endswith(".flac") for blob in blobs)
    shard = sorted((replicas["confit"] / "20k" / "train").glob("shard-*.tar"))[0]
    with tarfile.open(shard) as archive:
        assert archive.getnames()[:2] == ["sample-000000000.wav", "sample-000000000.json"]
    assert datasets.get_dataset_config_names(str(replicas["confit"])) == ["20k", "2m"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_whole_and_streamed_reads_give_the_same_clips_with_the_metadata_labels(replicas, audioset_ontology, metadata, name):
    manifest = _open(replicas, audioset_ontology, name)
    assert len(manifest) == SOURCES[name]["clips"] and manifest.source.endswith(f"[{SOURCES[name]['config']}/{SOURCES[name]['split']}]")
    assert manifest.ids is not None
    for clip, labels in zip(manifest.ids.to_pylist(), manifest.labels.to_pylist()):
        mids = metadata[clip]["audioset_mids"].split(";")  # the real label of the clip, from UrbanSound8K
        assert labels == [audioset_ontology.index(mid) for mid in mids]
    whole = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=1.0)
    streamed = _stream_items(_open(replicas, audioset_ontology, name, streaming=True), audioset_ontology)
    assert [clip for clip, _ in streamed] == manifest.ids.to_pylist()  # one reader: the shards' order
    for row, (_, wave) in enumerate(streamed):
        assert torch.equal(wave, whole[row]["waveform"])


@pytest.mark.parametrize("hlp", [False, True])
def test_streamed_targets_are_the_labels_of_the_whole_read(replicas, audioset_ontology, hlp):
    """Each streamed clip's targets are its row of the whole read's multi-hot labels (after HLP with ``hlp``)."""
    manifest = _open(replicas, audioset_ontology, "agkphysics")
    expected = (manifest.with_hlp(audioset_ontology) if hlp else manifest).multi_hot()
    assert hlp == (expected.sum() > manifest.multi_hot().sum())  # the replica's labels have unambiguous parents
    source = _open(replicas, audioset_ontology, "agkphysics", streaming=True)
    stream = ClipStream(source, audioset_ontology, sampling_rate=16000, clip_seconds=0.1, hlp=hlp, block_size=5)
    batches = list(StreamLoader(stream, batch_size=4))
    assert [clip for batch in batches for clip in batch["ids"]] == manifest.ids.to_pylist()
    np.testing.assert_array_equal(torch.cat([batch["labels"] for batch in batches]).numpy(), expected)


def test_bytes_decode_to_mono_at_the_model_rate(replicas, audioset_ontology, shared_data, metadata):
    """The replica's 48 kHz 24-bit clips, decoded from memory, match the UrbanSound8K originals (22.05 kHz)."""
    manifest = _open(replicas, audioset_ontology, "agkphysics")
    dataset = AudioClipDataset(manifest, sampling_rate=22050, clip_seconds=4.0)
    blobs = [manifest.audio[row] for row in range(len(manifest))]
    infos = [sf.info(io.BytesIO(blob)) for blob in blobs]
    checked = set()
    for row, info in enumerate(infos):
        original, rate = sf.read(shared_data / "urbansound8k" / metadata[manifest.ids[row].as_py()]["file"], dtype="float32")
        wave = dataset[row]["waveform"].numpy()
        length = int(round(info.duration * 22050))
        assert np.all(wave[length + 2 :] == 0)  # padded past the clip's end
        if info.channels == 1:  # mono clips are the original, resampled up and back down
            assert np.corrcoef(wave[: length - 50], original[: length - 50])[0, 1] > 0.999
            checked.add(("mono", info.samplerate))
        else:  # stereo: the mean of both channels (the writer made the second the first, delayed by 37 samples, x 0.8)
            import soxr

            first = soxr.resample(original, rate, info.samplerate)[: info.frames]
            left, right = np.clip(first, -1, 1), np.clip(0.8 * np.roll(first, 37), -1, 1)  # as written
            expected = soxr.resample(0.5 * (left + right), info.samplerate, 22050)
            np.testing.assert_allclose(wave[100 : length - 100], expected[100 : length - 100], atol=2e-4)
            checked.add(("stereo", info.samplerate))
    assert {kind for kind, _ in checked} == {"mono", "stereo"} and {rate for _, rate in checked} == {48000, 44100}


def test_webdataset_label_fields(replicas, audioset_ontology):
    """confit's json carries display names (label) and class indices (label_id): both read, one form per column."""
    with pytest.raises(ManifestError, match=r"confit \[20k/train\], column 'json.label', row 0: unknown label .* pass label_format='names'"):
        _open(replicas, audioset_ontology, "confit", labels_column=None)  # default: json.label, read as ids
    names = _open(replicas, audioset_ontology, "confit", labels_column=None, label_format="names")
    indices = _open(replicas, audioset_ontology, "confit")
    assert names.labels.to_pylist() == indices.labels.to_pylist()
    assert names.ids[0].as_py() != "sample-000000000"  # json.id (the clip) names a clip before __key__
    with pytest.raises(SourceError, match=r"no column 'tags' \(labels\); columns are \['wav', 'json' \{id, label, label_id\}"):
        _open(replicas, audioset_ontology, "confit", labels_column="tags")
    flac = write_flac_confit(replicas)
    assert open_source(flac, audioset_ontology, config="20k", split="test", labels_column="json.label_id",
                       cache_dir=replicas["cache"]).labels.to_pylist() == _open(
        replicas, audioset_ontology, "confit", split="test").labels.to_pylist()


def write_flac_confit(replicas):
    from hlp_audio.audioset_replicas import write_confit_replica

    out = replicas["confit"].parent / "confit_flac"
    if not out.exists():
        write_confit_replica(out, replicas["urbansound"], clips={"test": CONFIT_CLIPS["test"]}, rows_per_shard=4, configs=("20k",), audio_format="flac")
    return out


def test_splits_join_with_plus_whole_and_streamed(replicas, audioset_ontology):
    both = open_source(replicas["agkphysics"], audioset_ontology, config="full", split="bal_train+unbal_train", cache_dir=replicas["cache"])
    assert len(both) == AGK_CLIPS["bal_train"] + AGK_CLIPS["unbal_train"]
    stream = open_source(replicas["agkphysics"], audioset_ontology, config="full", split="bal_train+unbal_train", streaming=True)
    assert isinstance(stream, StreamSource) and stream.num_examples is None  # the card gives no sizes for "full"
    assert sorted(clip for clip, _ in _stream_items(stream, audioset_ontology)) == sorted(both.ids.to_pylist())
    assert open_source(replicas["agkphysics"], audioset_ontology, config="balanced", split="train", streaming=True).num_examples == 12
    with pytest.raises(SourceError, match=r"\[full/None\]: pass a split"):
        open_source(replicas["agkphysics"], audioset_ontology, config="full")
    with pytest.raises(SourceError, match=r"agkphysics \[full/nope\]: cannot be loaded"):
        open_source(replicas["agkphysics"], audioset_ontology, config="full", split="nope", streaming=True)


@pytest.mark.parametrize("processes, workers", [(2, 2), (3, 2)])
def test_every_clip_goes_to_exactly_one_reader(replicas, audioset_ontology, processes, workers):
    """3 shards of 4 clips: 4 readers (2 x 2) take whole shards; 6 readers keep one row in 6 of every shard."""
    source = _open(replicas, audioset_ontology, "agkphysics", streaming=True)
    assert len(source) == 3
    clips = [clip for clip, _ in _stream_items(source, audioset_ontology, workers=workers, processes=processes, shuffle=True, seed=4)]
    assert Counter(clips) == Counter(_open(replicas, audioset_ontology, "agkphysics").ids.to_pylist())


def test_shuffled_passes_differ_and_each_is_complete(replicas, audioset_ontology):
    source = _open(replicas, audioset_ontology, "confit", streaming=True)
    stream = ClipStream(source, audioset_ontology, sampling_rate=16000, clip_seconds=0.5, shuffle=True, block_size=4, seed=1, passes=2)
    clips = [clip for batch in StreamLoader(stream, batch_size=4) for clip in batch["ids"]]
    first, second = clips[:12], clips[12:]
    assert sorted(first) == sorted(second) and len(set(first)) == 12 and first != second
    unshuffled = [clip for clip, _ in _stream_items(source, audioset_ontology)]
    assert first != unshuffled


def _loader(source, ontology, state=None, workers=2):
    stream = ClipStream(source, ontology, sampling_rate=16000, clip_seconds=0.5, shuffle=True, random_crop=True, block_size=3, seed=2, passes=None)
    loader = StreamLoader(stream, batch_size=2, num_workers=workers)
    if state is not None:
        loader.load_state_dict(state)
    return loader


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_a_stream_resumes_where_it_stopped(replicas, audioset_ontology, name):
    """Interrupted after 3 and 7 batches (mid-block, mid-shard, into the second pass): the same batches as one run."""
    source = _open(replicas, audioset_ontology, name, streaming=True)
    reference = [(b["ids"], b["waveform"]) for b in _loader(source, audioset_ontology).batches(10)]
    resumed, state = [], None
    for count in (3, 4, 3):
        loader = _loader(source, audioset_ontology, state)
        resumed += [(b["ids"], b["waveform"]) for b in loader.batches(count)]
        state = loader.state_dict()
    assert [ids for ids, _ in resumed] == [ids for ids, _ in reference]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, reference))
    assert len({clip for ids, _ in reference for clip in ids}) == SOURCES[name]["clips"]  # 20 clips: past one pass
    with pytest.raises(ValueError, match="saved with 2 DataLoader workers per process and is resumed with 1"):
        _loader(source, audioset_ontology, state, workers=1)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_prepared_split_decodes_like_its_source(replicas, audioset_ontology, tmp_path, streaming):
    """Rewritten once at 32 kHz as 16-bit WAV bytes: the same clips and labels, within 16-bit rounding."""
    from hlp_audio.training.prepare import prepare_split

    source = _open(replicas, audioset_ontology, "agkphysics", streaming=streaming, split="test")
    counts = prepare_split(source, audioset_ontology, tmp_path / "prepared", sampling_rate=32000, num_workers=2, rows_per_file=3)
    assert counts["clips"] == 8 and counts["files"] == 3 and counts["skipped"] == 0
    prepared = open_source(tmp_path / "prepared", audioset_ontology)
    original = _open(replicas, audioset_ontology, "agkphysics", split="test")
    order = {clip: row for row, clip in enumerate(prepared.ids.to_pylist())}
    assert sorted(order) == sorted(original.ids.to_pylist())
    fast = AudioClipDataset(prepared, sampling_rate=32000, clip_seconds=4.0)
    slow = AudioClipDataset(original, sampling_rate=32000, clip_seconds=4.0)
    for row, clip in enumerate(original.ids.to_pylist()):
        assert prepared.labels[order[clip]].as_py() == sorted(original.labels[row].as_py())
        info = sf.info(io.BytesIO(prepared.audio[order[clip]]))
        assert (info.samplerate, info.channels, info.subtype) == (32000, 1, "PCM_16")
        np.testing.assert_allclose(fast[order[clip]]["waveform"].numpy(), slow[row]["waveform"].numpy(), atol=1e-4)
    with pytest.raises(FileExistsError):
        prepare_split(source, audioset_ontology, tmp_path / "prepared", sampling_rate=32000)


def test_an_endless_stream_with_a_reader_left_without_clips_is_an_error(replicas, audioset_ontology, tmp_path):
    """Fewer clips than readers: a reader that gets nothing in a pass would make the training loop wait forever."""
    from hlp_audio.audioset_replicas import write_agkphysics_replica

    tiny = write_agkphysics_replica(tmp_path / "tiny", replicas["urbansound"], clips={"eval": 3}, rows_per_shard=3, row_group_size=3)
    source = open_source(tiny, audioset_ontology, config="full", split="eval", streaming=True)
    stream = ClipStream(source, audioset_ontology, sampling_rate=16000, clip_seconds=0.2, passes=None, process_index=1, num_processes=2)
    with pytest.raises(SourceError, match=r"\[full/eval\]: reader 3 of 4 .* got no clip in a whole pass"):
        list(StreamLoader(stream, batch_size=1, num_workers=2).batches(4))
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio,labels\na.wav,/m/09x0r\n")
    with pytest.warns(UserWarning, match=r"m\.csv: a manifest or a save_to_disk folder is read whole"):
        assert len(open_source(manifest, audioset_ontology, streaming=True)) == 1
