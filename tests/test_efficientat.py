"""EfficientAT mn backbone: architecture, the real mn04 checkpoint, conversion, pipeline and remote code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hlp_audio.conversion.from_efficientat import (
    EfficientATCheckpointError,
    convert_efficientat,
    convert_original_state_dict,
    load_efficientat_checkpoint,
    size_name,
)
from hlp_audio.modeling.modeling_efficientat import (
    EfficientATBackbone,
    efficientat_block_specs,
    make_divisible,
)


def default_efficientat_config(size, **overrides):
    """The typed config of a named size, with overrides."""
    return EfficientATBackbone.default_config(size).replace(**overrides)

MN04_DIR = ("models", "efficientat_mn04_as")
CHECKPOINT_NAME = "mn04_as_mAP_432.pt"
# Figures of the original EfficientAT code on the sample clips (shared/data/SOURCES.md), post_hlp=False.
EXPECTED_TOP = {
    "speech": {"Speech": 0.818},
    "music": {"Music": 0.598},
    "typing": {"Computer keyboard": 0.891, "Typing": 0.871},
}
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def mn04_checkpoint(shared_data):
    path = shared_data.joinpath(*MN04_DIR, CHECKPOINT_NAME)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def sample_paths(shared_data):
    folder = shared_data.joinpath(*MN04_DIR, "sample_audio")
    return {name: folder / f"{name}.wav" for name in EXPECTED_TOP}


@pytest.fixture(scope="module")
def mn04_backbone(mn04_checkpoint):
    backbone = EfficientATBackbone(default_efficientat_config("mn04"), num_labels=527)
    backbone.load_state_dict(convert_original_state_dict(mn04_checkpoint, backbone), strict=True)
    return backbone.eval()


# -- architecture ------------------------------------------------------------------------------------


def test_make_divisible_is_the_tensorflow_rounding():
    # round to the nearest multiple of 8, at least 8, never more than 10 % below the value
    assert [make_divisible(v) for v in (16 * 0.4, 64 * 0.4, 72 * 0.4, 1280 * 0.4, 3.0, 11.9, 12.0, 20.0)] == [
        8, 24, 32, 512, 8, 16, 16, 24
    ]
    assert make_divisible(4.0 * 112) == 448
    assert make_divisible(91.0) == 88 and make_divisible(85.0) == 88 and make_divisible(83.0) == 80
    assert make_divisible(9.0) == 16  # 8 would be more than 10 % below 9
    assert make_divisible(4.4) == 8  # the minimum


@pytest.mark.parametrize("size", ["mn01", "mn02", "mn04", "mn05", "mn10", "mn20", "mn30", "mn40"])
def test_block_tables_scale_and_chain(size):
    config = default_efficientat_config(size)
    width = int(size[2:]) / 10
    assert config.width_mult == width
    specs = efficientat_block_specs(config)
    assert len(specs) == 15
    assert [s.stride for s in specs].count(2) == 4  # stages C1..C4
    for spec in specs:
        for channels in (spec.input_channels, spec.expanded_channels, spec.output_channels):
            assert channels % 8 == 0
    assert specs[0].input_channels == make_divisible(16 * width)
    assert specs[-1].output_channels == make_divisible(160 * width)


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match="unknown efficientat size 'mn99'"):
        default_efficientat_config("mn99")
    with pytest.raises(ValueError, match="unknown efficientat size 'large'"):
        default_efficientat_config("large")


def test_mn04_parameter_count_equals_the_checkpoint(mn04_checkpoint):
    backbone = EfficientATBackbone(default_efficientat_config("mn04"), num_labels=527)
    trainable = sum(p.numel() for p in backbone.parameters())
    in_checkpoint = sum(
        t.numel() for k, t in mn04_checkpoint.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert trainable == in_checkpoint
    assert len(backbone.state_dict()) == len(mn04_checkpoint) == 312


def test_strides_dilation_and_reduced_tail_change_the_geometry():
    frames = 200
    base = default_efficientat_config("mn01", num_mel_bins=128)
    maps = {}
    for name, overrides in {
        "default": {},
        "s2221": dict(strides=[2, 2, 2, 1]),
        "dilated": dict(dilated=True),
        "reduced_tail": dict(reduced_tail=True),
    }.items():
        backbone = EfficientATBackbone(base.replace(**overrides), num_labels=5).eval()
        with torch.no_grad():
            maps[name] = backbone.forward_features(torch.zeros(1, 128, frames))
        if name == "reduced_tail":
            specs = efficientat_block_specs(backbone.config)
            assert specs[-3].expanded_channels == make_divisible(672 * 0.1)  # the C4 block reads the full body
            assert specs[-1].output_channels == make_divisible(80 * 0.1)
            assert backbone.classifier.dense.out_features == make_divisible(640 * 0.1)
    assert maps["default"].shape[2:] == (4, 7)  # 128 / 32, ceil(200 / 32)
    assert maps["s2221"].shape[2:] == (8, 13)
    assert maps["dilated"].shape[2:] == (8, 13)  # dilated tail keeps stride 1, like EfficientAT
    dilated = EfficientATBackbone(base.replace(dilated=True), num_labels=5)
    assert dilated.blocks[-1].depthwise.convolution.dilation == (2, 2)
    assert dilated.blocks[-3].depthwise.convolution.stride == (1, 1)


def test_tiny_forward_backward_and_head_split():
    torch.manual_seed(0)
    backbone = EfficientATBackbone(default_efficientat_config("tiny"), num_labels=7)
    assert (backbone.time_axis, backbone.freq_axis) == (2, 1)  # (batch, mel, frames)
    blocks = backbone.blocks
    assert blocks[0].expand is None and blocks[0].use_residual and blocks[0].squeeze_excitation is None
    assert blocks[1].expand is not None and blocks[1].squeeze_excitation is not None and not blocks[1].use_residual
    assert blocks[2].use_residual and isinstance(blocks[2].depthwise.activation, torch.nn.Hardswish)
    inputs = torch.randn(3, 16, 50)
    logits = backbone(inputs)
    assert logits.shape == (3, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())
    head = {id(p) for p in backbone.classifier.parameters()}
    body = [p for p in backbone.parameters() if id(p) not in head]
    assert head and body and backbone.classifier.output.out_features == 7
    # (batch, 1, mel, frames) is accepted as well
    backbone.eval()
    torch.testing.assert_close(backbone(inputs), backbone(inputs.unsqueeze(1)))


def test_squeeze_excitation_gates_with_a_sigmoid_of_the_channel_means():
    torch.manual_seed(1)
    backbone = EfficientATBackbone(default_efficientat_config("tiny"), num_labels=2)
    se = backbone.blocks[1].squeeze_excitation
    x = torch.randn(2, se.reduce.in_features, 5, 6)
    means = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(means @ se.reduce.weight.T + se.reduce.bias) @ se.expand.weight.T + se.expand.bias)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    assert se.reduce.out_features == make_divisible(se.reduce.in_features // 4)


def test_init_weights_follows_efficientat():
    from hlp_audio import HLPAudioConfig, HLPAudioForAudioClassification

    torch.manual_seed(2)
    config = HLPAudioConfig(num_labels=527, backbone_type="efficientat", backbone_config=default_efficientat_config("mn04").to_dict())
    backbone = HLPAudioForAudioClassification(config).backbone  # initialised through the backbone's hook
    norm = backbone.blocks[3].project.normalization
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0) and torch.all(norm.running_var == 1)
    assert norm.eps == 1e-3 and norm.momentum == 0.01
    head = backbone.classifier.output.weight
    assert abs(head.std().item() - 0.01) < 0.001 and torch.all(backbone.classifier.output.bias == 0)
    conv = backbone.blocks[12].expand.convolution.weight  # Kaiming normal, fan_out: std = sqrt(2 / fan_out)
    assert abs(conv.std().item() / (2.0 / conv.shape[0]) ** 0.5 - 1) < 0.1


def test_bad_input_shapes_and_configs_are_clear_errors():
    backbone = EfficientATBackbone(default_efficientat_config("tiny"), num_labels=2)
    with pytest.raises(ValueError, match=r"got shape \(16, 50\)"):
        backbone(torch.zeros(16, 50))
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 16, 50\)"):
        backbone(torch.zeros(1, 2, 16, 50))
    with pytest.raises(ValueError, match=r"shape \(2, 64, 16\) has 64 mel bins on axis -2 but the backbone expects 16"):
        backbone(torch.zeros(2, 64, 16))  # (batch, frames, mel) as ASTFeatureExtractor would give
    stereo_input = EfficientATBackbone(default_efficientat_config("tiny", in_channels=2), num_labels=2)
    with pytest.raises(ValueError, match=r"shape \(1, 16, 50\) has no channel axis but the backbone expects 2"):
        stereo_input(torch.zeros(1, 16, 50))
    assert stereo_input(torch.zeros(1, 2, 16, 50)).shape == (1, 2)
    with pytest.raises(ValueError, match="head_type 'fully_convolutional' is not supported"):
        EfficientATBackbone(default_efficientat_config("tiny", head_type="fully_convolutional"), num_labels=2)
    with pytest.raises(ValueError, match="strides must have 4 entries"):
        efficientat_block_specs(default_efficientat_config("mn04", strides=[2, 2]))
    bad_table = default_efficientat_config("tiny", block_settings=[[16, 3, 16, 16, False, "RE", 1, 1], [24, 3, 48, 24, False, "RE", 1, 1]])
    with pytest.raises(ValueError, match="do not chain: a block outputs 8 channels but the next one expects 16"):
        efficientat_block_specs(bad_table)
    with pytest.raises(ValueError, match=r"block_settings\[0\].*expected 8 entries"):
        efficientat_block_specs(default_efficientat_config("tiny", block_settings=[[16, 3, 16, 16]]))
    with pytest.raises(ValueError, match="unknown activation 'GELU'"):
        efficientat_block_specs(default_efficientat_config("tiny", block_settings=[[16, 3, 16, 16, False, "GELU", 1, 1]]))


# -- the real mn04 checkpoint ---------------------------------------------------------------------------


def test_conversion_rejects_a_checkpoint_of_another_width(mn04_checkpoint):
    mn10 = EfficientATBackbone(default_efficientat_config("mn10"), num_labels=527)
    with pytest.raises(ValueError, match=r"'features.0.0.weight' has shape \(8, 1, 3, 3\) but 'stem.convolution.weight' expects \(16, 1, 3, 3\)"):
        convert_original_state_dict(mn04_checkpoint, mn10)
    damaged = {k: v for k, v in mn04_checkpoint.items() if k != "features.4.block.2.conc_se_layers.0.fc1.weight"}
    damaged["classifier.9.weight"] = torch.zeros(1)
    mn04 = EfficientATBackbone(default_efficientat_config("mn04"), num_labels=527)
    with pytest.raises(KeyError, match=r"1 keys missing .*features.4.block.2.conc_se_layers.0.fc1.weight.*1 keys unused .*classifier.9.weight"):
        convert_original_state_dict(damaged, mn04)


def test_backbone_reproduces_the_original_figures(mn04_backbone, sample_paths, audioset_ontology):
    import soundfile as sf

    from hlp_audio.modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor

    extractor = HLPAudioFeatureExtractor()
    clips = [sf.read(sample_paths[name], dtype="float32")[0] for name in EXPECTED_TOP]
    with torch.no_grad():
        batched = torch.sigmoid(mn04_backbone(extractor(clips, sampling_rate=32000, return_tensors="pt")["input_values"]))
    for row, (name, expected) in enumerate(EXPECTED_TOP.items()):
        top = torch.topk(batched[row], len(expected))
        names = [audioset_ontology.id2label[int(i)] for i in top.indices]
        assert names == list(expected), name
        np.testing.assert_allclose(top.values.numpy(), list(expected.values()), atol=TOLERANCE)


# -- conversion, saved folder, pipeline ------------------------------------------------------------------


class FakeHubApi:
    """Records what ``push_folder`` asks of the Hub (no network)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        from pathlib import Path

        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", dict(kwargs, files=files)))
        return "commit-info"


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    """The real mn04 checkpoint converted, then pushed to a fake Hub."""
    from hlp_audio.hub import push_folder

    out = tmp_path_factory.mktemp("mn04_hlp")
    api = FakeHubApi()
    convert_efficientat(
        shared_data.joinpath(*MN04_DIR, CHECKPOINT_NAME), 0.4, out, audioset_dir=shared_data / "audioset",
        repo_id="someone/efficientat-mn04-hlp",
    )
    push_folder(out, "someone/efficientat-mn04-hlp", api=api)
    return out, api


@pytest.fixture(scope="module")
def tagger(converted):
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline

    return pipeline("audio-classification", model=str(converted[0]), pipeline_class=HLPAudioClassificationPipeline)


def _scores(tagger, source, *, post_hlp):
    """All 527 sigmoid scores from the pipeline, in class order."""
    tagger.model.config.post_hlp = post_hlp  # read by forward at every call
    result = tagger(source, top_k=None)
    label2id = tagger.model.config.label2id
    scores = np.zeros(len(result))
    for item in result:
        scores[label2id[item["label"]]] = item["score"]
    return scores


def test_converted_folder_contents(converted, audioset_ontology):
    import json

    from safetensors import safe_open

    out, _ = converted
    names = {p.name for p in out.iterdir()}
    for required in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                     "modeling_hlp_audio.py", "modeling_efficientat.py", "feature_extraction_hlp_audio.py"):
        assert required in names
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_type"] == "efficientat" and config["backbone_config"]["width_mult"] == 0.4
    assert config["post_hlp"] is True and config["problem_type"] == "multi_label_classification"
    assert config["ontology"]["labels"] == list(audioset_ontology.labels)
    assert config["ontology"]["names"][0] == "Speech" and "id2label" not in config  # names stored once
    from transformers import AutoConfig

    loaded = AutoConfig.from_pretrained(out)
    assert loaded.id2label[0] == "Speech" and len(loaded.id2label) == 527 and loaded.label2id["Speech"] == 0
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["feature_extractor_type"] == "HLPAudioFeatureExtractor"
    assert (preprocessor["sampling_rate"], preprocessor["num_mel_bins"], preprocessor["f_max"]) == (32000, 128, 15000.0)
    with safe_open(out / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert len(keys) == 312 and all(key.startswith("backbone.") for key in keys)
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: audio-classification" in card
    assert "EfficientAT MobileNetV3 mn04 (width x0.4) (983,599 parameters)" in card
    assert "| AudioSet eval | AS-Base | off | 0.4320 | EfficientAT (published, not re-measured here) |" in card
    from huggingface_hub import ModelCard

    (result,) = ModelCard(card).data.eval_results
    assert result.metric_value == 0.432 and result.source_name.startswith("EfficientAT (published, not re-measured")
    assert 'model="someone/efficientat-mn04-hlp"' in card and "mn04_as_mAP_432.pt" in card
    assert "Post-HLP is **on**" in card and "trained on the original, unpropagated labels" in card
    assert "Fine-tuning this checkpoint propagates the training labels" in card  # config.hlp_targets is true
    assert "license: mit" in card
    assert "380 unique child-to-parent edges, and 109 classes" in card


def test_push_to_hub_uploads_the_folder_once(converted):
    out, api = converted
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    create, upload = api.calls[0][1], api.calls[1][1]
    assert create["repo_id"] == "someone/efficientat-mn04-hlp" and create["exist_ok"] is True
    assert upload["folder_path"] == str(out) and upload["repo_id"] == "someone/efficientat-mn04-hlp"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= set(upload["files"])


def test_pipeline_reproduces_the_original_figures(tagger, sample_paths):
    label2id = tagger.model.config.label2id
    for name, expected in EXPECTED_TOP.items():
        scores = _scores(tagger, str(sample_paths[name]), post_hlp=False)
        top = np.argsort(-scores)[: len(expected)]
        assert [tagger.model.config.id2label[int(i)] for i in top] == list(expected), name
        for label, value in expected.items():
            assert abs(scores[label2id[label]] - value) <= TOLERANCE, (name, label, scores[label2id[label]])


def test_post_hlp_scores_are_the_max_over_the_lookup_table(tagger, sample_paths, audioset_ontology):
    table = audioset_ontology.lookup_table()  # L[i, j]: class i propagates to class j (diagonal set)
    child = np.flatnonzero(audioset_ontology.unique_parent >= 0)
    parent = audioset_ontology.unique_parent[child]
    changed = 0
    for name in EXPECTED_TOP:
        raw = _scores(tagger, str(sample_paths[name]), post_hlp=False)
        hlp = _scores(tagger, str(sample_paths[name]), post_hlp=True)
        expected = np.where(table, raw[:, None], -np.inf).max(axis=0)
        np.testing.assert_allclose(hlp, expected, atol=1e-6)
        assert np.all(hlp[parent] >= hlp[child])  # parents never below their unambiguous children
        assert np.all(hlp >= raw - 1e-7)
        changed += int(np.sum(hlp > raw + 1e-6))
    assert changed > 0  # the sample clips do exercise propagation (e.g. Typing <- Computer keyboard)


def test_remote_code_loads_without_hlp_audio(converted, sample_paths, tagger, tmp_path):
    """A fresh interpreter that cannot import hlp_audio runs the files saved next to the weights."""
    from remote_code_helpers import remote_code_pipeline

    out, _ = converted
    report = remote_code_pipeline(out, sample_paths["typing"], tmp_path)
    for kind in ("model", "extractor"):
        assert report[kind].startswith("transformers_modules."), report
    assert report["pipeline"] == "AudioClassificationPipeline"  # transformers' own, with sigmoid scores
    tagger.model.config.post_hlp = True  # as saved
    local = {r["label"]: r["score"] for r in tagger(str(sample_paths["typing"]), top_k=3)}
    remote = {r["label"]: r["score"] for r in report["result"]}  # post-HLP ties may come in another order
    assert remote.keys() == local.keys()
    np.testing.assert_allclose([remote[label] for label in local], list(local.values()), atol=1e-6)


# -- awkward audio through the pipeline ------------------------------------------------------------------


def test_files_at_other_rates_are_resampled(tagger, sample_paths, tmp_path):
    import soundfile as sf
    import soxr

    audio, _ = sf.read(sample_paths["speech"], dtype="float32")
    speech = tagger.model.config.label2id["Speech"]
    for rate in (48000, 16000):
        path = tmp_path / f"speech_{rate}.wav"
        sf.write(path, soxr.resample(audio, 32000, rate), rate, subtype="FLOAT")
        scores = _scores(tagger, str(path), post_hlp=False)
        assert int(np.argmax(scores)) == speech, rate
        if rate > 32000:  # nothing lost: the 32 kHz figure
            assert abs(scores[speech] - EXPECTED_TOP["speech"]["Speech"]) <= TOLERANCE
    as_dict = _scores(tagger, {"array": soxr.resample(audio, 32000, 48000), "sampling_rate": 48000}, post_hlp=False)
    assert abs(as_dict[speech] - EXPECTED_TOP["speech"]["Speech"]) <= TOLERANCE


def test_stereo_files_are_downmixed(tagger, sample_paths, tmp_path):
    import soundfile as sf

    audio, _ = sf.read(sample_paths["music"], dtype="float32")
    path = tmp_path / "music_stereo.wav"
    sf.write(path, np.stack([audio, audio], axis=1), 32000)
    np.testing.assert_allclose(
        _scores(tagger, str(path), post_hlp=False), _scores(tagger, str(sample_paths["music"]), post_hlp=False), atol=1e-6
    )


def test_silent_and_short_audio(tagger, sample_paths, tmp_path):
    import soundfile as sf

    from hlp_audio.audio_loading import AudioLoadingError

    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(320000, dtype=np.float32), 32000)
    scores = _scores(tagger, str(silent), post_hlp=True)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))

    audio, _ = sf.read(sample_paths["typing"], dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, audio[:900], 32000)  # 28 ms: zero-padded to n_fft by the feature extractor
    assert np.all(np.isfinite(_scores(tagger, str(short), post_hlp=True)))
    too_short = tmp_path / "too_short.wav"
    sf.write(too_short, audio[:100], 32000)
    with pytest.raises(AudioLoadingError, match="too_short.wav is too short: 100 samples"):
        tagger(str(too_short))


def test_converter_reports_bad_checkpoints(shared_data, tmp_path):
    out = tmp_path / "out"
    checkpoint = shared_data.joinpath(*MN04_DIR, CHECKPOINT_NAME)
    audioset = shared_data / "audioset"
    with pytest.raises(EfficientATCheckpointError, match=r"with --width-mult 1: checkpoint key 'features.0.0.weight' has shape \(8, 1, 3, 3\)"):
        convert_efficientat(checkpoint, 1.0, out, audioset_dir=audioset)
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(EfficientATCheckpointError, match="foreign.pt: no 'features.0.0.weight' key; this is not an EfficientAT"):
        convert_efficientat(foreign, 0.4, out, audioset_dir=audioset)
    not_torch = tmp_path / "notes.pt"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(EfficientATCheckpointError, match="notes.pt: cannot be read as a torch checkpoint"):
        convert_efficientat(not_torch, 0.4, out, audioset_dir=audioset)
    assert not out.exists()  # nothing written on failure
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        convert_efficientat(tmp_path / "missing.pt", 0.4, out, audioset_dir=audioset)


@pytest.mark.slow
def test_converter_script_exits_2_with_the_error(shared_data, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_efficientat.py"
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "missing.pt"), "--width-mult", "0.4", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2 and "convert_efficientat: error: checkpoint" in run.stderr and "missing.pt does not exist" in run.stderr


def test_checkpoint_loader_unwraps_training_wrappers(mn04_checkpoint, tmp_path):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{key}": value for key, value in mn04_checkpoint.items()}}, wrapped)
    loaded = load_efficientat_checkpoint(wrapped)
    assert loaded.keys() == mn04_checkpoint.keys()
    assert all(torch.equal(loaded[key], mn04_checkpoint[key]) for key in loaded)
    assert size_name(0.4) == "mn04" and size_name(4.0) == "mn40" and size_name(0.75) == "mn_w0.75"
