"""AudioSet metadata: the segment CSV reader, source resolution, and verified downloads."""

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from hlp_audio import AudioSetFileError, Ontology, read_segments, resolve_file
from hlp_audio import audioset

HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


@pytest.fixture(scope="module")
def tiny_onto():
    return Ontology.from_parents(["/m/a", "/m/b", "/m/c"], {"/m/b": ["/m/a"]})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_reads_google_format_including_dash_ytids_and_gzip(tmp_path, tiny_onto):
    body = (
        '--PJHxphWEs, 30.000, 40.000, "/m/a,/m/b"\n'
        '-0RWZT-miFs, 420.000, 430.000, "/m/c"\n'
        'zzzz0000000, 0.000, 10.000, "/m/b,/m/c,/m/a"\n'
    )
    path = write(tmp_path / "segments.csv", HEADER + body)
    segs = read_segments(path, tiny_onto)
    assert segs.ytid.to_pylist() == ["--PJHxphWEs", "-0RWZT-miFs", "zzzz0000000"]
    np.testing.assert_array_equal(segs.start_seconds, [30.0, 420.0, 0.0])
    np.testing.assert_array_equal(segs.end_seconds, [40.0, 430.0, 10.0])
    assert segs.labels.to_pylist() == [[0, 1], [2], [1, 2, 0]]
    gz = tmp_path / "segments.csv.gz"
    gz.write_bytes(gzip.compress((HEADER + body).encode()))
    assert read_segments(gz, tiny_onto).labels.to_pylist() == [[0, 1], [2], [1, 2, 0]]
    crlf = write(tmp_path / "crlf.csv", (HEADER + body).replace("\n", "\r\n"))
    assert read_segments(crlf, tiny_onto).labels.to_pylist() == [[0, 1], [2], [1, 2, 0]]


@pytest.mark.parametrize(
    "row, message",
    [
        ('abc, 1.0, "/m/a"', r"line 5: expected 4 fields"),
        ('abc, x1, 2.0, "/m/a"', r"line 5: start time 'x1' is not a number"),
        ('abc, 1.0, 2.0, /m/a', r"line 5: the label list must be double-quoted"),
        ('abc, 1.0, 2.0, "/m/a,/m/zzz"', r"line 5: unknown label '/m/zzz': not one of the 3 class ids"),
        ('abc, 1.0, 2.0, "/m/a,"', r"line 5: an empty label"),
        ('abc, 3.0, 2.0, "/m/a"', r"line 5: end 2.0 is before start 3.0"),
        (', 1.0, 2.0, "/m/a"', r"line 5: empty YTID"),
        ('abc, nan, 2.0, "/m/a"', r"line 5: start time nan is not a finite number"),
        ('abc, 1.0, inf, "/m/a"', r"line 5: end time inf is not a finite number"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, tiny_onto, row, message):
    path = write(tmp_path / "bad.csv", HEADER + 'ok000000000, 0.000, 10.000, "/m/a"\n' + row + "\n")
    with pytest.raises(AudioSetFileError, match=r"bad\.csv, " + message):
        read_segments(path, tiny_onto)


def test_unreadable_files(tmp_path, tiny_onto):
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(AudioSetFileError, match=r"broken\.csv\.gz: cannot be read"):
        read_segments(broken, tiny_onto)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AudioSetFileError, match="not UTF-8"):
        read_segments(binary, tiny_onto)


def test_real_splits_match_their_headers(audioset_dir, audioset_ontology):
    for name, clips, positives in (("balanced_train_segments.csv", 22160, 52882), ("eval_segments.csv", 20371, 51804)):
        segs = read_segments(audioset_dir / name, audioset_ontology)
        assert len(segs) == clips and segs.num_positive_labels == positives
        assert (segs.end_seconds - segs.start_seconds <= 10.0 + 1e-9).all()


# ---------------------------------------------------------------------------- resolution and download
def test_resolution_order(tmp_path, monkeypatch, audioset_dir):
    explicit = audioset_dir / "ontology.json"
    assert resolve_file("ontology.json", explicit) == explicit
    with pytest.raises(AudioSetFileError, match="does not exist"):
        resolve_file("ontology.json", tmp_path / "nope.json")
    monkeypatch.setenv("HLP_AUDIOSET_DIR", str(audioset_dir))
    assert resolve_file("unbalanced_train_segments.csv") == audioset_dir / "unbalanced_train_segments.csv.gz"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(AudioSetFileError, match=r"ontology\.json \(or ontology\.json\.gz\) is not in audioset_dir="):
        resolve_file("ontology.json", audioset_dir=other)  # the argument wins over the environment
    monkeypatch.setenv("HLP_AUDIOSET_DIR", str(tmp_path / "missing"))
    with pytest.raises(AudioSetFileError, match="HLP_AUDIOSET_DIR=.* is not a directory"):
        resolve_file("ontology.json")


@pytest.fixture()
def loopback_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served; yields (base_url, folder, hits)."""
    served = tmp_path / "served"
    served.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, hits
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_sha256_and_caches(monkeypatch, tmp_path, audioset_dir, loopback_server):
    base, served, hits = loopback_server
    monkeypatch.delenv("HLP_AUDIOSET_DIR", raising=False)
    cache = tmp_path / "cache"
    for name in ("ontology.json", "class_labels_indices.csv"):
        (served / name).write_bytes((audioset_dir / name).read_bytes())
        spec = audioset.AUDIOSET_FILES[name]
        monkeypatch.setitem(audioset.AUDIOSET_FILES, name, audioset.AudioSetFile(name, base + name, spec.sha256, spec.size))
    monkeypatch.setenv("HLP_AUDIOSET_CACHE", str(cache))
    onto = Ontology.from_audioset()
    assert len(onto) == 527 and len(onto.receiving) == 109
    assert sorted(p.name for p in cache.iterdir()) == ["class_labels_indices.csv", "ontology.json"]
    assert hashlib.sha256((cache / "ontology.json").read_bytes()).hexdigest() == audioset.AUDIOSET_FILES["ontology.json"].sha256
    requests = len(hits)
    Ontology.from_audioset()  # second time: from the cache, no request
    assert len(hits) == requests


def test_download_checksum_mismatch_keeps_nothing(monkeypatch, tmp_path, audioset_dir, loopback_server):
    base, served, _ = loopback_server
    monkeypatch.delenv("HLP_AUDIOSET_DIR", raising=False)
    tampered = (audioset_dir / "ontology.json").read_bytes().replace(b"Speech", b"Speeth", 1)
    (served / "ontology.json").write_bytes(tampered)
    cache = tmp_path / "cache"
    with pytest.raises(AudioSetFileError, match="checksum mismatch for ontology.json.*HLP_AUDIOSET_DIR"):
        resolve_file("ontology.json", cache_dir=cache, url=base + "ontology.json")
    assert list(cache.iterdir()) == []


def test_download_failure_says_how_to_work_offline(monkeypatch, tmp_path, loopback_server):
    base, _, _ = loopback_server
    monkeypatch.delenv("HLP_AUDIOSET_DIR", raising=False)
    with pytest.raises(AudioSetFileError, match=r"could not download eval_segments\.csv.*HLP_AUDIOSET_DIR=/path/to/dir"):
        resolve_file("eval_segments.csv", cache_dir=tmp_path / "c", url=base + "absent.csv")
    with pytest.raises(AudioSetFileError, match="download=False"):
        resolve_file("eval_segments.csv", cache_dir=tmp_path / "c", download=False)


# ---------------------------------------------------------------------------- checks of the official files
def _copy_official(audioset_dir, folder, names=("ontology.json", "class_labels_indices.csv", "eval_segments.csv")):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes((audioset_dir / name).read_bytes())
    return folder


def test_a_cut_class_list_is_refused_wherever_it_comes_from(tmp_path, audioset_dir, monkeypatch):
    folder = _copy_official(audioset_dir, tmp_path / "cut")
    text = (audioset_dir / "class_labels_indices.csv").read_text()
    (folder / "class_labels_indices.csv").write_text(text[: len(text) // 2])  # ends inside a quoted name
    explicit = {"ontology_json": folder / "ontology.json", "class_labels_csv": folder / "class_labels_indices.csv"}
    for kwargs in ({"audioset_dir": folder}, explicit):
        with pytest.raises(AudioSetFileError, match=r"class_labels_indices\.csv: sha256 .* differs from the official"):
            Ontology.from_audioset(**kwargs)
    monkeypatch.setenv("HLP_AUDIOSET_DIR", str(folder))
    with pytest.raises(AudioSetFileError, match="differs from the official"):
        Ontology.from_audioset()
    # the opt-out reads an edited file, but a quote left open is still an error, not a 271-class ontology
    with pytest.raises(AudioSetFileError, match=r"class_labels_indices\.csv, line \d+: malformed CSV"):
        Ontology.from_audioset(verify=False)


def test_an_edited_class_list_loads_with_the_opt_out(tmp_path, audioset_dir):
    folder = _copy_official(audioset_dir, tmp_path / "edited")
    lines = (audioset_dir / "class_labels_indices.csv").read_text().splitlines(keepends=True)
    (folder / "class_labels_indices.csv").write_text("".join(lines[:11]))  # header + 10 classes, on purpose
    with pytest.raises(AudioSetFileError, match="differs from the official"):
        Ontology.from_audioset(audioset_dir=folder)
    assert len(Ontology.from_audioset(audioset_dir=folder, verify=False)) == 10


def test_a_segment_list_cut_at_a_line_boundary_is_refused(tmp_path, audioset_dir, audioset_ontology):
    lines = (audioset_dir / "eval_segments.csv").read_text().splitlines(keepends=True)
    cut = write(tmp_path / "eval_segments.csv", "".join(lines[: 3 + 10184]))
    with pytest.raises(AudioSetFileError, match=r"eval_segments\.csv: sha256 .* differs"):
        read_segments(cut, audioset_ontology)
    # edited copies still have to hold what their header announces
    with pytest.raises(AudioSetFileError, match="announces num_segs=20371 but the file holds 10184 segments"):
        read_segments(cut, audioset_ontology, verify=False)
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(AudioSetFileError, match=r"empty\.csv: no segments"):
        read_segments(empty, audioset_ontology)
    header_only = write(tmp_path / "header_only.csv", HEADER)
    with pytest.raises(AudioSetFileError, match="no segments"):
        read_segments(header_only, audioset_ontology)


def test_stats_cli_fails_on_an_empty_split(tmp_path, audioset_dir, capsys):
    from hlp_audio.cli import main

    folder = _copy_official(audioset_dir, tmp_path / "data", names=("ontology.json", "class_labels_indices.csv"))
    (folder / "eval_segments.csv").write_text("")
    assert main(["stats", "--audioset-dir", str(folder), "--splits", "eval"]) == 2
    assert "differs from the official eval_segments.csv" in capsys.readouterr().err
    assert main(["stats", "--audioset-dir", str(folder), "--splits", "eval", "--no-verify"]) == 2
    assert "no segments" in capsys.readouterr().err


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda text: text.replace("\n", "\r"), id="CR-only"),
        pytest.param(lambda text: text.replace("\n", "\r\n"), id="CRLF"),
        pytest.param(lambda text: "\ufeff" + text, id="BOM before the header"),
    ],
)
def test_line_endings_and_byte_order_marks_agree_across_the_three_readers(tmp_path, audioset_dir, transform, tiny_onto):
    folder = tmp_path / "variant"
    folder.mkdir()
    for name in ("ontology.json", "class_labels_indices.csv"):
        write(folder / name, transform((audioset_dir / name).read_text()))
    onto = Ontology.from_audioset(audioset_dir=folder, verify=False)
    assert onto == Ontology.from_audioset(audioset_dir=audioset_dir)
    body = 'ok000000000, 0.000, 10.000, "/m/a"\nzz000000000, 0.000, 10.000, "/m/b,/m/c"\n'
    segments = read_segments(write(tmp_path / "s.csv", transform(HEADER.replace("=3", "=2") + body)), tiny_onto)
    assert segments.ytid.to_pylist() == ["ok000000000", "zz000000000"]
    assert segments.labels.to_pylist() == [[0], [1, 2]]
    # a file without comment lines, the mark right before the first data row: it is not part of the YTID
    bare = read_segments(write(tmp_path / "bare.csv", transform(body)), tiny_onto)
    assert bare.ytid.to_pylist()[0] == "ok000000000"


def test_split_names(audioset_dir, audioset_ontology):
    from hlp_audio import load_segments

    assert list(load_segments("eval", audioset_ontology, audioset_dir=audioset_dir)) == ["eval"]  # one name
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_segments(["test"], audioset_ontology, audioset_dir=audioset_dir)


def test_a_non_utf8_class_file_is_named(tmp_path, audioset_dir):
    folder = _copy_official(audioset_dir, tmp_path / "latin", names=("ontology.json",))
    (folder / "class_labels_indices.csv").write_bytes("index,mid,display_name\n0,/m/a,\"Caf\xe9\"\n".encode("latin-1"))
    with pytest.raises(AudioSetFileError, match=r"class_labels_indices\.csv: not UTF-8 text"):
        Ontology.from_audioset(audioset_dir=folder, verify=False)
