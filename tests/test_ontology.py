"""The HLP rule on hand-made hierarchies and on the real AudioSet ontology."""

import json

import numpy as np
import pytest

from hlp_audio import Ontology, OntologyError


def table_as_sets(onto):
    """{label: set of labels it propagates to} from the lookup table (diagonal excluded)."""
    table = onto.lookup_table()
    return {
        onto.labels[i]: {onto.labels[j] for j in np.flatnonzero(table[i]) if j != i} for i in range(len(onto))
    }


def test_chain_is_transitive():
    onto = Ontology.from_parents(["a", "b", "c", "d"], {"d": ["c"], "c": ["b"], "b": ["a"]})
    assert table_as_sets(onto) == {"a": set(), "b": {"a"}, "c": {"b", "a"}, "d": {"c", "b", "a"}}
    assert onto.edges.tolist() == [[1, 0], [2, 1], [3, 2]]
    assert onto.ancestors("d") == [2, 1, 0]
    assert onto.lookup_table().diagonal().all()


def test_pass_through_non_label_nodes_are_contracted():
    # animal <- (domestic: not a label, flagged abstract in AudioSet) <- dog
    onto = Ontology.from_parents(["animal", "dog"], {"dog": ["domestic"], "domestic": ["animal"]})
    assert onto.labelled_parents == ((), (0,))
    assert table_as_sets(onto) == {"animal": set(), "dog": {"animal"}}
    # two transparent levels
    onto = Ontology.from_parents(["top", "leaf"], {"leaf": ["x"], "x": ["y"], "y": ["top"]})
    assert table_as_sets(onto)["leaf"] == {"top"}


def test_growling_like_node_is_ambiguous_and_propagates_nothing():
    labels = ["animal", "dog", "cat", "growling"]
    parents = {"dog": ["animal"], "cat": ["animal"], "growling": ["dog", "cat"]}
    onto = Ontology.from_parents(labels, parents)
    sets = table_as_sets(onto)
    assert sets["growling"] == set()  # not even to the common ancestor "animal"
    assert sets["dog"] == {"animal"} and sets["cat"] == {"animal"}
    assert onto.ambiguous.tolist() == [3]
    assert onto.receiving.tolist() == [0]


def test_propagation_stops_at_an_ambiguous_node():
    # leaf -> mid (unique) ; mid has two labelled parents p1, p2 ; p1 -> root
    labels = ["root", "p1", "p2", "mid", "leaf"]
    parents = {"p1": ["root"], "mid": ["p1", "p2"], "leaf": ["mid"]}
    onto = Ontology.from_parents(labels, parents)
    sets = table_as_sets(onto)
    assert sets["leaf"] == {"mid"}
    assert sets["mid"] == set()
    assert sets["p1"] == {"root"}


def test_parents_outside_the_label_set_do_not_count():
    # "b" has a labelled parent and a non-label parent with no labelled ancestor: still unique
    onto = Ontology.from_parents(["a", "b"], {"b": ["a", "orphan"], "orphan": []})
    assert table_as_sets(onto)["b"] == {"a"}
    # two transparent routes to the same labelled parent count once
    onto = Ontology.from_parents(["a", "b"], {"b": ["x", "y"], "x": ["a"], "y": ["a"]})
    assert onto.labelled_parents[1] == (0,)
    assert table_as_sets(onto)["b"] == {"a"}
    # two transparent routes to different labelled parents: ambiguous
    onto = Ontology.from_parents(["a", "c", "b"], {"b": ["x", "y"], "x": ["a"], "y": ["c"]})
    assert onto.ambiguous.tolist() == [2]


def test_dict_round_trip_is_exact_and_json_safe():
    onto = Ontology.from_parents(["a", "b", "c"], {"b": ["a"], "c": ["a", "b"]}, names=["A", "B", "C"])
    data = json.loads(json.dumps(onto.to_dict()))
    again = Ontology.from_dict(data)
    assert again == onto
    assert again.names == ("A", "B", "C")
    assert (again.lookup_table() == onto.lookup_table()).all()


@pytest.mark.parametrize(
    "labels, parents, message",
    [
        (["a", "a"], {}, "duplicate label ids"),
        (["a", "b"], {"a": ["b"], "b": ["a"]}, "cycle"),
        (["a"], {"a": ["a"]}, "cycle"),
        (["a", "b"], {"a": ["x"], "x": ["y"], "y": ["x"]}, "cycle"),
        (["a", "b"], {"a": "b"}, "must be a list"),
    ],
)
def test_malformed_hierarchies_are_rejected(labels, parents, message):
    with pytest.raises(OntologyError, match=message):
        Ontology.from_parents(labels, parents)


def test_malformed_dicts_are_rejected():
    with pytest.raises(OntologyError, match="lacks"):
        Ontology.from_dict({"labels": ["a"]})
    with pytest.raises(OntologyError, match="outside"):
        Ontology.from_dict({"labels": ["a"], "parents": [[3]]})
    with pytest.raises(OntologyError, match="format"):
        Ontology.from_dict({"format": "other/9", "labels": [], "parents": []})
    with pytest.raises(OntologyError, match="own parent"):
        Ontology.from_dict({"labels": ["a"], "parents": [[0]]})
    with pytest.raises(OntologyError, match=r"class 1 \('b'\) has parent 0.7, not a class index"):
        Ontology.from_dict({"labels": ["a", "b"], "parents": [[], [0.7]]})
    with pytest.raises(OntologyError, match=r"the parents of class 1 \('b'\) must be a list of class indices, got '01'"):
        Ontology.from_dict({"labels": ["a", "b"], "parents": [[], "01"]})
    with pytest.raises(OntologyError, match=r"the parents of class 0 \('a'\) must be a list of class indices, got None"):
        Ontology.from_dict({"labels": ["a", "b"], "parents": [None, []]})
    with pytest.raises(OntologyError, match="has parent True"):
        Ontology.from_dict({"labels": ["a", "b"], "parents": [[], [True]]})


def test_a_mistyped_parent_id_is_an_error_not_a_vanishing_edge():
    with pytest.raises(OntologyError, match=r"'dog' has parent 'animl', which is neither a label nor a node"):
        Ontology.from_parents(["animal", "dog"], {"dog": ["animl"]})
    declared = Ontology.from_parents(["animal", "dog"], {"dog": ["pets"], "pets": []})  # a declared non-label root
    assert declared.labelled_parents == ((), ())


def test_long_chains_of_non_label_nodes_do_not_exhaust_the_recursion_limit():
    depth = 5000
    parents = {"leaf": ["n0"], **{f"n{i}": [f"n{i + 1}"] for i in range(depth)}, f"n{depth}": ["root"]}
    onto = Ontology.from_parents(["root", "leaf"], parents)
    assert onto.labelled_parents == ((), (0,))
    cyclic = {"leaf": ["n0"], **{f"n{i}": [f"n{i + 1}"] for i in range(depth)}, f"n{depth}": ["n0"]}
    with pytest.raises(OntologyError, match="cycle"):
        Ontology.from_parents(["root", "leaf"], cyclic)


def test_unknown_label_lookup_names_the_label(audioset_ontology):
    with pytest.raises(KeyError, match="/m/not-a-mid"):
        audioset_ontology.index("/m/not-a-mid")
    assert audioset_ontology.index("Dog") == audioset_ontology.index("/m/0bt9lr")


# ---------------------------------------------------------------------------- real AudioSet
def _reference_rule(audioset_dir):
    """An independent, literal reading of the rule in DESIGN.md (recursion, Python sets)."""
    nodes = json.loads((audioset_dir / "ontology.json").read_text())
    parents = {n["id"]: [] for n in nodes}
    for n in nodes:
        for c in n["child_ids"]:
            parents[c].append(n["id"])
    lines = (audioset_dir / "class_labels_indices.csv").read_text().splitlines()[1:]
    mids = [line.split(",")[1] for line in lines]
    labelled = set(mids)

    def labelled_parents(node):
        out = set()
        for p in parents[node]:
            out |= {p} if p in labelled else labelled_parents(p)
        return out

    unique = {m: next(iter(lp)) for m in mids if len(lp := labelled_parents(m)) == 1}
    table = np.eye(len(mids), dtype=bool)
    index = {m: i for i, m in enumerate(mids)}
    for m in mids:
        node = m
        while node in unique:
            node = unique[node]
            table[index[m], index[node]] = True
    return mids, table


def test_real_audioset_matches_an_independent_reading_of_the_rule(audioset_dir, audioset_ontology):
    mids, table = _reference_rule(audioset_dir)
    assert list(audioset_ontology.labels) == mids
    assert (audioset_ontology.lookup_table() == table).all()


def test_real_audioset_matches_the_peer_package_lookup_table(audioset_ontology):
    peer = pytest.importorskip("hierarchical_label_propagation")
    peer_table = peer.HLP().HLP_lookup_table.numpy().astype(bool)
    assert (audioset_ontology.lookup_table() == peer_table).all()


def test_real_audioset_structure(audioset_ontology):
    onto = audioset_ontology
    assert len(onto) == 527
    assert len(onto.receiving) == 109  # the paper's 109 classes
    growling = onto.index("/m/0ghcn6")
    assert growling in onto.ambiguous
    assert sorted(onto.names[p] for p in onto.labelled_parents[growling]) == sorted(
        ["Dog", "Cat", "Roaring cats (lions, tigers)", "Canidae, dogs, wolves"]
    )
    assert not onto.lookup_table()[growling].sum() - 1  # only the diagonal
    # Dog -> Domestic animals, pets -> Animal (through a unique chain)
    dog = onto.index("Dog")
    assert [onto.names[a] for a in onto.ancestors(dog)] == ["Domestic animals, pets", "Animal"]
    # blacklisted labelled classes are ordinary classes (e.g. Song has a parent)
    assert onto.index("Song") in onto.propagating
    assert Ontology.from_dict(onto.to_dict()) == onto
    assert onto.id2label[0] == "Speech" and onto.label2id["/m/09x0r"] == 0


def test_audioset_files_with_problems_get_clear_errors(tmp_path, audioset_dir):
    good_csv = (audioset_dir / "class_labels_indices.csv").read_text()
    onto_text = (audioset_dir / "ontology.json").read_text()

    (tmp_path / "bad.json").write_text(onto_text[:1000])
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON at line"):
        Ontology.from_audioset(tmp_path / "bad.json", audioset_dir / "class_labels_indices.csv")

    nodes = json.loads(onto_text)
    nodes.append(dict(nodes[0]))
    (tmp_path / "dup.json").write_text(json.dumps(nodes))
    with pytest.raises(ValueError, match="duplicate node id '/m/0dgw9r'"):
        Ontology.from_audioset(tmp_path / "dup.json", audioset_dir / "class_labels_indices.csv")

    nodes = json.loads(onto_text)
    nodes[0]["child_ids"] = nodes[0]["child_ids"] + ["/m/nowhere"]
    (tmp_path / "dangling.json").write_text(json.dumps(nodes))
    with pytest.raises(OntologyError, match="lists child '/m/nowhere'"):
        Ontology.from_audioset(tmp_path / "dangling.json", audioset_dir / "class_labels_indices.csv")

    (tmp_path / "labels.csv").write_text(good_csv + '527,/m/missing,"Not in ontology"\n')
    with pytest.raises(OntologyError, match=r"labels\.csv, line 529: label '/m/missing' is not in the ontology"):
        Ontology.from_audioset(audioset_dir / "ontology.json", tmp_path / "labels.csv")

    (tmp_path / "gap.csv").write_text(good_csv.replace("\n1,/m/05zppz,", "\n7,/m/05zppz,"))
    with pytest.raises(ValueError, match=r"gap\.csv, line 3: index '7' out of sequence"):
        Ontology.from_audioset(audioset_dir / "ontology.json", tmp_path / "gap.csv")

    (tmp_path / "repeat.csv").write_text(good_csv + '527,/m/09x0r,"Speech again"\n')
    with pytest.raises(ValueError, match=r"line 529: label '/m/09x0r' repeats line 2"):
        Ontology.from_audioset(audioset_dir / "ontology.json", tmp_path / "repeat.csv")

    # a cycle through the raw ontology
    nodes = json.loads(onto_text)
    by_id = {n["id"]: n for n in nodes}
    speech = by_id["/m/09x0r"]
    speech["child_ids"] = speech["child_ids"] + ["/m/0dgw9r"]  # Human sounds under its own child
    (tmp_path / "cycle.json").write_text(json.dumps(nodes))
    with pytest.raises(OntologyError, match="cycle"):
        Ontology.from_audioset(tmp_path / "cycle.json", audioset_dir / "class_labels_indices.csv")
