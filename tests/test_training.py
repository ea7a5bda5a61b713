"""Unit tests of hlp_audio.training: manifests, clip data set, samplers, augmentation, schedule."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from hlp_audio import propagate_labels
from hlp_audio.training import (
    AudioClipDataset,
    ClassBalancedSampler,
    ManifestError,
    ShuffleSampler,
    build_lr_scheduler,
    build_optimizer,
    class_balanced_weights,
    crop_or_pad,
    mask_time_frequency,
    mixup,
    multi_hot,
    read_manifest,
    seed_everything_for_step,
    step_rng,
)
from training_helpers import LABELS, make_corpus, tone_noise_ontology


@pytest.fixture(scope="module")
def ontology():
    return tone_noise_ontology()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    manifest, labels = make_corpus(folder, 8, sampling_rate=16000, seconds=0.5)
    return folder, manifest, labels


def _write_csv(path, text):
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ manifests
def test_csv_manifest_with_ids_resolves_paths_and_labels(ontology, corpus):
    folder, manifest_path, labels = corpus
    manifest = read_manifest(manifest_path, ontology)
    assert len(manifest) == 8
    assert manifest.audio[0].as_py() == str(folder / "train" / "clip_0000.wav")
    expected = [sorted(ontology.index(label) for label in row) for row in labels]
    assert [sorted(row) for row in manifest.labels.to_pylist()] == expected


def test_csv_manifest_label_forms_audio_root_and_empty_labels(ontology, tmp_path):
    """One form per column, as for every entry point: ids by default, names or indices when declared."""
    ids = _write_csv(tmp_path / "ids.csv", 'audio,labels\na.wav,"low_tone, tone"\n/abs/b.wav,white_noise\nc.wav,""\n')
    manifest = read_manifest(ids, ontology, audio_root="/data")
    assert manifest.audio.to_pylist() == ["/data/a.wav", "/abs/b.wav", "/data/c.wav"]
    assert manifest.labels.to_pylist() == [[1, 0], [4], []]
    names = _write_csv(tmp_path / "names.csv", 'audio,labels\na.wav,"Low tone, Tone"\n')
    assert read_manifest(names, ontology, label_format="names").labels.to_pylist() == [[1, 0]]
    with pytest.raises(ManifestError, match=r"unknown label 'Low tone'.*display name: pass label_format='names'"):
        read_manifest(names, ontology)
    indices = _write_csv(tmp_path / "indices.csv", 'audio,labels\na.wav,4\nd.wav,"2,0,"\n')
    assert read_manifest(indices, ontology, label_format="indices").labels.to_pylist() == [[4], [2, 0]]


def test_annotated_classes_are_the_classes_with_a_positive_after_hlp_too(ontology, tmp_path):
    path = _write_csv(tmp_path / "leaves.csv", 'audio,labels\na.wav,low_tone\nb.wav,"low_tone,buzz"\nc.wav,""\n')
    manifest = read_manifest(path, ontology)
    annotated = manifest.annotated_classes()
    assert annotated.dtype == bool and annotated.shape == (len(LABELS),)
    assert [LABELS[i] for i in np.flatnonzero(annotated)] == ["low_tone", "buzz"]
    # with HLP the propagated parent joins the vocabulary; buzz is ambiguous and adds nothing
    assert [LABELS[i] for i in np.flatnonzero(manifest.with_hlp(ontology).annotated_classes())] == ["tone", "low_tone", "buzz"]


def test_tsv_and_custom_separator(ontology, tmp_path):
    path = _write_csv(tmp_path / "m.tsv", "audio\ttags\na.wav\tlow_tone;tone\n")
    manifest = read_manifest(path, ontology, labels_column="tags", label_separator=";")
    assert manifest.labels.to_pylist() == [[1, 0]]


def test_parquet_manifest_with_lists(ontology, tmp_path):
    table = pa.table({"file": ["x.wav", "y.wav"], "labels": [["white_noise", "noise"], ["high_tone"]]})
    pq.write_table(table, tmp_path / "m.parquet")
    manifest = read_manifest(tmp_path / "m.parquet", ontology, audio_column="file")
    assert manifest.labels.to_pylist() == [[4, 3], [2]]
    dense = np.zeros((2, 6), np.int8)
    dense[0, [4, 3]] = dense[1, 2] = 1
    table = pa.table({"audio": ["x.wav", "y.wav"], "labels": pa.array(list(dense), pa.list_(pa.int8(), 6))})
    pq.write_table(table, tmp_path / "hot.parquet")  # fixed-length integer lists: multi-hot
    assert read_manifest(tmp_path / "hot.parquet", ontology).labels.to_pylist() == [[3, 4], [2]]
    table = pa.table({"audio": ["x.wav", "y.wav"], "labels": pa.array([[5], [0, 1]], pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "n.parquet")
    assert read_manifest(tmp_path / "n.parquet", ontology).labels.to_pylist() == [[5], [0, 1]]
    table = pa.table({"audio": ["x.wav"], "labels": pa.array([3], pa.int64())})  # single-label column
    pq.write_table(table, tmp_path / "o.parquet")
    assert read_manifest(tmp_path / "o.parquet", ontology).labels.to_pylist() == [[3]]


def test_datasets_classlabel_names_are_mapped_to_the_ontology(ontology, tmp_path):
    import datasets

    # ClassLabel in another order than the ontology: indices must go through the names.
    names = list(reversed(LABELS))
    features = datasets.Features(
        {"audio": datasets.Value("string"), "labels": datasets.List(datasets.ClassLabel(names=names))}
    )
    ds = datasets.Dataset.from_dict({"audio": ["a.wav", "b.wav", "c.wav"], "labels": [[0], [5, 1], []]}, features=features)
    manifest = read_manifest(ds, ontology)
    assert manifest.labels.to_pylist() == [[ontology.index(names[0])], [ontology.index(names[5]), ontology.index(names[1])], []]
    # DatasetDict: split required; a selection keeps its rows; save_to_disk folders work.
    dd = datasets.DatasetDict({"train": ds.select([2, 0])})
    with pytest.raises(ManifestError, match="split"):
        read_manifest(dd, ontology)
    assert read_manifest(dd, ontology, split="train").audio.to_pylist() == ["c.wav", "a.wav"]
    dd["extra"] = ds.select([1])
    joined = read_manifest(dd, ontology, split="train+extra")
    assert joined.audio.to_pylist() == ["c.wav", "a.wav", "b.wav"] and joined.source.endswith("[train+extra]")
    with pytest.raises(ManifestError, match="split 'test' is not in the DatasetDict"):
        read_manifest(dd, ontology, split="train+test")
    dd.save_to_disk(str(tmp_path / "saved"))
    from_disk = read_manifest(tmp_path / "saved", ontology, split="train", audio_root="/r")
    assert from_disk.audio.to_pylist() == ["/r/c.wav", "/r/a.wav"]
    assert from_disk.labels.to_pylist() == [[], [ontology.index(names[0])]]


def test_audio_structs_with_bytes_are_encoded_files_and_without_any_are_paths(ontology, tmp_path):
    """A datasets.Dataset or a parquet file whose Audio structs hold bytes (or a binary column) gives the files
    themselves, read row by row; Audio structs without any bytes give their paths, made absolute."""
    import datasets

    from hlp_audio.training import AudioColumn

    structs = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {
        "bytes": pa.array([{"bytes": b"RIFF1", "path": "a.wav"}, {"bytes": None, "path": "b.wav"}], structs),
        "paths": pa.array([{"bytes": None, "path": "a.wav"}, {"bytes": None, "path": "b.wav"}], structs),
        "binary": pa.array([b"RIFF1", b"RIFF2"], pa.binary()),
    }
    expected = {"bytes": [b"RIFF1"], "paths": ["/r/a.wav", "/r/b.wav"], "binary": [b"RIFF1", b"RIFF2"]}
    labels = pa.array(["tone", "noise"])
    for name, audio in columns.items():
        table = pa.table({"audio": audio, "labels": labels})
        pq.write_table(table, tmp_path / f"{name}.parquet")
        for source in (tmp_path / f"{name}.parquet", datasets.Dataset(table)):
            manifest = read_manifest(source, ontology, audio_root="/r")
            assert isinstance(manifest.audio, AudioColumn) == (name != "paths"), (name, source)
            read = manifest.audio.to_pylist() if name == "paths" else [manifest.audio[row] for row in range(2)]
            assert read[: len(expected[name])] == expected[name], (name, source)


def test_manifest_on_real_audioset_labels(audioset_ontology, audioset_dir, tmp_path):
    """The first rows of Google's eval CSV, written as a mids manifest, give the reader's indices."""
    from hlp_audio import read_segments

    segments = read_segments(audioset_dir / "eval_segments.csv", audioset_ontology)
    rows = 200
    mids = [",".join(audioset_ontology.labels[i] for i in row) for row in segments.labels[:rows].to_pylist()]
    table = pa.table({"audio": [f"{y}.wav" for y in segments.ytid[:rows].to_pylist()], "labels": mids})
    pq.write_table(table, tmp_path / "eval.parquet")
    manifest = read_manifest(tmp_path / "eval.parquet", audioset_ontology)
    assert manifest.labels.to_pylist() == segments.labels[:rows].to_pylist()
    hlp = manifest.with_hlp(audioset_ontology)
    dense = propagate_labels(manifest.multi_hot(), audioset_ontology)
    np.testing.assert_array_equal(hlp.multi_hot(), dense)
    assert (hlp.multi_hot().sum() > manifest.multi_hot().sum())


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("audio,labels\na.wav,tone\nb.wav,purr\n", {}, r"m\.csv, column 'labels', row 1 \(line 3\): unknown label 'purr'"),
        ("audio,labels\na.wav,0\nb.wav,\"1,9\"\n", {"label_format": "indices"}, r"row 1 \(line 3\): class index 9 is outside \[0, 6\)"),
        ("audio,labels\n,tone\n", {}, r"row 0 \(line 2\): empty audio path"),
        ("path,labels\na.wav,tone\n", {}, r"no column 'audio'; columns are \['path', 'labels'\]"),
        ("audio,labels\na.wav,tone\n", {"labels_column": "tags"}, r"no column 'tags'"),
    ],
)
def test_manifest_errors_name_the_row(ontology, tmp_path, text, kwargs, message):
    path = _write_csv(tmp_path / "m.csv", text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path, ontology, **kwargs)


def test_manifest_errors_other_sources(ontology, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "missing.csv", ontology)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ManifestError, match="unknown manifest type"):
        read_manifest(tmp_path / "m.json", ontology)
    pq.write_table(pa.table({"audio": ["a", "b"], "labels": pa.array([[1], [0, -2]], pa.list_(pa.int64()))}), tmp_path / "n.parquet")
    with pytest.raises(ManifestError, match=r"n\.parquet, column 'labels', row 1: class index -2"):
        read_manifest(tmp_path / "n.parquet", ontology)
    pq.write_table(pa.table({"audio": ["a", "b"], "labels": pa.array([[1], None], pa.list_(pa.int64()))}), tmp_path / "o.parquet")
    with pytest.raises(ManifestError, match=r"o\.parquet, row 1: missing labels"):
        read_manifest(tmp_path / "o.parquet", ontology)
    pq.write_table(pa.table({"audio": [1, 2], "labels": [[1], [0]]}), tmp_path / "p.parquet")
    with pytest.raises(ManifestError, match="must hold file paths"):
        read_manifest(tmp_path / "p.parquet", ontology)
    with pytest.raises(ManifestError, match="datasets.Dataset"):
        read_manifest({"audio": ["a"]}, ontology)


def test_multi_hot_matches_a_python_reference():
    rng = np.random.default_rng(0)
    rows = [sorted(rng.choice(20, size=rng.integers(0, 5), replace=False).tolist()) for _ in range(50)]
    labels = pa.array(rows, pa.list_(pa.int32())).slice(5, 40)  # a slice: non-zero offsets
    expected = np.zeros((40, 20), np.float32)
    for r, row in enumerate(rows[5:45]):
        for c in row:
            expected[r, c] = 1
    np.testing.assert_array_equal(multi_hot(labels, 20), expected)


# ------------------------------------------------------------------------------------ clip data set
def test_crop_or_pad():
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(wave, 4), wave[:4])
    np.testing.assert_array_equal(crop_or_pad(wave, 12), np.r_[wave, 0, 0])
    rng = np.random.default_rng(0)
    starts = {int(crop_or_pad(wave, 4, rng)[0]) for _ in range(200)}
    assert starts == set(range(7))  # every start 0..6, nothing past the end
    padded = [crop_or_pad(wave, 13, rng) for _ in range(100)]
    assert all(np.count_nonzero(p) == 9 and p.sum() == wave.sum() for p in padded)
    assert len({int(np.flatnonzero(p == 9)[0]) for p in padded}) == 4  # offsets 0..3


def test_dataset_decodes_crops_deterministically_and_labels(ontology, corpus):
    folder, manifest_path, labels = corpus
    manifest = read_manifest(manifest_path, ontology)
    train = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.25, random_crop=True, seed=3)
    item = train[1]
    assert item["waveform"].shape == (4000,) and item["waveform"].dtype == torch.float32
    np.testing.assert_array_equal(item["labels"].numpy(), multi_hot(manifest.labels, 6)[1])
    original, _ = sf.read(folder / "train" / "clip_0001.wav", dtype="float32")
    # the crop is a contiguous window of the file
    start = int(np.argmin([np.abs(original[s : s + 4000] - item["waveform"].numpy()).sum() for s in range(4001)]))
    np.testing.assert_allclose(original[start : start + 4000], item["waveform"].numpy(), atol=1e-6)
    again = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.25, random_crop=True, seed=3)
    assert torch.equal(again[1]["waveform"], item["waveform"])  # same (seed, epoch, index): same crop
    again.set_epoch(1)
    assert not torch.equal(again[1]["waveform"], item["waveform"])
    evaluation = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=1.0)
    np.testing.assert_allclose(evaluation[1]["waveform"].numpy(), np.r_[original, np.zeros(8000, np.float32)], atol=1e-6)


def test_dataset_resamples_to_the_model_rate(ontology, corpus):
    folder, manifest_path, _ = corpus
    manifest = read_manifest(manifest_path, ontology)
    dataset = AudioClipDataset(manifest, sampling_rate=32000, clip_seconds=0.5)
    assert dataset[0]["waveform"].shape == (16000,)


def test_dataset_error_names_the_row_and_file(ontology, tmp_path):
    manifest = read_manifest(_write_csv(tmp_path / "m.csv", "audio,labels\nmissing.wav,tone\n"), ontology)
    dataset = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.5)
    with pytest.raises(Exception, match=r"m\.csv, row 0: .*missing\.wav"):
        dataset[0]


def test_loader_batches_do_not_depend_on_workers(ontology, corpus):
    _, manifest_path, _ = corpus
    manifest = read_manifest(manifest_path, ontology)

    def batches(workers):
        dataset = AudioClipDataset(manifest, sampling_rate=16000, clip_seconds=0.1, random_crop=True, seed=1)
        sampler = ShuffleSampler(len(dataset), seed=1)
        dataset.set_epoch(2)
        sampler.set_epoch(2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=workers)
        return [(b["index"].tolist(), b["waveform"]) for b in loader]

    serial, parallel = batches(0), batches(2)
    assert [i for i, _ in serial] == [i for i, _ in parallel]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(serial, parallel))


# ------------------------------------------------------------------------------------ samplers
def test_class_balanced_weights_match_the_dense_formula():
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 12)) < np.linspace(0.01, 0.5, 12)).astype(np.float64)
    rows = [np.flatnonzero(r).tolist() for r in dense]
    labels = pa.array(rows, pa.list_(pa.int32()))
    per_class = 1000.0 / (100.0 + dense.sum(0))
    np.testing.assert_allclose(class_balanced_weights(labels, 12, offset=100), dense @ per_class)
    with pytest.raises(ValueError, match="offset"):
        class_balanced_weights(labels, 12, offset=-1)


def test_class_balanced_sampler_draws_rare_classes_more_often_and_is_epoch_seeded():
    common, rare = [[0]] * 900, [[1]] * 100
    labels = pa.array(common + rare, pa.list_(pa.int32()))
    weights = class_balanced_weights(labels, 2, offset=0)
    sampler = ClassBalancedSampler(weights, num_samples=2000, replacement=True, seed=5)
    drawn = np.array(list(sampler))
    assert abs((drawn >= 900).mean() - 0.5) < 0.05  # balanced, where uniform sampling gives 0.1
    assert list(sampler) == drawn.tolist()
    sampler.set_epoch(1)
    assert list(sampler) != drawn.tolist()
    no_repeat = ClassBalancedSampler(weights, num_samples=500, seed=5)
    assert len(set(no_repeat)) == 500 == len(no_repeat)
    with pytest.raises(ValueError, match="without replacement"):
        ClassBalancedSampler(np.r_[np.zeros(5), np.ones(3)], num_samples=4)
    with pytest.raises(ValueError, match="finite"):
        ClassBalancedSampler([1.0, np.nan])
    with pytest.raises(ValueError, match="every one of the 3 sampling weights is 0"):
        ClassBalancedSampler(np.zeros(3))


def test_shuffle_sampler_is_a_seeded_permutation():
    sampler = ShuffleSampler(50, seed=7)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(ShuffleSampler(50, seed=7)) == first
    sampler.set_epoch(3)
    assert list(sampler) != first
    assert list(ShuffleSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------ augmentation
def test_mixup_is_a_convex_combination_with_the_same_weights_for_targets():
    inputs = torch.randn(6, 3, 4)
    targets = torch.eye(6)
    mixed, mixed_targets = mixup(inputs, targets, alpha=0.3, rng=np.random.default_rng(0))
    # targets are one-hot rows: the weights and partners can be read from them
    lam = mixed_targets.max(dim=1).values
    assert torch.all(lam >= 0.5)
    for i in range(6):
        partner = int(torch.argsort(mixed_targets[i])[-2]) if lam[i] < 1 else i
        np.testing.assert_allclose(mixed[i], lam[i] * inputs[i] + (1 - lam[i]) * inputs[partner], atol=1e-5)
    np.testing.assert_allclose(mixed_targets.sum(1), torch.ones(6), atol=1e-6)
    again = mixup(inputs, targets, alpha=0.3, rng=np.random.default_rng(0))[0]
    assert torch.equal(again, mixed)
    with pytest.raises(ValueError, match="alpha"):
        mixup(inputs, targets, alpha=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch"):
        mixup(inputs, targets[:3], alpha=1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("time_axis, freq_axis", [(1, 2), (2, 1)])
def test_masking_masks_bands_of_bounded_width(time_axis, freq_axis):
    shape = [16, 0, 0]
    shape[time_axis], shape[freq_axis] = 50, 20
    features = torch.rand(shape) + 1.0
    masked = mask_time_frequency(
        features, np.random.default_rng(0), time_axis=time_axis, freq_axis=freq_axis, time_mask=10, freq_mask=5,
        num_time_masks=1, num_freq_masks=1,
    )
    zero = masked == 0
    assert torch.equal(masked[~zero], features[~zero])
    for example in zero:
        ex = example if time_axis == 1 else example.T  # (time, freq)
        full_frames = ex.all(dim=1)
        full_bins = ex.all(dim=0)
        assert int(full_frames.sum()) <= 10 and int(full_bins.sum()) <= 5
        # every masked cell lies in a fully masked frame or bin
        assert torch.equal(ex, full_frames[:, None] | full_bins[None, :])
    assert zero.any()
    untouched = mask_time_frequency(features, np.random.default_rng(0), time_axis=time_axis, freq_axis=freq_axis)
    assert torch.equal(untouched, features)
    with pytest.raises(ValueError, match="distinct"):
        mask_time_frequency(features, np.random.default_rng(0), time_axis=1, freq_axis=1, time_mask=2)


def test_step_seeding_reproduces_dropout_and_augmentation():
    dropout = torch.nn.Dropout(0.5)
    seed_everything_for_step(0, 12)
    first = dropout(torch.ones(100))
    torch.rand(5)  # whatever ran in between
    seed_everything_for_step(0, 12)
    assert torch.equal(dropout(torch.ones(100)), first)
    seed_everything_for_step(0, 13)
    assert not torch.equal(dropout(torch.ones(100)), first)
    assert step_rng(0, 3, 1).random() == step_rng(0, 3, 1).random() != step_rng(0, 3, 0).random()


# ------------------------------------------------------------------------------------ optimisation
def test_optimizer_groups_skip_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, head_lr=1e-2, head_prefix="2.")
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert id(model[0].weight) not in by_param  # frozen
    assert by_param[id(model[0].bias)]["weight_decay"] == 0.0
    assert by_param[id(model[1].weight)]["weight_decay"] == 0.0
    assert by_param[id(model[2].weight)]["weight_decay"] == 0.05 and by_param[id(model[2].weight)]["lr"] == 1e-2
    assert by_param[id(model[2].bias)]["lr"] == 1e-2 and by_param[id(model[0].bias)]["lr"] == 1e-3
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model, lr=1e-3)


def test_warmup_cosine_schedule_follows_the_formula():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = build_lr_scheduler(optimizer, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    rates = []
    for _ in range(110):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step, rate in enumerate(rates):
        if step < 10:
            expected = 2.0 * step / 10
        else:
            progress = (step - 10) / 100
            expected = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert rate == pytest.approx(expected, rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_lr_scheduler(optimizer, warmup_steps=20, total_steps=10)


# ------------------------------------------------------------------------------------ front ends
def test_kaldi_fbank_front_end_matches_ast_feature_extractor():
    from transformers import ASTFeatureExtractor

    from hlp_audio.modeling.front_ends import KaldiFbankFrontEnd
    from hlp_audio.modeling.modeling_ast_backbone import ASTBackbone

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    clips = np.stack([
        (0.1 * rng.standard_normal(48000)).astype(np.float32),
        (0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(48000)).astype(np.float32),
    ])
    for extractor in (ASTFeatureExtractor(), ASTFeatureExtractor(num_mel_bins=32, max_length=64)):
        expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
        front_end = ASTBackbone.build_front_end(extractor)
        assert isinstance(front_end, KaldiFbankFrontEnd)
        actual = front_end(torch.from_numpy(clips)).numpy()
        assert actual.shape == expected.shape  # padded to 1024 frames / truncated to 64
        np.testing.assert_allclose(actual, expected, atol=5e-4)
    with pytest.raises(ValueError, match="at least 400 samples"):
        KaldiFbankFrontEnd()(torch.zeros(2, 100))
    with pytest.raises(TypeError, match="an AST backbone takes ASTFeatureExtractor features, got object"):
        ASTBackbone.build_front_end(object())


def test_mel_front_end_comes_from_the_hlp_feature_extractor():
    from hlp_audio import HLPAudioConfig, HLPAudioFeatureExtractor
    from hlp_audio.modeling.modeling_efficientat import EfficientATBackbone
    from hlp_audio.training import build_front_end

    extractor = HLPAudioFeatureExtractor(num_mel_bins=16)
    waves = torch.randn(3, 32000)
    expected = extractor(list(waves.numpy()), sampling_rate=32000, return_tensors="pt")["input_values"]
    config = HLPAudioConfig(num_labels=2, backbone_type="efficientat", backbone_config=EfficientATBackbone.default_config("tiny").to_dict())
    torch.testing.assert_close(build_front_end(config, extractor)(waves), expected)


# ------------------------------------------------------------------------------------ models
def test_build_model_from_scratch_and_from_a_checkpoint_with_a_new_label_set(ontology, tmp_path):
    from hlp_audio import Ontology
    from hlp_audio.training import build_model, feature_axes

    model, extractor, same = build_model(ontology=ontology, backbone_type="ast", backbone_size="tiny", hlp_targets=True)
    assert same is ontology and feature_axes(model) == (1, 2)  # (batch, time, mel)
    assert (extractor.num_mel_bins, extractor.max_length) == (32, 64)
    assert model.config.hlp_targets and model.config.post_hlp
    model.save_pretrained(tmp_path / "m")
    extractor.save_pretrained(tmp_path / "m")

    reloaded, _, reloaded_ontology = build_model(model_name_or_path=tmp_path / "m", post_hlp=False)
    assert reloaded_ontology == ontology and not reloaded.config.post_hlp
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name

    # Another label set (same size, other ids): the body is kept, the head starts afresh.
    other = Ontology.from_parents([f"c{i}" for i in range(6)], {"c1": ["c0"]})
    moved, _, _ = build_model(ontology=other, model_name_or_path=tmp_path / "m", backbone_overrides={"hidden_dropout_prob": 0.1})
    assert moved.config.ontology["labels"][0] == "c0" and moved.config.backbone_config["hidden_dropout_prob"] == 0.1
    body = [k for k in model.state_dict() if not k.startswith("backbone.classifier.")]
    assert all(torch.equal(model.state_dict()[k], moved.state_dict()[k]) for k in body)
    assert not torch.equal(model.state_dict()["backbone.classifier.dense.weight"], moved.state_dict()["backbone.classifier.dense.weight"])
    with pytest.raises(ValueError, match="backbone_type and backbone_size"):
        build_model(ontology=ontology)


def test_predict_returns_logits_before_post_hlp(ontology, corpus):
    from hlp_audio import propagate_scores
    from hlp_audio.training import build_front_end, build_model, predict

    _, manifest_path, _ = corpus
    model, extractor, _ = build_model(ontology=ontology, backbone_type="efficientat", backbone_size="tiny")
    manifest = read_manifest(manifest_path, ontology)
    dataset = AudioClipDataset(manifest, sampling_rate=32000, clip_seconds=0.5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3)
    front_end = build_front_end(model, extractor)
    model.train()
    logits, targets = predict(model, loader, front_end)
    assert model.training and model.config.post_hlp  # both untouched
    np.testing.assert_array_equal(targets, manifest.multi_hot())
    model.eval()
    with torch.no_grad():
        waves = torch.stack([dataset[i]["waveform"] for i in range(len(dataset))])
        outputs = model(input_values=front_end(waves))
    np.testing.assert_allclose(logits, outputs.raw_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(propagate_scores(logits, ontology), outputs.logits.numpy(), atol=1e-5)
    assert not np.allclose(outputs.logits.numpy(), outputs.raw_logits.numpy())  # post-HLP does change parents


def test_trainer_compute_metrics_gets_the_raw_logits(ontology, tmp_path):
    """With the HF Trainer, predictions are (logits, raw_logits): the metric on raw_logits keeps map != map_post."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from hlp_audio.metrics import compute_hierarchical_map
    from hlp_audio.training import build_model

    torch.manual_seed(0)
    model, _, _ = build_model(ontology=ontology, backbone_type="efficientat", backbone_size="tiny")
    rng = np.random.default_rng(0)
    labels = (rng.random((24, 6)) < 0.4).astype(np.float32)
    features = rng.standard_normal((24, 16, 40)).astype(np.float32)
    data = datasets.Dataset.from_dict({"input_values": features.tolist(), "labels": labels.tolist()}).with_format("torch")
    seen = {}

    def compute_metrics(eval_pred):
        logits, raw_logits = eval_pred.predictions
        seen["logits"], seen["raw"] = logits, raw_logits
        result = compute_hierarchical_map(raw_logits, eval_pred.label_ids, ontology)
        return {key: result[key] for key in ("map", "map_post")}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to=[], use_cpu=True)
    metrics = Trainer(model=model, args=args, eval_dataset=data, compute_metrics=compute_metrics).evaluate()
    from hlp_audio import propagate_scores

    np.testing.assert_allclose(propagate_scores(seen["raw"], ontology), seen["logits"], atol=1e-6)
    assert metrics["eval_map"] != metrics["eval_map_post"]


def test_evaluation_metrics_against_sklearn(ontology):
    from sklearn.metrics import average_precision_score

    from hlp_audio import propagate_scores
    from hlp_audio.metrics import compute_hierarchical_map

    rng = np.random.default_rng(1)
    labels = (rng.random((40, 6)) < 0.3).astype(np.float32)
    logits = rng.standard_normal((40, 6)).astype(np.float32) + 2 * labels
    result = compute_hierarchical_map(logits, labels, ontology)
    hlp_labels = propagate_labels(labels, ontology)
    post = propagate_scores(logits, ontology)
    for key, (y, s) in {"map": (labels, logits), "map_hlp": (hlp_labels, logits), "map_post": (labels, post), "map_hlp_post": (hlp_labels, post)}.items():
        expected = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(6) if y[:, c].any()])
        assert result[key] == pytest.approx(expected, abs=1e-9), key


def test_training_progress_round_trip():
    from hlp_audio.training import TrainingProgress

    progress = TrainingProgress()
    progress.global_step, progress.history = 12, [{"epoch": 1, "map": 0.5}]
    restored = TrainingProgress()
    restored.load_state_dict(progress.state_dict())
    assert restored.state_dict() == progress.state_dict()
    with pytest.raises(ValueError, match="unknown training progress fields"):
        restored.load_state_dict({"step": 3})


# ------------------------------------------------------------------------------------ Hub
class _RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", dict(repo_id=repo_id, commit_message=commit_message, files=files)))
        return "commit"


def test_publish_an_audioset_model_renders_the_card_with_attribution(audioset_ontology, tmp_path):
    import json

    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from hlp_audio.hub import publish_model
    from hlp_audio.training import build_model

    model, extractor, _ = build_model(ontology=audioset_ontology, backbone_type="efficientat", backbone_size="tiny", hlp_targets=True)
    folder = tmp_path / "best"
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    metrics = {"map": 0.401, "map_post": 0.405, "map_hlp": 0.412, "map_hlp_post": 0.43, "epoch": 3}
    (folder / "eval_results.json").write_text(json.dumps(metrics))
    args = {"model_name_or_path": "me/efficientat-mn04-as", "hlp": True, "epochs": 3, "batch_size": 48, "lr": 1e-4,
            "weight_decay": 1e-4, "warmup_ratio": 0.05, "min_lr_ratio": 0.01, "mixup": 0.3, "balanced_sampler": True,
            "sampler_offset": 100.0, "epoch_size": 100000, "clip_seconds": 10.0, "mixed_precision": "bf16",
            "num_processes": 4, "gradient_accumulation_steps": 1, "seed": 0, "hub_token": "secret"}
    (folder / "training_args.json").write_text(json.dumps(args))
    api = _RecordingApi()
    with pytest.raises(ValueError, match="needs a licence"):
        publish_model(folder, "me/mn04-hlp", api=api)
    assert publish_model(folder, "me/mn04-hlp", api=api, license="cc-by-4.0", eval_name="AudioSet eval") == "commit"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]  # one commit
    files = api.calls[1][1]["files"]
    card = files["README.md"].decode()
    assert "AudioSet ontology" in card and "CC BY-SA 4.0" in card
    assert "base_model: me/efficientat-mn04-as" in card
    for key in ("map", "map_post", "map_hlp", "map_hlp_post"):
        assert f"value: {metrics[key]}" in card
    assert "192 (48 per device x 1 accumulation x 4 process(es))" in card
    assert "partial labels" not in card
    assert "class-balanced" in card and "100000 clips per epoch" in card
    assert b"secret" not in files["training_args.json"]
    # the pushed folder is a loadable model: same weights as the trained one
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, content in files.items():
        (pushed / name).write_bytes(content)
    reloaded = HLPAudioForAudioClassification.from_pretrained(pushed)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        publish_model(tmp_path, "me/x", api=api)


def test_training_recipe_states_partial_label_training():
    from hlp_audio.hub.publish import training_recipe

    args = {"model_name_or_path": "mn04", "hlp": True, "epochs": 2, "batch_size": 32, "seed": 0}
    assert training_recipe(args)["Loss"] == "binary cross-entropy on the logits before post-HLP"
    partial = training_recipe({**args, "loss_on_annotated_classes": True, "annotated_classes": ["/m/0bt9lr", "/m/05tny_", "/m/0jbk"]})
    assert partial["Loss"] == (
        "binary cross-entropy on the logits before post-HLP, over the 3 classes the training labels annotate only "
        "(partial labels: every other class is unknown, not negative)"
    )


def test_manifest_from_load_audioset_with_audio_files(audioset_ontology, audioset_dir, tmp_path):
    """``load_audioset(..., audio_dir=...)`` -> read_manifest: the clips that have files, their real labels."""
    import warnings

    from hlp_audio import read_segments
    from hlp_audio import load_audioset

    segments = read_segments(audioset_dir / "eval_segments.csv", audioset_ontology)
    chosen = [5, 17, 1000]
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for row in chosen:
        sf.write(audio_dir / f"{segments.ytid[row].as_py()}.wav", np.zeros(1600, np.float32), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the clips without files are dropped, with a warning
        dataset = load_audioset(["eval"], audioset_dir=audioset_dir, audio_dir=audio_dir, ontology=audioset_ontology)
    manifest = read_manifest(dataset, audioset_ontology, split="eval")
    by_path = dict(zip(manifest.audio.to_pylist(), manifest.labels.to_pylist()))
    assert len(by_path) == 3
    for row in chosen:
        path = str(audio_dir / f"{segments.ytid[row].as_py()}.wav")
        assert by_path[path] == segments.labels[row].as_py()


def test_ap_change_plot_shows_new_positives_and_says_when_empty(tmp_path):
    from hlp_audio.training import plot_ap_change

    def row(name, receiving, ap, ap_hlp):
        return {"name": name, "receiving": receiving, "ap_post": ap, "ap_hlp_post": ap_hlp, "ap": ap, "ap_hlp": ap_hlp}

    rows = [row("Tone", True, 0.5, 0.7), row("Noise", True, None, 0.9), row("Buzz", False, 0.3, 0.3)]
    path, message = plot_ap_change(rows, True, tmp_path / "change.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AP change of 1 receiving class, and the AS-HLP AP of 1 that has positives only after propagation" in message
    nothing, why = plot_ap_change([row("Tone", True, None, None), row("Buzz", False, 0.3, 0.3)], False, tmp_path / "n.png")
    assert nothing is None and not (tmp_path / "n.png").exists()
    assert "none of the 1 classes that can receive propagated labels has a positive clip" in why


def test_display_names_with_commas_need_another_separator(audioset_ontology, tmp_path):
    path = _write_csv(tmp_path / "names.csv", 'audio,labels\na.wav,"Dog, Domestic animals, pets"\n')
    with pytest.raises(ManifestError, match=r"unknown label 'Domestic animals'.*another character, e.g. label_separator=';'"):
        read_manifest(path, audioset_ontology, label_format="names")
    semicolons = _write_csv(tmp_path / "semicolons.csv", 'audio,labels\na.wav,"Dog; Domestic animals, pets"\n')
    labels = read_manifest(semicolons, audioset_ontology, label_format="names", label_separator=";").labels.to_pylist()
    assert labels == [[audioset_ontology.index("Dog"), audioset_ontology.index("Domestic animals, pets")]]


def test_help_shows_each_default_once():
    from hlp_audio.training import build_train_parser

    text = build_train_parser().format_help()
    assert "(default: None)" not in text and text.count("(default: --clip-seconds)") == 1
    assert "(default: 1e-05)" in text  # --lr
