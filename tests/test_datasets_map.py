"""`hlp_propagate` for Dataset.map / IterableDataset.map, and `load_audioset`, on real AudioSet data.

The reference for every propagation is a naive per-row set union over the dense lookup table
(``Ontology.lookup_table()``), written here independently of the Arrow kernels.
"""

import csv
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, Features, LargeList, List, Value  # noqa: E402

from hlp_audio import HLPInputError, Ontology, load_segments, propagate_labels  # noqa: E402
from hlp_audio.audioset_dataset import AudioMatchError, MissingAudioWarning, find_audio_files, load_audioset  # noqa: E402
from hlp_audio.datasets_map import HLPPropagate, hlp_propagate  # noqa: E402
from hlp_audio.propagation import propagate_label_array  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_progress_bars():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


# ---------------------------------------------------------------------------- references
@pytest.fixture(scope="module")
def lookup(audioset_ontology):
    return audioset_ontology.lookup_table()


def reference_rows(rows, lookup):
    """Each row's labels, then every class reached through the lookup table, in class order."""
    out = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        reached = set(np.flatnonzero(lookup[list(row)].any(axis=0)).tolist()) if row else set()
        out.append(list(row) + sorted(reached - set(row)))
    return out


def reference_dense(dense, lookup):
    """max_i y[n, i] * L[i, j] by broadcasting (works for soft labels too)."""
    return (dense[:, :, None] * lookup[None].astype(dense.dtype)).max(axis=1)


@pytest.fixture(scope="module")
def eval_segments(audioset_ontology, audioset_dir):
    return load_segments(["eval"], audioset_ontology, audioset_dir=audioset_dir)["eval"]


@pytest.fixture(scope="module")
def rows(eval_segments):
    """600 real eval clips as lists of class indices."""
    return eval_segments.labels.slice(0, 600).to_pylist()


@pytest.fixture(scope="module")
def expected(rows, lookup):
    out = reference_rows(rows, lookup)
    assert sum(a != b for a, b in zip(rows, out)) > 100, "the sample must contain clips that HLP changes"
    return out


@pytest.fixture(scope="module")
def class_label_features(audioset_ontology):
    return Features({"id": Value("int64"), "labels": List(ClassLabel(names=list(audioset_ontology.names)))})


@pytest.fixture(scope="module")
def class_label_ds(rows, class_label_features):
    return Dataset.from_dict({"id": list(range(len(rows))), "labels": rows}, features=class_label_features)


def dense_of(rows, num_classes):
    dense = np.zeros((len(rows), num_classes), dtype=bool)
    for i, row in enumerate(rows):
        dense[i, row] = True
    return dense


# ---------------------------------------------------------------------------- class indices
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("output_column", [None, "hlp_labels"])
def test_class_label_lists(class_label_ds, rows, expected, audioset_ontology, batched, output_column):
    fn = hlp_propagate(audioset_ontology, output_column=output_column)
    out = class_label_ds.map(fn, batched=batched, batch_size=128)
    target = output_column or "labels"
    assert out[target] == expected
    assert out.features[target] == class_label_ds.features["labels"]  # ClassLabel names kept
    assert out.features[target].feature.names == list(audioset_ontology.names)
    if output_column:
        assert out["labels"] == rows
        assert out.column_names == ["id", "labels", "hlp_labels"]
    assert out["id"] == list(range(len(rows)))


@pytest.mark.parametrize("feature", [List(Value("int32")), LargeList(Value("int64")), List(Value("uint16"))])
def test_plain_integer_lists_keep_their_type(rows, expected, audioset_ontology, feature):
    ds = Dataset.from_dict({"labels": rows}, features=Features({"labels": feature}))
    out = ds.map(hlp_propagate(audioset_ontology, output_column="hlp"), batched=True, batch_size=100)
    assert out["hlp"] == expected
    assert out.features["hlp"] == feature
    assert out.data.column("hlp").type == ds.data.column("labels").type


@pytest.mark.parametrize("batched", [True, False])
def test_label_ids(rows, expected, audioset_ontology, batched):
    mids = audioset_ontology.labels
    ds = Dataset.from_dict({"labels": [[mids[i] for i in row] for row in rows]})
    out = ds.map(hlp_propagate(audioset_ontology), batched=batched, batch_size=97)
    assert out["labels"] == [[mids[i] for i in row] for row in expected]
    assert out.features["labels"] == List(Value("string"))


def test_propagate_label_array_matches_propagate_labels(eval_segments, audioset_ontology):
    labels = eval_segments.labels
    assert propagate_label_array(labels, audioset_ontology).equals(propagate_labels(labels, audioset_ontology))
    chunked = pa.chunked_array([labels.slice(0, 1000), labels.slice(1000, 5)])
    out = propagate_label_array(chunked, audioset_ontology)
    assert isinstance(out, pa.ChunkedArray) and out.to_pylist() == propagate_labels(labels.slice(0, 1005), audioset_ontology).to_pylist()


def test_null_rows_stay_null(rows, expected, audioset_ontology, lookup):
    with_nulls = [None if i % 7 == 3 else row for i, row in enumerate(rows[:50])]
    ds = Dataset.from_dict({"labels": with_nulls}, features=Features({"labels": List(Value("int64"))}))
    out = ds.map(hlp_propagate(audioset_ontology), batched=True)
    assert out["labels"] == [None if row is None else exp for row, exp in zip(with_nulls, expected[:50])]
    dense = dense_of(rows[:20], len(audioset_ontology))
    vectors = [None if i % 5 == 1 else row.tolist() for i, row in enumerate(dense)]
    for feature in (List(Value("bool")), List(Value("bool"), length=len(audioset_ontology))):
        ds = Dataset.from_dict({"y": vectors}, features=Features({"y": feature}))
        got = ds.map(hlp_propagate(audioset_ontology, "y"), batched=True)["y"]
        ref = reference_dense(dense, lookup)
        assert got == [None if v is None else ref[i].tolist() for i, v in enumerate(vectors)]


# ---------------------------------------------------------------------------- multi-hot vectors
@pytest.mark.parametrize(
    "dtype, fixed", [("bool", False), ("int8", False), ("int64", False), ("float32", True), ("float64", False), ("bool", True)]
)
@pytest.mark.parametrize("batched", [True, False])
def test_multi_hot_vectors(rows, audioset_ontology, lookup, dtype, fixed, batched):
    num_classes = len(audioset_ontology)
    dense = dense_of(rows[:120], num_classes).astype(dtype)
    feature = List(Value(dtype), length=num_classes if fixed else -1)
    ds = Dataset.from_dict({"y": dense.tolist()}, features=Features({"y": feature}))
    # integers in variable-length lists are class indices unless the column is declared multi-hot
    label_format = "multi_hot" if dtype.startswith("int") and not fixed else None
    out = ds.map(hlp_propagate(audioset_ontology, "y", "y_hlp", label_format=label_format), batched=batched, batch_size=50)
    got = np.array(out["y_hlp"])
    np.testing.assert_array_equal(got, reference_dense(dense, lookup))
    assert (got != dense).any()
    assert out.features["y_hlp"] == feature
    assert out["y"] == dense.tolist()


def test_soft_labels_take_the_max(audioset_ontology, lookup):
    rng = np.random.default_rng(0)
    num_classes = len(audioset_ontology)
    soft = (rng.random((40, num_classes)) * (rng.random((40, num_classes)) < 0.02)).astype(np.float32)
    ds = Dataset.from_dict({"y": soft.tolist()}, features=Features({"y": List(Value("float32"), length=num_classes)}))
    got = np.array(ds.map(hlp_propagate(audioset_ontology, "y"), batched=True)["y"], dtype=np.float32)
    np.testing.assert_array_equal(got, reference_dense(soft, lookup))
    assert (got > soft).any()


@pytest.mark.parametrize("batch_size", [1, 7, 30])
def test_integer_multi_hot_is_read_the_same_way_in_every_batch(rows, audioset_ontology, lookup, batch_size):
    """The form of an integer column is decided once (its type or label_format), never from a batch's values.

    A count of 2 in one row once made the whole batch read as class indices; now the same column gives the
    same rows whatever the batch size, and without label_format it is an error with a hint, not a silent
    misreading of vectors [0, 1, 0, ...] as class indices.
    """
    dense = dense_of(rows[:30], len(audioset_ontology)).astype(np.int64)
    dense[4, 10] = 2  # a count
    ds = Dataset.from_dict({"y": dense.tolist()})  # inferred as List(Value("int64"))
    got = np.array(ds.map(hlp_propagate(audioset_ontology, "y", label_format="multi_hot"), batched=True, batch_size=batch_size)["y"])
    np.testing.assert_array_equal(got, reference_dense(dense, lookup))
    with pytest.raises(HLPInputError, match="row 0 of this batch: 527 class indices with repeats.*label_format='multi_hot'"):
        ds.map(hlp_propagate(audioset_ontology, "y"), batched=True, batch_size=batch_size)


# ---------------------------------------------------------------------------- datasets machinery
def test_num_proc_2(class_label_ds, expected, audioset_ontology):
    small = class_label_ds.select(range(200))
    out = small.map(hlp_propagate(audioset_ontology, output_column="hlp_labels"), batched=True, batch_size=32, num_proc=2)
    assert out["hlp_labels"] == expected[:200]
    assert out.features["hlp_labels"] == class_label_ds.features["labels"]


def test_second_map_is_a_cache_hit(class_label_ds, expected, audioset_ontology, tmp_path, monkeypatch):
    class_label_ds.save_to_disk(str(tmp_path / "saved"))
    ds = datasets.load_from_disk(str(tmp_path / "saved"))
    first = ds.map(hlp_propagate(audioset_ontology, output_column="hlp_labels"), batched=True)
    cache_file = first.cache_files[0]["filename"]
    assert os.path.dirname(cache_file) == str(tmp_path / "saved") and os.path.exists(cache_file)

    def must_not_run(self, *args, **kwargs):
        raise AssertionError("the second map recomputed instead of loading the cache")

    monkeypatch.setattr(HLPPropagate, "__call__", must_not_run)
    fresh = hlp_propagate(Ontology.from_dict(audioset_ontology.to_dict()), output_column="hlp_labels")
    second = ds.map(fresh, batched=True)
    assert second.cache_files[0]["filename"] == cache_file
    assert second["hlp_labels"] == expected
    assert second.features == first.features


def test_fingerprint_is_stable_across_processes(audioset_ontology, tmp_path):
    from datasets.fingerprint import Hasher

    fn = hlp_propagate(audioset_ontology, output_column="hlp_labels")
    local = Hasher.hash(fn)
    fn(pa.table({"labels": pa.array([[72]], pa.list_(pa.int64()))}))  # caches built on use are not hashed
    assert Hasher.hash(fn) == local
    assert Hasher.hash(hlp_propagate(audioset_ontology)) != local
    assert Hasher.hash(hlp_propagate(audioset_ontology, output_column="hlp_labels", label_format="indices")) != local
    path = tmp_path / "ontology.json"
    audioset_ontology.to_json(path)
    code = (
        "import sys; from datasets.fingerprint import Hasher; from hlp_audio import Ontology; "
        "from hlp_audio import hlp_propagate; "
        "print(Hasher.hash(hlp_propagate(Ontology.from_json(sys.argv[1]), output_column='hlp_labels')))"
    )
    remote = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert remote.stdout.strip() == local


def test_pickle_round_trip(audioset_ontology, rows, expected):
    fn = hlp_propagate(audioset_ontology, "labels", "out", label_format="indices")
    clone = pickle.loads(pickle.dumps(fn))
    assert clone == fn and clone.ontology == audioset_ontology and clone.target_column == "out"
    assert clone({"labels": rows[:20]}) == {"out": expected[:20]}
    assert "527 classes" in repr(fn)


@pytest.mark.parametrize("batched", [True, False])
def test_iterable_dataset(class_label_ds, expected, audioset_ontology, batched):
    fn = hlp_propagate(audioset_ontology, output_column="hlp_labels")
    iterable = class_label_ds.to_iterable_dataset(num_shards=2)
    out = iterable.map(fn, batched=batched, batch_size=64, features=fn.output_features(class_label_ds.features))
    got = list(out)
    assert [row["hlp_labels"] for row in got] == expected
    assert [row["id"] for row in got] == list(range(len(expected)))
    assert out.features["hlp_labels"] == class_label_ds.features["labels"]


def test_iterable_dataset_arrow_format(class_label_ds, expected, audioset_ontology):
    iterable = class_label_ds.to_iterable_dataset(num_shards=1).with_format("arrow")
    out = iterable.map(hlp_propagate(audioset_ontology), batched=True, batch_size=100)
    tables = list(out.iter(batch_size=600))
    assert pa.concat_tables(tables).column("labels").to_pylist() == expected


@pytest.mark.parametrize("format_type", ["numpy", "torch"])
def test_numpy_and_torch_formats(class_label_ds, rows, expected, audioset_ontology, lookup, format_type):
    fn = hlp_propagate(audioset_ontology, output_column="hlp_labels")
    out = class_label_ds.with_format(format_type).map(fn, batched=True, batch_size=50, features=fn.output_features(class_label_ds.features))
    assert out.with_format(None)["hlp_labels"] == expected
    assert out.features["hlp_labels"] == class_label_ds.features["labels"]
    dense = dense_of(rows[:60], len(audioset_ontology))
    vectors = Dataset.from_dict({"y": dense.tolist()}, features=Features({"y": List(Value("bool"))}))
    for batched in (True, False):
        got = vectors.with_format(format_type).map(hlp_propagate(audioset_ontology, "y"), batched=batched)
        np.testing.assert_array_equal(np.array(got.with_format(None)["y"]), reference_dense(dense, lookup))


def test_python_inputs(audioset_ontology, rows, expected):
    fn = hlp_propagate(audioset_ontology)
    assert fn({"labels": rows[:10]}) == {"labels": expected[:10]}
    assert fn({"labels": rows[3]}) == {"labels": expected[3]}  # one example
    assert fn({"labels": []}) == {"labels": []}
    out = fn({"labels": np.array(rows[3])})["labels"]
    assert isinstance(out, np.ndarray) and out.tolist() == expected[3]


# ---------------------------------------------------------------------------- errors
def test_unknown_label_id_names_the_row(audioset_ontology):
    ds = Dataset.from_dict({"labels": [["/m/09x0r"], ["/m/09x0r", "/m/not_a_class"], []]})
    with pytest.raises(HLPInputError, match=r"column 'labels', row 1 of this batch: unknown label '/m/not_a_class'"):
        ds.map(hlp_propagate(audioset_ontology), batched=True)
    with pytest.raises(HLPInputError, match=r"row 1: unknown label '/m/not_a_class'"):
        ds.map(hlp_propagate(audioset_ontology), batched=True, batch_size=1, with_indices=True)
    names = Dataset.from_dict({"labels": [["Speech"], ["Dog", "Bark"]]})
    with pytest.raises(HLPInputError, match=r"row 0 of this batch: unknown label 'Speech'.*display name: pass label_format='names'"):
        names.map(hlp_propagate(audioset_ontology))
    got = names.map(hlp_propagate(audioset_ontology, label_format="names"), batched=True)["labels"]
    assert got[1][:2] == ["Dog", "Bark"] and "Animal" in got[1] and "Domestic animals, pets" in got[1]
    with pytest.raises(HLPInputError, match=r"unknown label '/m/09x0r'.*class id: pass label_format='ids'"):
        ds.map(hlp_propagate(audioset_ontology, label_format="names"), batched=True)


def test_errors_name_the_dataset_row_with_indices(audioset_ontology):
    ds = Dataset.from_dict({"labels": [[0]] * 10 + [[1, 527]]}, features=Features({"labels": List(Value("int64"))}))
    with pytest.raises(HLPInputError, match=r"row 2 of this batch: class index 527 is outside \[0, 527\)"):
        ds.map(hlp_propagate(audioset_ontology), batched=True, batch_size=4)
    with pytest.raises(HLPInputError, match=r"column 'labels', row 10: class index 527"):
        ds.map(hlp_propagate(audioset_ontology), batched=True, batch_size=4, with_indices=True)
    with pytest.raises(HLPInputError, match=r"row 10: class index 527"):
        ds.map(hlp_propagate(audioset_ontology), with_indices=True)
    negative = Dataset.from_dict({"labels": [[0], [-1]]}, features=Features({"labels": List(Value("int64"))}))
    with pytest.raises(HLPInputError, match="class index -1"):
        negative.map(hlp_propagate(audioset_ontology), batched=True)


@pytest.mark.parametrize("fixed", [False, True])
def test_multi_hot_of_the_wrong_length(audioset_ontology, fixed):
    width = len(audioset_ontology) - 1
    vectors = [[False] * width] * 4
    ds = Dataset.from_dict({"y": vectors}, features=Features({"y": List(Value("bool"), length=width if fixed else -1)}))
    with pytest.raises(HLPInputError, match=r"column 'y', row 0 of this batch: multi-hot vector of length 526, expected 527"):
        ds.map(hlp_propagate(audioset_ontology, "y"), batched=True)
    mixed = Dataset.from_dict({"y": [[0] * 527, [0] * 527, [0, 1, 0, 1]]})
    with pytest.raises(HLPInputError, match=r"row 2 of this batch: multi-hot vector of length 4"):
        mixed.map(hlp_propagate(audioset_ontology, "y", label_format="multi_hot"), batched=True)


def test_non_finite_and_null_values(audioset_ontology):
    vectors = np.zeros((3, 527), dtype=np.float32)
    vectors[2, 5] = np.nan
    ds = Dataset.from_dict({"y": vectors.tolist()}, features=Features({"y": List(Value("float32"))}))
    with pytest.raises(HLPInputError, match=r"row 2 of this batch: multi-hot value nan for class 5 is not finite"):
        ds.map(hlp_propagate(audioset_ontology, "y"), batched=True)
    nulls = Dataset.from_dict({"labels": [[1], [2, None]]}, features=Features({"labels": List(Value("int64"))}))
    with pytest.raises(HLPInputError, match=r"row 1 of this batch: a label is missing \(null\)"):
        nulls.map(hlp_propagate(audioset_ontology), batched=True)


def test_class_labels_in_another_order_are_mapped_through_their_names(audioset_ontology, rows, expected):
    names = list(audioset_ontology.names)
    order = np.random.default_rng(3).permutation(len(names))  # dataset class k is ontology class order[k]
    shuffled = [names[i] for i in order]
    position = np.argsort(order)  # ontology class -> dataset class
    to_dataset = [[int(position[i]) for i in row] for row in rows[:100]]
    ds = Dataset.from_dict({"labels": to_dataset}, features=Features({"labels": List(ClassLabel(names=shuffled))}))
    out = ds.map(hlp_propagate(audioset_ontology), batched=True, batch_size=33)
    assert [[int(order[k]) for k in row] for row in out["labels"]] == expected[:100]
    assert out.features["labels"].feature.names == shuffled
    short = Dataset.from_dict({"labels": [[0]]}, features=Features({"labels": List(ClassLabel(names=names[:10]))}))
    with pytest.raises(HLPInputError, match="the ClassLabel has no class for .* which HLP can add"):
        short.map(hlp_propagate(audioset_ontology), batched=True)
    unknown = Dataset.from_dict({"labels": [[0]]}, features=Features({"labels": List(ClassLabel(names=["Speech", "Zorb"]))}))
    with pytest.raises(HLPInputError, match="ClassLabel class 1 is 'Zorb', neither a class id nor a display name"):
        unknown.map(hlp_propagate(audioset_ontology), batched=True)
    mids = Dataset.from_dict({"labels": [[0, 1]]}, features=Features({"labels": List(ClassLabel(names=list(audioset_ontology.labels)))}))
    assert mids.map(hlp_propagate(audioset_ontology), batched=True)["labels"] == [[0, 1]]


def test_bad_arguments_and_columns(audioset_ontology):
    ds = Dataset.from_dict({"labels": [[True, False]], "text": ["a"]})
    with pytest.raises(KeyError, match="column 'missing' not found"):
        ds.map(hlp_propagate(audioset_ontology, "missing"), batched=True)
    with pytest.raises(ValueError, match="label_format must be one of"):
        hlp_propagate(audioset_ontology, label_format="dense")
    with pytest.raises(HLPInputError, match="label_format='indices' needs class indices"):
        Dataset.from_dict({"y": [[0.0] * 527]}).map(hlp_propagate(audioset_ontology, "y", label_format="indices"), batched=True)
    with pytest.raises(HLPInputError, match="must be a list column"):
        ds.map(hlp_propagate(audioset_ontology, "text"), batched=True)
    fixed = Dataset.from_dict({"labels": [[0, 1]]}, features=Features({"labels": List(ClassLabel(names=list(audioset_ontology.names)), length=2)}))
    with pytest.raises(HLPInputError, match="fixed-length list"):
        fixed.map(hlp_propagate(audioset_ontology), batched=True)
    with pytest.raises(TypeError, match="do not pass input_columns"):
        ds.map(hlp_propagate(audioset_ontology), input_columns="labels")
    with pytest.raises(TypeError, match="hlp_audio.Ontology"):
        hlp_propagate(["not", "an", "ontology"])


def test_one_function_on_tables_of_different_schemas_reads_each_schema(audioset_ontology):
    """What the schema metadata says of the column (a ClassLabel or not) is cached with that metadata, never
    carried over from the table seen last."""
    fn = hlp_propagate(audioset_ontology)
    features = Features({"labels": List(ClassLabel(names=list(audioset_ontology.names)), length=2)})
    class_labels = Dataset.from_dict({"labels": [[0, 1]]}, features=features).data.table
    plain = pa.table({"labels": pa.array([[0, 1]], pa.list_(pa.int64(), 2))})
    for table in (class_labels, plain, class_labels):
        # ClassLabel values are class indices (a fixed-length list cannot grow); plain fixed-length integers multi-hot
        message = "fixed-length list" if table is class_labels else "multi-hot vector of length 2"
        with pytest.raises(HLPInputError, match=message):
            fn(table)


# ---------------------------------------------------------------------------- load_audioset
def _header_counts(path):
    with open(path) as handle:
        header = handle.readlines()[1]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", header)}


def test_load_audioset_small_splits(audioset_dir, audioset_ontology, lookup):
    splits = load_audioset(["balanced_train", "eval"], audioset_dir=audioset_dir, hlp=True)
    with open(audioset_dir / "class_labels_indices.csv", newline="") as handle:
        names = [row["display_name"] for row in csv.DictReader(handle)]
    labels = List(ClassLabel(names=names))
    expected_features = Features(
        {"ytid": Value("string"), "start_seconds": Value("float64"), "end_seconds": Value("float64"), "labels": labels, "hlp_labels": labels}
    )
    assert list(splits) == ["balanced_train", "eval"]
    for split, file_name in (("balanced_train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        ds = splits[split]
        counts = _header_counts(audioset_dir / file_name)
        assert ds.features == expected_features and ds.split == split
        assert len(ds) == counts["num_segs"]
        table = ds.data
        assert len(table.column("labels").combine_chunks().values) == counts["num_positive_labels"]
        with open(audioset_dir / file_name) as handle:
            first = handle.readlines()[3].rstrip("\n").split(", ", 3)
        row = ds[0]
        assert [row["ytid"], row["start_seconds"], row["end_seconds"]] == [first[0], float(first[1]), float(first[2])]
        assert [audioset_ontology.labels[i] for i in row["labels"]] == first[3].strip('"').split(",")
        assert table.column("hlp_labels").equals(propagate_labels(table.column("labels"), audioset_ontology))
        assert ds["hlp_labels"][:300] == reference_rows(ds["labels"][:300], lookup)
    assert "CC BY 4.0" in splits["eval"].info.license


def test_load_audioset_unknown_split(audioset_dir):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_audioset("test", audioset_dir=audioset_dir)
    with pytest.raises(ValueError, match="missing must be"):
        load_audioset("eval", audioset_dir=audioset_dir, missing="ignore")


@pytest.fixture
def audio_dir(tmp_path, eval_segments):
    ytids = eval_segments.ytid.slice(0, 6).to_pylist()
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for name in (
        f"{ytids[0]}.wav",
        f"{ytids[1]}_30.000_40.000.flac",
        f"sub/{ytids[2]}.ogg",
        f"{ytids[3]}.mp3",
        f"{ytids[3]}.wav",  # same clip, two formats: wav is preferred
        f"{ytids[4]}X.wav",  # a 12-character id: not this clip
        f"{ytids[5]}.txt",  # not audio
        "notes.wav",
    ):
        (folder / name).write_bytes(b"")
    return folder, ytids


def test_load_audioset_with_audio_dir(audioset_dir, audio_dir):
    folder, ytids = audio_dir
    with pytest.warns(MissingAudioWarning, match=rf"20367 of 20371 clips of split 'eval' have no audio file .*first: {re.escape(ytids[4])}, {re.escape(ytids[5])}"):
        ds = load_audioset("eval", audioset_dir=audioset_dir, audio_dir=folder)["eval"]
    assert ds["ytid"] == ytids[:4]
    assert ds["audio"] == [
        str(folder / f"{ytids[0]}.wav"),
        str(folder / f"{ytids[1]}_30.000_40.000.flac"),
        str(folder / "sub" / f"{ytids[2]}.ogg"),
        str(folder / f"{ytids[3]}.wav"),
    ]
    assert ds.features["audio"] == Value("string")
    assert "20367 of 20371 clips" in ds.info.description and "dropped" in ds.info.description

    with pytest.warns(MissingAudioWarning, match="kept with audio=None"):
        kept = load_audioset("eval", audioset_dir=audioset_dir, audio_dir=folder, missing="keep")["eval"]
    assert len(kept) == 20371 and list(kept["audio"][:6]) == list(ds["audio"]) + [None, None]
    with pytest.raises(AudioMatchError, match="20367 of 20371 clips"):
        load_audioset("eval", audioset_dir=audioset_dir, audio_dir=folder, missing="raise")


def test_ambiguous_or_absent_audio_files(audioset_dir, audio_dir, tmp_path):
    folder, ytids = audio_dir
    (folder / f"{ytids[0]}_other_cut.wav").write_bytes(b"")
    with pytest.raises(AudioMatchError, match=rf"clip {re.escape(ytids[0])} matches 2 different audio files"):
        find_audio_files(ytids, folder)
    assert find_audio_files(ytids[1:3], folder).to_pylist() == [
        str(folder / f"{ytids[1]}_30.000_40.000.flac"),
        str(folder / "sub" / f"{ytids[2]}.ogg"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ("Y" + ytids[0] + ".wav")).write_bytes(b"")  # a "Y" prefix hides the id
    with pytest.raises(AudioMatchError, match="no audio file in"), pytest.warns(MissingAudioWarning, match="1 audio files .* are not named"):
        load_audioset("eval", audioset_dir=audioset_dir, audio_dir=empty)
    with pytest.raises(AudioMatchError, match="is not a directory"):
        find_audio_files(ytids, tmp_path / "nowhere")


# ---------------------------------------------------------------------------- all of AudioSet (slow)
@pytest.fixture(scope="module")
def all_audioset(audioset_dir, audioset_ontology):
    return load_audioset(audioset_dir=audioset_dir, hlp=True, ontology=audioset_ontology)


@pytest.mark.slow
def test_all_splits_against_the_paper(all_audioset, audioset_dir):
    counts = {split: len(ds) for split, ds in all_audioset.items()}
    assert counts == {"balanced_train": 22160, "eval": 20371, "unbalanced_train": 2041789}
    table = pa.concat_tables([ds.data.table for ds in all_audioset.values()])
    before = len(table.column("labels").combine_chunks().values) / table.num_rows
    after = len(table.column("hlp_labels").combine_chunks().values) / table.num_rows
    # Tuncay et al. (ICASSP 2025): 2,084,320 clips, 1.98 -> 2.39 labels per clip.
    assert table.num_rows == 2_084_320
    assert round(before, 2) == 1.98 and round(after, 2) == 2.39


@pytest.mark.slow
def test_map_on_all_splits_equals_propagate_labels(all_audioset, audioset_ontology):
    full = datasets.concatenate_datasets(list(all_audioset.values()))
    out = full.map(hlp_propagate(audioset_ontology, output_column="mapped"), batched=True, batch_size=200_000, keep_in_memory=True)
    assert out.features["mapped"] == full.features["labels"]
    mapped = out.data.column("mapped").combine_chunks()
    assert mapped.equals(full.data.column("hlp_labels").combine_chunks())
    assert mapped.equals(propagate_labels(full.data.column("labels").combine_chunks(), audioset_ontology))


def test_integer_rows_that_fit_both_readings_follow_the_declared_form():
    # With two classes, [0, 1] is the multi-hot vector "p" or the class-index list "c and p": integer lists
    # are class indices unless label_format says multi-hot.
    two = Ontology.from_parents(["p", "c"], {"c": ["p"]})
    ds = Dataset.from_dict({"y": [[0, 1], [1, 0]]})
    assert ds.map(hlp_propagate(two, "y"), batched=True)["y"] == [[0, 1], [1, 0]]
    as_multi_hot = ds.map(hlp_propagate(two, "y", label_format="multi_hot"), batched=True)["y"]
    assert as_multi_hot == [[1, 1], [1, 0]]  # c (index 1) raises p (index 0)
    as_indices = ds.map(hlp_propagate(two, "y", label_format="indices"), batched=True)["y"]
    assert as_indices == [[0, 1], [1, 0]]  # both classes already present
