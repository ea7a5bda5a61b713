"""propagate_labels / propagate_scores against the max over the lookup table and the peer package."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from hlp_audio import HLPInputError, Ontology, load_segments, propagate_labels, propagate_scores


@pytest.fixture(scope="module")
def small():
    # root <- a <- a1, a2 ; root <- b ; amb has parents a and b (ambiguous) ; amb_child -> amb
    labels = ["root", "a", "a1", "a2", "b", "amb", "amb_child", "lonely"]
    parents = {"a": ["root"], "a1": ["a"], "a2": ["hidden"], "hidden": ["a"], "b": ["root"], "amb": ["a", "b"], "amb_child": ["amb"]}
    return Ontology.from_parents(labels, parents)


def reference_max(values, table):
    """max_i values[..., i] * L[i, j] written literally (N x C x C; small inputs only)."""
    values = np.asarray(values, dtype=np.float64)
    masked = np.where(table, values[..., :, None], -np.inf)
    return masked.max(axis=-2)


def reference_sets(rows, onto):
    table = onto.lookup_table()
    out = []
    for row in rows:
        added = sorted({j for i in row for j in np.flatnonzero(table[i])} - set(row))
        out.append(list(row) + added)
    return out


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int64, np.float32, np.float64])
def test_dense_numpy_labels_equal_the_lookup_table_max(small, dtype):
    rng = np.random.default_rng(0)
    y = (rng.random((64, len(small))) < 0.2).astype(dtype)
    out = propagate_labels(y, small)
    assert out.dtype == y.dtype and out.shape == y.shape
    np.testing.assert_array_equal(out.astype(np.float64), reference_max(y, small.lookup_table()))
    single = propagate_labels(y[3], small)
    np.testing.assert_array_equal(single, out[3])
    assert not np.shares_memory(out, y)


def test_soft_labels_and_logits(small):
    rng = np.random.default_rng(1)
    soft = rng.random((32, len(small))).astype(np.float32)
    np.testing.assert_allclose(propagate_labels(soft, small), reference_max(soft, small.lookup_table()))
    logits = rng.normal(-3, 2, size=(32, len(small)))  # mostly negative: must never be masked to 0
    post = propagate_scores(logits, small)
    np.testing.assert_array_equal(post, reference_max(logits, small.lookup_table()))
    assert (post >= logits).all()
    assert (post < 0).any()


def test_huge_finite_scores_are_not_mistaken_for_inf(small):
    # their sum overflows float32; every entry is finite, so this is valid input
    big = np.full((4, len(small)), 3e38, dtype=np.float32)
    big[0, 0] = -3e38
    np.testing.assert_array_equal(propagate_scores(big, small), reference_max(big, small.lookup_table()).astype(np.float32))
    assert torch.equal(propagate_scores(torch.from_numpy(big), small), torch.from_numpy(propagate_scores(big, small)))


def test_post_hlp_parents_never_below_unambiguous_children(small):
    logits = torch.randn(100, len(small))
    post = propagate_scores(logits, small)
    for child, parent in small.edges:
        assert (post[:, parent] >= post[:, child]).all()
    amb, a, b = small.index("amb"), small.index("a"), small.index("b")
    # an ambiguous child lifts none of its parents
    x = torch.full((1, len(small)), -5.0)
    x[0, amb] = 3.0
    out = propagate_scores(x, small)
    assert out[0, a] == -5.0 and out[0, b] == -5.0 and out[0, amb] == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_torch_scores_keep_dtype_and_are_out_of_place(small, dtype):
    logits = torch.randn(16, len(small)).to(dtype)
    before = logits.clone()
    post = propagate_scores(logits, small)
    assert post.dtype == dtype and post.device == logits.device
    assert torch.equal(logits, before)
    expected = reference_max(logits.float().numpy(), small.lookup_table())
    np.testing.assert_array_equal(post.float().numpy(), expected)


def test_gradients_flow_through_post_hlp(small):
    logits = torch.randn(8, len(small), requires_grad=True)
    post = propagate_scores(logits, small)
    post.sum().backward()
    assert logits.grad is not None
    # every output takes its value from exactly one input here (no ties): grads count uses
    assert logits.grad.sum().item() == pytest.approx(8 * len(small))


def test_torch_labels_bool_int_float(small):
    y = torch.rand(20, len(small)) < 0.3
    for tensor in (y, y.long(), y.float()):
        out = propagate_labels(tensor, small)
        assert out.dtype == tensor.dtype
        np.testing.assert_array_equal(out.double().numpy(), reference_max(tensor.double().numpy(), small.lookup_table()))


def test_index_lists_keep_order_and_append_ancestors(small):
    a1, a, root = small.index("a1"), small.index("a"), small.index("root")
    amb_child, amb = small.index("amb_child"), small.index("amb")
    assert propagate_labels([a1], small) == [a1, root, a]
    assert propagate_labels([[a1], [], [amb_child, root], [small.index("lonely")]], small) == [
        [a1, root, a],
        [],
        [amb_child, root, amb],
        [small.index("lonely")],
    ]


def test_arrow_list_arrays(small):
    rng = np.random.default_rng(2)
    rows = [sorted(rng.choice(len(small), size=rng.integers(0, 4), replace=False).tolist()) for _ in range(300)]
    expected = reference_sets(rows, small)
    array = pa.array(rows, pa.list_(pa.int32()))
    out = propagate_labels(array, small)
    assert out.type == array.type and out.to_pylist() == expected
    large = pa.array(rows, pa.large_list(pa.int64()))
    out = propagate_labels(large, small)
    assert isinstance(out, pa.LargeListArray) and out.to_pylist() == expected
    sliced = array.slice(17, 50)  # offsets that do not start at 0
    assert propagate_labels(sliced, small).to_pylist() == expected[17:67]
    chunked = pa.chunked_array([array.slice(0, 100), array.slice(100)])
    out = propagate_labels(chunked, small)
    assert isinstance(out, pa.ChunkedArray) and out.to_pylist() == expected
    with_nulls = pa.array([rows[0], None, rows[2]], pa.list_(pa.int32()))
    assert propagate_labels(with_nulls, small).to_pylist() == [expected[0], None, expected[2]]
    # Arrow lets a null row own values in the child array: they are neither checked nor propagated
    hidden = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), pa.array([2, 99, 1], pa.int32()), mask=pa.array([False, True, False]))
    assert propagate_labels(hidden, small).to_pylist() == [reference_sets([[2]], small)[0], None, reference_sets([[1]], small)[0]]
    empty = pa.array([], pa.list_(pa.int32()))
    assert propagate_labels(empty, small).to_pylist() == []
    assert propagate_labels(pa.array([[], []], pa.list_(pa.int32())), small).to_pylist() == [[], []]


def test_bad_input_gets_clear_errors(small):
    with pytest.raises(HLPInputError, match=r"C=8 classes.*shape \(4, 7\)"):
        propagate_labels(np.zeros((4, 7)), small)
    with pytest.raises(HLPInputError, match=r"shape \(2, 9\)"):
        propagate_scores(torch.zeros(2, 9), small)
    bad = np.zeros((3, 8))
    bad[1, 5] = np.nan
    with pytest.raises(HLPInputError, match=r"non-finite value nan at index \(1, 5\)"):
        propagate_scores(bad, small)
    with pytest.raises(HLPInputError, match="non-finite"):
        propagate_scores(torch.tensor([[float("inf")] * 8]), small)
    with pytest.raises(HLPInputError, match=r"row 1: class index 8 is outside \[0, 8\)"):
        propagate_labels([[0], [8]], small)
    with pytest.raises(HLPInputError, match=r"row 0: class index -1"):
        propagate_labels(pa.array([[-1]], pa.list_(pa.int32())), small)
    with pytest.raises(HLPInputError, match="row 0: multi-hot vector of length 2, expected 8"):
        propagate_labels([True, False], small)
    with pytest.raises(HLPInputError, match="row 0: unknown label 'zzz': not one of the 8 class ids"):
        propagate_labels([["zzz"]], small)
    with pytest.raises(HLPInputError, match="row 0: unknown label 'zzz'"):
        propagate_labels(pa.array([["zzz"]]), small)
    with pytest.raises(HLPInputError, match="row 0: a label is missing"):
        propagate_labels(pa.array([[1, None]], pa.list_(pa.int32())), small)
    with pytest.raises(HLPInputError, match="got str"):
        propagate_labels("dog", small)
    with pytest.raises(HLPInputError, match="numeric"):
        propagate_labels(np.array([["x"] * 8]), small)


# ---------------------------------------------------------------------------- real AudioSet
@pytest.fixture(scope="module")
def balanced(audioset_dir, audioset_ontology):
    return load_segments(["balanced_train"], audioset_ontology, audioset_dir=audioset_dir)["balanced_train"]


def test_real_split_arrow_equals_dense(balanced, audioset_ontology):
    onto = audioset_ontology
    out = propagate_labels(balanced.labels, onto)
    dense = np.zeros((len(balanced), len(onto)), dtype=bool)
    offsets = balanced.labels.offsets.to_numpy()
    rows = np.repeat(np.arange(len(balanced)), np.diff(offsets))
    dense[rows, balanced.labels.values.to_numpy()] = True
    dense_out = propagate_labels(dense, onto)
    arrow_dense = np.zeros_like(dense)
    offsets = out.offsets.to_numpy()
    arrow_dense[np.repeat(np.arange(len(out)), np.diff(offsets)), out.values.to_numpy()] = True
    np.testing.assert_array_equal(arrow_dense, dense_out)
    # the original labels come first, unchanged
    for i in (0, 1, 500, len(out) - 1):
        before = balanced.labels[i].as_py()
        assert out[i].as_py()[: len(before)] == before
    assert len(out.values) / len(out) == pytest.approx(3.416, abs=1e-3)


def test_identical_to_the_peer_package(balanced, audioset_ontology):
    peer = pytest.importorskip("hierarchical_label_propagation")
    hlp = peer.HLP()
    rng = np.random.default_rng(3)
    binary = torch.from_numpy(rng.random((256, 527)) < 0.01).float()
    assert torch.equal(propagate_labels(binary, audioset_ontology), hlp.propagate(binary))
    probabilities = torch.rand(256, 527)
    assert torch.equal(propagate_labels(probabilities, audioset_ontology), hlp.propagate(probabilities))


# ---------------------------------------------------------------------------- every label form, one normaliser
def test_python_lists_in_every_form(audioset_ontology):
    onto = audioset_ontology
    bark, dog = onto.index("/m/05tny_"), onto.index("/m/0bt9lr")
    expected = propagate_labels([bark], onto)
    assert dog in expected and expected[0] == bark
    assert propagate_labels([onto.labels[bark]], onto) == [onto.labels[i] for i in expected]  # mids stay mids
    names = propagate_labels([["Bark"], []], onto, label_format="names")
    assert names == [[onto.names[i] for i in expected], []]
    rows = propagate_labels([np.array([bark]), np.array([], dtype=np.int64)], onto)  # numpy rows stay numpy rows
    assert isinstance(rows[0], np.ndarray) and rows[0].tolist() == expected and rows[1].tolist() == []
    vector = [0.0] * len(onto)
    vector[bark] = 1.0
    hot = propagate_labels(vector, onto)  # floats: one multi-hot vector
    assert [i for i, value in enumerate(hot) if value] == sorted(expected)
    binary = [0] * len(onto)
    binary[bark] = 1
    assert propagate_labels(binary, onto, label_format="multi_hot") == [int(v) for v in hot]
    with pytest.raises(HLPInputError, match=r"row 0: 527 class indices with repeats.*label_format='multi_hot'"):
        propagate_labels(binary, onto)  # a 0/1 integer list is not silently read as the class indices 0 and 1
    with pytest.raises(HLPInputError, match=r"unknown label 'Bark'.*display name: pass label_format='names'"):
        propagate_labels(["Bark"], onto)
    with pytest.raises(HLPInputError, match=r"unknown label 'Dogg': not one of the 527 class display names"):
        propagate_labels(["Dogg"], onto, label_format="names")


def test_numpy_format_rows_with_an_empty_row(audioset_ontology):
    """``datasets``' numpy format gives string rows as arrays, and an empty row as a float64 array."""
    from hlp_audio import hlp_propagate

    onto = audioset_ontology
    batch = {"labels": [np.array(["/m/05tny_"], dtype=object), np.array([], dtype=np.float64)]}
    out = hlp_propagate(onto)(batch)["labels"]
    assert [list(row) for row in out] == [propagate_labels(["/m/05tny_"], onto), []]
