"""The label hierarchy and the exact HLP rule.

Nodes are the labelled classes only, in index order. Ontology nodes that are not labels are
transparent: edges are contracted through them, whatever their ``restrictions`` flags. A class
propagates to its labelled parent only when it has exactly one; the lookup table is the closure
along chains of unique parents (see ``DESIGN.md``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .audioset import read_class_labels, read_ontology_json, resolve_file
from .labels import LabelEncoder
from .modeling.hierarchy_ops import (
    ONTOLOGY_FORMAT,
    AncestorBitsets,
    AncestorMax,
    ancestor_pairs,
    check_hierarchy,
    check_ontology_dict,
    unique_parent_array,
)

__all__ = ["Ontology", "OntologyError"]

PathLike = Union[str, "os.PathLike[str]"]

DICT_FORMAT = ONTOLOGY_FORMAT


class OntologyError(ValueError):
    """A malformed hierarchy: unknown or duplicate ids, cycles, bad files."""


class Ontology:
    """A set of labelled classes (index order) and, for each, its labelled parents.

    Build one with :meth:`from_audioset`, :meth:`from_parents` or :meth:`from_dict`.

    >>> onto = Ontology.from_parents(["dog", "animal"], {"dog": ["animal"]})
    >>> onto.lookup_table().astype(int).tolist()
    [[1, 1], [0, 1]]
    """

    def __init__(
        self,
        labels: Sequence[str],
        labelled_parents: Sequence[Sequence[int]],
        names: Optional[Sequence[str]] = None,
    ):
        try:
            labels, names, parents = check_hierarchy(labels, labelled_parents, names)
        except ValueError as err:
            raise OntologyError(str(err)) from None
        self._labels: Tuple[str, ...] = labels
        self._names: Tuple[str, ...] = names
        self._labelled_parents: Tuple[Tuple[int, ...], ...] = parents
        self._label_to_index: Dict[str, int] = {label: i for i, label in enumerate(labels)}
        self._descendant, self._ancestor = ancestor_pairs(self.unique_parent)  # acyclic: checked above

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_parents(
        cls,
        labels: Sequence[str],
        parents: Mapping,
        names: Optional[Union[Sequence[str], Mapping]] = None,
    ) -> "Ontology":
        """Build from any hierarchy given as ``child id -> parent ids``.

        ``labels`` are the class ids in index order. ``parents`` may mention ids that are not
        labels (they are transparent: their own parents are looked through), which must then be keys
        of ``parents`` themselves (with an empty list for a root): a parent id that is neither a label
        nor a key is an error, not a silently vanishing edge. ``parents`` may omit labels that have
        no parent. ``names`` is a list in label order or a mapping id -> name.
        """
        labels = [str(label) for label in labels]
        parent_map: Dict[str, Tuple[str, ...]] = {}
        for child, row in parents.items():
            if isinstance(row, (str, bytes)):
                raise OntologyError(
                    f"parents of {child!r} must be a list of ids, got the string {row!r}"
                )
            parent_map[str(child)] = tuple(str(p) for p in row)
        label_set = set(labels)
        if len(label_set) != len(labels):
            cls(labels, [()] * len(labels))  # raises the OntologyError that names the duplicates
        contracted = _contract(labels, label_set, parent_map)
        index = {label: i for i, label in enumerate(labels)}
        labelled_parents = [[index[p] for p in contracted[label]] for label in labels]
        if isinstance(names, Mapping):
            names = [str(names.get(label, label)) for label in labels]
        return cls(labels, labelled_parents, names)

    @classmethod
    def from_audioset(
        cls,
        ontology_json: Optional[PathLike] = None,
        class_labels_csv: Optional[PathLike] = None,
        *,
        audioset_dir: Optional[PathLike] = None,
        verify: bool = True,
    ) -> "Ontology":
        """The 527 AudioSet classes (order of ``class_labels_indices.csv``) and their hierarchy.

        Files are found as in :func:`hlp_audio.audioset.resolve_file`: explicit paths, then
        ``audioset_dir``, then ``$HLP_AUDIOSET_DIR``, then a verified download into the cache; the
        official files are checked against their pinned sha256 (``verify=False`` reads edited copies).
        """
        ontology_path = resolve_file("ontology.json", ontology_json, audioset_dir=audioset_dir)
        labels_path = resolve_file("class_labels_indices.csv", class_labels_csv, audioset_dir=audioset_dir)
        nodes = read_ontology_json(ontology_path, verify=verify)
        mids, names, lines = read_class_labels(labels_path, verify=verify)
        parents: Dict[str, List[str]] = {node_id: [] for node_id in nodes}
        for node_id, node in nodes.items():
            for child in node["child_ids"]:
                if child not in nodes:
                    raise OntologyError(
                        f"{ontology_path}: node {node_id!r} ({node['name']!r}) lists child "
                        f"{child!r}, which is not in the ontology"
                    )
                parents[child].append(node_id)
        for mid, line in zip(mids, lines):
            if mid not in nodes:
                raise OntologyError(
                    f"{labels_path}, line {line}: label {mid!r} is not in the ontology {ontology_path}"
                )
        return cls.from_parents(mids, parents, names)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """Compact JSON-safe form: labels, names and labelled parents (class indices)."""
        return {
            "format": DICT_FORMAT,
            "labels": list(self._labels),
            "names": list(self._names),
            "parents": [list(row) for row in self._labelled_parents],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Ontology":
        try:
            data = check_ontology_dict(dict(data) if isinstance(data, Mapping) else data)
        except ValueError as err:
            raise OntologyError(str(err)) from None
        return cls(data["labels"], data["parents"], data["names"])

    def to_json(self, path: Optional[PathLike] = None) -> str:
        text = json.dumps(self.to_dict(), ensure_ascii=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return text

    @classmethod
    def from_json(cls, path: PathLike) -> "Ontology":
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as err:
                raise OntologyError(f"{path}: invalid JSON ({err})") from None
        return cls.from_dict(data)

    # ------------------------------------------------------------------ accessors
    @property
    def labels(self) -> Tuple[str, ...]:
        return self._labels

    @property
    def names(self) -> Tuple[str, ...]:
        return self._names

    @property
    def labelled_parents(self) -> Tuple[Tuple[int, ...], ...]:
        return self._labelled_parents

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def num_classes(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return (
            f"Ontology(classes={len(self)}, edges={len(self.edges)}, "
            f"receiving={len(self.receiving)}, ambiguous={len(self.ambiguous)})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Ontology):
            return NotImplemented
        return (self._labels, self._names, self._labelled_parents) == (
            other._labels,
            other._names,
            other._labelled_parents,
        )

    def __hash__(self) -> int:
        return hash((self._labels, self._labelled_parents))

    def index(self, label: str) -> int:
        """Class index of a label id (or, failing that, of a display name)."""
        try:
            return self._label_to_index[label]
        except KeyError:
            pass
        try:
            return self._name_to_index[label]
        except KeyError:
            raise KeyError(f"unknown label {label!r}: not among the {len(self)} class ids or names") from None

    def indices(self, labels: Iterable[str]) -> List[int]:
        return [self.index(label) for label in labels]

    @cached_property
    def _name_to_index(self) -> Dict[str, int]:
        mapping: Dict[str, int] = {}
        for i, name in enumerate(self._names):
            mapping.setdefault(name, i)
        return mapping

    @cached_property
    def label2id(self) -> Dict[str, int]:
        return dict(self._label_to_index)

    @cached_property
    def id2label(self) -> Dict[int, str]:
        return dict(enumerate(self._names))

    @cached_property
    def unique_parent(self) -> np.ndarray:
        """Unique labelled parent of each class, or -1 (root or ambiguous)."""
        return unique_parent_array(self._labelled_parents)

    @cached_property
    def edges(self) -> np.ndarray:
        """(E, 2) int64 array of the child -> parent edges that propagate (unique parents)."""
        child = np.flatnonzero(self.unique_parent >= 0)
        return np.stack([child, self.unique_parent[child]], axis=1)

    @property
    def ancestor_pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """(descendant, ancestor) index arrays: the off-diagonal cells of the lookup table."""
        return self._descendant, self._ancestor

    @cached_property
    def ancestor_max(self) -> AncestorMax:
        """The post-HLP / dense propagation plan of this hierarchy (the max over the lookup table)."""
        return AncestorMax(*self.ancestor_pairs)

    @cached_property
    def ancestor_bitsets(self) -> AncestorBitsets:
        """The label kernel's plan: per-class bitsets over the receiving classes."""
        return AncestorBitsets(len(self), *self.ancestor_pairs)

    @cached_property
    def label_encoder(self) -> LabelEncoder:
        """Class indices from labels in any form (:class:`hlp_audio.labels.LabelEncoder`)."""
        return LabelEncoder(self)

    @cached_property
    def ambiguous(self) -> np.ndarray:
        """Classes with two or more labelled parents: they propagate nothing."""
        return np.array([i for i, row in enumerate(self._labelled_parents) if len(row) > 1], dtype=np.int64)

    @cached_property
    def propagating(self) -> np.ndarray:
        """Classes with a unique labelled parent (they pass labels up)."""
        return np.flatnonzero(self.unique_parent >= 0)

    @cached_property
    def receiving(self) -> np.ndarray:
        """Classes that can receive propagated labels (the unique parents)."""
        return np.unique(self._ancestor)

    @cached_property
    def roots(self) -> np.ndarray:
        return np.array([i for i, row in enumerate(self._labelled_parents) if not row], dtype=np.int64)

    def lookup_table(self) -> np.ndarray:
        """(C, C) bool: ``L[i, j]`` is True iff j == i or j is a unique-parent ancestor of i."""
        table = np.eye(len(self), dtype=bool)
        table[self._descendant, self._ancestor] = True
        return table

    def ancestors(self, label: Union[int, str]) -> List[int]:
        """Unique-parent ancestors of a class, nearest first."""
        node = label if isinstance(label, (int, np.integer)) else self.index(label)
        chain = []
        node = int(self.unique_parent[node])
        while node >= 0:
            chain.append(node)
            node = int(self.unique_parent[node])
        return chain


def _contract(labels: Sequence[str], label_set: set, parent_map: Dict[str, Tuple[str, ...]]) -> Dict[str, List[str]]:
    """Labelled parents of every label, looking through non-label nodes.

    Iterative (an explicit stack, so that long chains of non-label nodes cannot exhaust Python's
    recursion limit), memoised per non-label node; cycles are reported with their path.
    """
    for child, row in parent_map.items():
        for parent in row:
            if parent not in label_set and parent not in parent_map:
                raise OntologyError(
                    f"{child!r} has parent {parent!r}, which is neither a label nor a node of the hierarchy "
                    "(declare a non-label node as a key of `parents`, with [] for a root)"
                )
    frontier: Dict[str, Tuple[str, ...]] = {}  # non-label node -> its nearest labelled ancestors

    def nearest_labelled(start: str) -> Tuple[str, ...]:
        if start in frontier:
            return frontier[start]
        stack, on_path = [start], {start}
        while stack:
            node = stack[-1]
            pending = [p for p in parent_map.get(node, ()) if p not in label_set and p not in frontier]
            for parent in pending:
                if parent in on_path:
                    cycle = stack[stack.index(parent):] + [parent]
                    raise OntologyError(f"the hierarchy has a cycle: {' -> '.join(cycle)}")
            if pending:
                stack.append(pending[0])
                on_path.add(pending[0])
                continue
            found: List[str] = []
            for parent in parent_map.get(node, ()):
                for labelled in ((parent,) if parent in label_set else frontier[parent]):
                    if labelled not in found:
                        found.append(labelled)
            frontier[node] = tuple(found)
            on_path.discard(stack.pop())
        return frontier[start]

    contracted: Dict[str, List[str]] = {}
    for label in labels:
        found: List[str] = []
        for parent in parent_map.get(label, ()):
            if parent == label:
                raise OntologyError(f"the hierarchy has a cycle: {label} -> {label}")
            for labelled in ((parent,) if parent in label_set else nearest_labelled(parent)):
                if labelled not in found:
                    found.append(labelled)
        if label in found:
            raise OntologyError(f"the hierarchy has a cycle: {label!r} is its own ancestor")
        contracted[label] = found
    return contracted
