"""pipeline("audio-classification") for HLP taggers (sigmoid scores, post-HLP, files without ffmpeg) and
the ``hlp-audio tag`` command."""

import json

import numpy as np
import pytest
import soundfile
import soxr
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, pipeline

from hlp_audio import HLPAudioClassificationPipeline
from hlp_audio.audio_loading import AudioLoadingError
from hlp_audio.cli import main as cli_main
from hlp_audio.conversion import hlp_tagger_from_ast
from hlp_audio.modeling.modeling_ast_backbone import ASTBackbone

TINY = ASTBackbone.default_config("tiny").to_dict()
SAMPLES = ("speech.wav", "music.wav", "typing.wav")  # real 10 s, 32 kHz, mono recordings


@pytest.fixture(scope="module")
def sample_dir(shared_data):
    return shared_data / "models" / "efficientat_mn04_as" / "sample_audio"


def _tiny_extractor():
    return ASTFeatureExtractor(num_mel_bins=TINY["num_mel_bins"], max_length=TINY["max_length"])


@pytest.fixture(scope="module")
def model_dir(audioset_ontology, tmp_path_factory):
    torch.manual_seed(7)
    names = dict(enumerate(audioset_ontology.names))
    ast = ASTForAudioClassification(ASTConfig(**TINY, id2label=names, label2id={n: i for i, n in names.items()}))
    folder = tmp_path_factory.mktemp("hlp_pipeline_model")
    hlp_tagger_from_ast(ast.eval(), audioset_ontology).save_pretrained(folder)
    _tiny_extractor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tagger(model_dir):
    return pipeline("audio-classification", model=str(model_dir), pipeline_class=HLPAudioClassificationPipeline)


@pytest.fixture()
def no_ffmpeg(monkeypatch, tmp_path):
    """An empty PATH: transformers' stock pipeline could not find ffmpeg."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _scores(tags):
    return {tag["label"]: tag["score"] for tag in tags}


def _reference_scores(tagger, waveform_16k):
    """Feature extractor + model + sigmoid, by hand."""
    features = _tiny_extractor()(waveform_16k, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = tagger.model(**features).logits[0]
    return {tagger.model.config.id2label[i]: p for i, p in enumerate(logits.sigmoid().tolist())}


def test_scores_are_sigmoids_of_the_post_hlp_logits(tagger, sample_dir, no_ffmpeg):
    assert type(tagger) is HLPAudioClassificationPipeline
    path = sample_dir / "speech.wav"
    tags = tagger(str(path), top_k=None)
    assert len(tags) == 527
    assert [t["score"] for t in tags] == sorted((t["score"] for t in tags), reverse=True)
    waveform, rate = soundfile.read(path, dtype="float32")
    reference = _reference_scores(tagger, soxr.resample(waveform, rate, 16000, quality="HQ"))
    got = _scores(tags)
    assert got.keys() == reference.keys()
    np.testing.assert_allclose([got[k] for k in reference], list(reference.values()), rtol=1e-6)
    assert sum(got.values()) > 1.5  # independent probabilities, not a softmax


def test_parents_never_below_unambiguous_children(tagger, sample_dir, audioset_ontology):
    names = audioset_ontology.names
    edges = [(names[child], names[parent]) for child, parent in audioset_ontology.edges]
    raw_violations = 0
    for sample in SAMPLES:
        scores = _scores(tagger(str(sample_dir / sample), top_k=None))
        assert all(scores[parent] >= scores[child] for child, parent in edges)
        tagger.model.config.post_hlp = False
        try:
            raw = _scores(tagger(str(sample_dir / sample), top_k=None))
        finally:
            tagger.model.config.post_hlp = True
        raw_violations += sum(raw[parent] < raw[child] for child, parent in edges)
    assert raw_violations > 0  # without post-HLP the (random) model does break the rule


def test_file_formats_and_input_kinds_agree(tagger, sample_dir, tmp_path, no_ffmpeg):
    speech, rate = soundfile.read(sample_dir / "speech.wav", dtype="float32")
    clip = soxr.resample(speech[: 3 * rate], rate, 44100)  # 3 s at 44.1 kHz
    paths = {}
    for fmt, subtype in (("wav", "FLOAT"), ("flac", "PCM_24"), ("ogg", "VORBIS")):
        paths[fmt] = tmp_path / f"clip.{fmt}"
        soundfile.write(paths[fmt], clip, 44100, subtype=subtype)
    for fmt, path in paths.items():
        decoded, file_rate = soundfile.read(path, dtype="float32")
        from_dict = tagger({"array": decoded, "sampling_rate": file_rate}, top_k=None)
        assert tagger(str(path), top_k=None) == from_dict, fmt
        assert tagger(path, top_k=None) == from_dict, fmt  # pathlib.Path
        assert tagger(path.read_bytes(), top_k=None) == from_dict, fmt
    # a 1-D array is taken at the extractor's rate; a "raw" dict and a torch tensor work too
    at_16k = soxr.resample(speech[:rate], rate, 16000, quality="HQ")
    expected = tagger(at_16k, top_k=None)
    assert tagger({"raw": at_16k, "sampling_rate": 16000}, top_k=None) == expected
    assert tagger(torch.from_numpy(at_16k), top_k=None) == expected


def test_batches(tagger, sample_dir):
    inputs = [str(sample_dir / name) for name in SAMPLES]
    single = [tagger(item) for item in inputs]
    batched = tagger(inputs, batch_size=2)
    assert len(batched) == 3
    for one, many in zip(single, batched):
        assert [t["label"] for t in one] == [t["label"] for t in many]
        np.testing.assert_allclose([t["score"] for t in one], [t["score"] for t in many], rtol=1e-5)


def test_top_k_and_function_to_apply(tagger, model_dir, sample_dir):
    path = str(sample_dir / "music.wav")
    everything = tagger(path, top_k=None)
    assert len(tagger(path)) == 5  # the default, also when top_k is not passed at call time
    assert tagger(path, top_k=3) == everything[:3]
    assert len(tagger(path, top_k=10_000)) == 527
    assert len(pipeline("audio-classification", model=str(model_dir), top_k=2, pipeline_class=HLPAudioClassificationPipeline)(path)) == 2
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="top_k must be a positive int or None"):
            tagger(path, top_k=bad)
    logits = tagger(path, top_k=None, function_to_apply="none")
    assert [t["label"] for t in logits] == [t["label"] for t in everything]
    np.testing.assert_allclose(torch.tensor([t["score"] for t in logits]).sigmoid(), [t["score"] for t in everything], rtol=1e-6)
    assert min(t["score"] for t in logits) < 0
    with pytest.raises(ValueError, match="function_to_apply='softmax' is not available for a multi-label HLP tagger"):
        tagger(path, function_to_apply="softmax")


def test_bad_inputs_get_clear_errors(tagger, tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (16000, 2)).astype(np.float32)
    with pytest.raises(AudioLoadingError, match=r"shape \(2, 16000\); a mono 1-D waveform is required"):
        tagger(stereo.T)
    with pytest.raises(AudioLoadingError, match=r"the audio array of clip\.wav has shape \(16000, 2\)"):
        tagger({"array": stereo, "sampling_rate": 16000, "path": "clip.wav"})
    stereo_file = tmp_path / "stereo.wav"
    soundfile.write(stereo_file, stereo, 16000, subtype="FLOAT")
    assert tagger(str(stereo_file), top_k=None) == tagger(stereo.mean(axis=1), top_k=None)  # files are downmixed
    with pytest.raises(AudioLoadingError, match=r"stereo\.wav has 2 channels"):
        tagger(str(stereo_file), mono="error")
    at_44k = tmp_path / "at_44k.flac"
    soundfile.write(at_44k, stereo[:, 0], 44100)
    with pytest.raises(AudioLoadingError, match=r"at_44k\.flac is sampled at 44100 Hz but 16000 Hz is required"):
        tagger(str(at_44k), resample=False)
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    with pytest.raises(AudioLoadingError, match=r"empty\.ogg is empty"):
        tagger(str(empty))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    with pytest.raises(AudioLoadingError, match=r"cannot decode .*broken\.wav"):
        tagger(str(broken))
    with pytest.raises(FileNotFoundError, match=r"missing\.wav"):
        tagger(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioLoadingError, match=r"too short: 100 samples at 16000 Hz .* at least 400"):
        tagger(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match=r'needs "sampling_rate" and "array" \(or "raw"\) keys'):
        tagger({"array": stereo[:, 0]})
    with pytest.raises(TypeError, match="cannot tag a int"):
        tagger(5)
    with pytest.raises(ValueError, match="the audio array: sampling_rate must be a positive number of Hz, got None"):
        tagger({"array": stereo[:, 0], "sampling_rate": None})
    with pytest.raises(ValueError, match="sampling_rate must be a positive whole number of Hz, got 32000.9"):
        tagger({"array": stereo[:, 0], "sampling_rate": 32000.9})
    with pytest.raises(ValueError, match="the list of inputs is empty"):
        tagger([])
    nan_audio = stereo[:, 0].copy()
    nan_audio[10] = np.nan
    with pytest.raises(AudioLoadingError, match=r"contains NaN or infinite samples \(first at index 10\)"):
        tagger(nan_audio)
    nan_file = tmp_path / "nan.wav"
    soundfile.write(nan_file, nan_audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadingError, match=r"nan\.wav contains NaN or infinite samples"):
        tagger(str(nan_file))


def test_bfloat16_pipeline(model_dir, sample_dir, audioset_ontology):
    tagger = pipeline("audio-classification", model=str(model_dir), dtype=torch.bfloat16, pipeline_class=HLPAudioClassificationPipeline)
    assert tagger.model.dtype == torch.bfloat16
    scores = _scores(tagger(str(sample_dir / "typing.wav"), top_k=None))
    names = audioset_ontology.names
    assert all(scores[names[p]] >= scores[names[c]] for c, p in audioset_ontology.edges)
    assert all(0.0 < s < 1.0 for s in scores.values())


# -------------------------------------------------------------------------------------- CLI
def test_cli_tag(model_dir, sample_dir, tagger, capsys, no_ffmpeg):
    files = [str(sample_dir / name) for name in SAMPLES[:2]]
    assert cli_main(["tag", *files, "--model", str(model_dir), "--top-k", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["post_hlp"] is True and [r["file"] for r in report["results"]] == files
    for result, path in zip(report["results"], files):
        assert result["tags"] == tagger(path, top_k=3)

    assert cli_main(["tag", files[0], "--model", str(model_dir), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = tagger(files[0], top_k=2)
    assert lines == [files[0]] + [f"  {t['score']:.4f}  {t['label']}" for t in expected]


def test_cli_tag_without_post_hlp(model_dir, sample_dir, tagger, capsys):
    path = str(sample_dir / "typing.wav")
    assert cli_main(["tag", path, "--model", str(model_dir), "--top-k", "527", "--no-post-hlp", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["post_hlp"] is False
    tagger.model.config.post_hlp = False
    try:
        assert report["results"][0]["tags"] == tagger(path, top_k=None)
    finally:
        tagger.model.config.post_hlp = True
    assert report["results"][0]["tags"] != tagger(path, top_k=None)


def test_cli_tag_errors(model_dir, sample_dir, tmp_path, capsys):
    good = str(sample_dir / "speech.wav")
    missing = str(tmp_path / "missing.flac")
    assert cli_main(["tag", missing, good, "--model", str(model_dir), "--json"]) == 1  # some files failed
    captured = capsys.readouterr()
    assert f"{missing}: not tagged" in captured.err
    report = json.loads(captured.out)
    assert [r["file"] for r in report["results"]] == [good]  # the other file is still tagged
    assert [f["file"] for f in report["failed"]] == [missing]
    # a file of NaN samples between two good ones: reported by name, the others tagged
    audio, rate = soundfile.read(good, dtype="float32")
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.where(np.arange(audio.size) == 5, np.nan, audio).astype(np.float32), rate, subtype="FLOAT")
    flac = tmp_path / "good.flac"
    soundfile.write(flac, audio, rate)
    assert cli_main(["tag", good, str(nan), str(flac), "--model", str(model_dir)]) == 1
    captured = capsys.readouterr()
    assert f"{nan}: not tagged: {nan} contains NaN or infinite samples" in captured.err
    assert "1 of 3 files could not be tagged" in captured.err
    assert good in captured.out and str(flac) in captured.out and "Traceback" not in captured.err + captured.out
    assert "Loading weights" not in captured.err
    assert cli_main(["tag", good, "--model", str(model_dir), "--top-k", "0"]) == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err
    assert cli_main(["tag", good, "--model", str(tmp_path / "no_model_here")]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    plain = tmp_path / "plain_ast"
    ASTForAudioClassification(ASTConfig(**TINY)).save_pretrained(plain)
    _tiny_extractor().save_pretrained(plain)
    assert cli_main(["tag", good, "--model", str(plain)]) == 2
    assert "is not an HLP tagger" in capsys.readouterr().err


def test_ties_rank_the_most_specific_class_first(tagger, sample_dir, audioset_ontology):
    """Post-HLP raises a parent to its best child: the child, the clip's own evidence, comes first."""
    child_of = {int(child): int(parent) for child, parent in audioset_ontology.edges}
    ancestors = {c: set(audioset_ontology.ancestors(c)) for c in range(len(audioset_ontology))}
    for name in SAMPLES:
        ranking = tagger(str(sample_dir / name), top_k=None)
        index = {tag["label"]: position for position, tag in enumerate(ranking)}
        scores = {audioset_ontology.index(tag["label"]): tag["score"] for tag in ranking}
        ties = 0
        for child, parent in child_of.items():
            if scores[child] == scores[parent]:
                ties += 1
                assert index[audioset_ontology.names[child]] < index[audioset_ontology.names[parent]], (name, child)
        assert ties > 0
        for first, second in zip(ranking, ranking[1:]):  # ties otherwise keep depth then class order
            assert first["score"] >= second["score"]
            if first["score"] == second["score"]:
                a, b = audioset_ontology.index(first["label"]), audioset_ontology.index(second["label"])
                assert len(ancestors[a]) > len(ancestors[b]) or (len(ancestors[a]) == len(ancestors[b]) and a < b)


@pytest.mark.parametrize("backbone", ["ast", "efficientat", "passt"])
def test_scores_do_not_depend_on_the_clips_batched_together(backbone, audioset_ontology, sample_dir, tmp_path):
    """Clips of 0.5 s, 2 s and 10 s in one call with batch_size=4 score as they do alone, for every backbone."""
    from hlp_audio import HLPAudioConfig, HLPAudioForAudioClassification
    from hlp_audio.modeling.modeling_hlp_audio import backbone_class

    torch.manual_seed(0)
    kind = backbone_class(backbone)
    size_config = kind.default_config("tiny").to_dict()
    if backbone != "ast":
        size_config["num_mel_bins"] = 128  # the 32 kHz extractor's bands
    config = HLPAudioConfig(ontology=audioset_ontology.to_dict(), backbone_type=backbone, backbone_config=size_config)
    folder = tmp_path / backbone
    HLPAudioForAudioClassification(config).eval().save_pretrained(folder)
    kind.build_feature_extractor(kind.config_class.from_dict(size_config)).save_pretrained(folder)
    tagger = pipeline("audio-classification", model=str(folder), pipeline_class=HLPAudioClassificationPipeline)
    audio, rate = soundfile.read(sample_dir / "music.wav", dtype="float32")
    clips = [{"array": audio[: int(seconds * rate)], "sampling_rate": rate} for seconds in (10.0, 0.5, 2.0, 10.0, 2.0)]
    alone = [tagger(clip, top_k=None) for clip in clips]
    together = tagger(clips, batch_size=4, top_k=None)
    for one, many in zip(alone, together):
        np.testing.assert_allclose([t["score"] for t in sorted(one, key=lambda t: t["label"])],
                                   [t["score"] for t in sorted(many, key=lambda t: t["label"])], rtol=1e-5, atol=1e-6)
    assert alone[1] != alone[0]  # the clips differ, so the check means something
