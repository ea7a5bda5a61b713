"""PANNs CNN6: the PANNs front end, the architecture, conversion of an original-layout checkpoint, pipeline,
remote code and training from scratch.

The real ``Cnn6_mAP=0.343.pth`` cannot be downloaded here: the converter is checked on a random state dict with
the original names and shapes (built from the layout of PANNs' ``Cnn6`` / ``ConvBlock5x5``), against an
independent forward of the original model written with plain torch ops (``panns_reference``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panns_reference import (
    MEL_MATRIX,
    batch_norm_tensors,
    example_clips,
    original_front_end,
    random_tensor,
    reference_log_mel,
    torchlibrosa_tensors,
)
from hlp_audio import HLPAudioConfig, HLPAudioFeatureExtractor, HLPAudioForAudioClassification
from hlp_audio.conversion import PANNsCheckpointError, convert_panns
from hlp_audio.conversion import from_panns
from hlp_audio.modeling.front_ends import PANNsLogMelFrontEnd, slaney_mel_filter_bank
from hlp_audio.modeling.modeling_cnn6 import CNN6Backbone, CNN6Config

CHANNELS = (64, 128, 256, 512)


def original_cnn6_state_dict(seed: int = 0, classes: int = 527) -> dict:
    """A random state dict with the names and shapes of PANNs' ``Cnn6(mel_bins=64, classes_num=classes)``:
    ``bn0`` over 64 mel bins, ``conv_block{1..4}`` (``conv1``: 5x5 without bias, ``bn1``), ``fc1`` 512 -> 512,
    ``fc_audioset`` 512 -> classes, and torchlibrosa's frozen front end."""
    generator = torch.Generator().manual_seed(seed)
    state = batch_norm_tensors("bn0", 64, generator, mean=-40.0, variance=300.0)  # dB features
    previous = 1
    for index, width in enumerate(CHANNELS, start=1):
        state[f"conv_block{index}.conv1.weight"] = random_tensor((width, previous, 5, 5), "weight", generator)
        state.update(batch_norm_tensors(f"conv_block{index}.bn1", width, generator))
        previous = width
    for name, outputs in (("fc1", 512), ("fc_audioset", classes)):
        state[f"{name}.weight"] = random_tensor((outputs, 512), "weight", generator)
        state[f"{name}.bias"] = random_tensor((outputs,), "shift", generator)
    state.update(torchlibrosa_tensors(64))
    return state


def original_cnn6_logits(state: dict, waveforms: torch.Tensor) -> torch.Tensor:
    """PANNs ``Cnn6.forward`` in eval mode, in float64, before its sigmoid (``fc_audioset`` outputs)."""
    hidden = original_front_end(state, waveforms)
    state = {key: value.double() for key, value in state.items()}
    for index in range(1, 5):
        prefix = f"conv_block{index}"
        hidden = F.conv2d(hidden, state[f"{prefix}.conv1.weight"], padding=2)
        hidden = F.batch_norm(
            hidden, state[f"{prefix}.bn1.running_mean"], state[f"{prefix}.bn1.running_var"], state[f"{prefix}.bn1.weight"],
            state[f"{prefix}.bn1.bias"], training=False, eps=1e-5,
        )
        hidden = F.avg_pool2d(F.relu(hidden), kernel_size=(2, 2))
    hidden = hidden.mean(dim=3)
    hidden = hidden.max(dim=2).values + hidden.mean(dim=2)
    hidden = F.relu(F.linear(hidden, state["fc1.weight"], state["fc1.bias"]))
    return F.linear(hidden, state["fc_audioset.weight"], state["fc_audioset.bias"])


def save_checkpoint(state: dict, path):
    """PANNs' checkpoint format: the state dict under "model"."""
    torch.save({"iteration": 100000, "model": state, "sampler": None}, path)
    return path


# -- the PANNs front end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_mel_bins", [64, 224])
def test_slaney_filters_match_transformers(num_mel_bins):
    from panns_reference import slaney_filters

    ours = slaney_mel_filter_bank(num_mel_bins, 1024, 32000, 50.0, 14000.0, dtype=torch.float64).numpy().T
    np.testing.assert_allclose(ours, slaney_filters(num_mel_bins), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("num_mel_bins", [64, 224])
@pytest.mark.parametrize("clip", ["noise", "speech", "music", "typing"])
def test_front_end_matches_transformers_within_1e4_db(clip, num_mel_bins, shared_data):
    """Against transformers' float64 log-mel: within 1e-4 dB wherever the band is within 40 dB of the frame's
    loudest (a symmetric window, another padding, mel norm or range would each miss by far more). Fainter bands
    carry the float32 STFT's rounding (as torchlibrosa's float32 convolutions do): within 5e-3 dB."""
    import soundfile as sf

    if clip == "noise":
        audio = np.random.default_rng(1).standard_normal(64000).astype(np.float32) * 0.3
    else:
        audio, _ = sf.read(shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / f"{clip}.wav", dtype="float32")
    extractor = HLPAudioFeatureExtractor(front_end="panns", num_mel_bins=num_mel_bins)
    features = extractor(audio, sampling_rate=32000, return_tensors="np")["input_values"][0]
    expected = reference_log_mel(audio, num_mel_bins)
    assert features.shape == expected.shape == (1 + audio.size // 320, num_mel_bins)  # (frames, mel)
    error = np.abs(features - expected)
    loud = expected >= expected.max(axis=1, keepdims=True) - 40.0
    assert loud.mean() > 0.5
    assert error[loud].max() <= 1e-4 and error.max() <= 5e-3


def test_front_end_shapes_and_bad_parameters():
    front_end = PANNsLogMelFrontEnd()
    assert front_end(torch.zeros(3, 320000)).shape == (3, 1001, 64) and front_end.num_frames(320000) == 1001
    assert torch.all(front_end(torch.zeros(1, 2000)) == -100.0)  # silence: 10 log10(1e-10)
    with pytest.raises(ValueError, match="at least 513"):
        front_end(torch.zeros(1, 400))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 2000\)"):
        front_end(torch.zeros(1, 1, 2000))
    with pytest.raises(ValueError, match="amin must be positive"):
        PANNsLogMelFrontEnd(amin=0.0)
    with pytest.raises(ValueError, match="f_max=20000.0, nyquist=16000.0"):
        PANNsLogMelFrontEnd(f_max=20000.0)


def test_feature_extractor_front_end_choice(tmp_path):
    extractor = HLPAudioFeatureExtractor(front_end="panns")
    assert (extractor.num_mel_bins, extractor.win_length, extractor.f_min, extractor.f_max, extractor.amin) == (64, 1024, 50.0, 14000.0, 1e-10)
    assert isinstance(extractor.build_front_end(), PANNsLogMelFrontEnd)
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["front_end"] == "panns" and "preemphasis_coefficient" not in saved and saved["amin"] == 1e-10
    reloaded = HLPAudioFeatureExtractor.from_pretrained(tmp_path)
    audio = example_clips(0.5, count=1)[0].numpy()
    np.testing.assert_array_equal(
        reloaded(audio, sampling_rate=32000, return_tensors="np")["input_values"],
        extractor(audio, sampling_rate=32000, return_tensors="np")["input_values"],
    )
    # a folder saved before the choice existed (no front_end key) is EfficientAT's front end
    old = HLPAudioFeatureExtractor().to_dict()
    del old["front_end"]
    assert HLPAudioFeatureExtractor(**old).front_end == "efficientat"
    with pytest.raises(ValueError, match=r"front_end='panns' has no parameter 'preemphasis_coefficient'"):
        HLPAudioFeatureExtractor(front_end="panns", preemphasis_coefficient=0.97)
    with pytest.raises(ValueError, match=r"front_end='efficientat' has no parameter 'amin'"):
        HLPAudioFeatureExtractor(amin=1e-10)
    with pytest.raises(ValueError, match=r"unknown front_end 'librosa'; known front ends: \['efficientat', 'panns'\]"):
        HLPAudioFeatureExtractor(front_end="librosa")


# -- architecture -------------------------------------------------------------------------------------------


def test_parameter_count_is_the_published_one():
    backbone = CNN6Backbone(CNN6Backbone.default_config("base"), num_labels=527)
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == 4_837_455
    expected = {key: tuple(value.shape) for key, value in original_cnn6_state_dict().items() if key != MEL_MATRIX and "stft" not in key}
    renamed = {from_panns.cnn6_original_key(key): tuple(value.shape) for key, value in backbone.state_dict().items()}
    assert renamed == expected


def test_forward_shapes_layout_and_dropout():
    torch.manual_seed(0)
    backbone = CNN6Backbone(CNN6Backbone.default_config("tiny"), num_labels=5).eval()
    assert (backbone.time_axis, backbone.freq_axis, backbone.front_end) == (1, 2, "panns")
    features = torch.randn(3, 40, 16)  # (batch, frames, mel)
    logits = backbone(features)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(backbone(features.unsqueeze(1)), logits)
    assert backbone.forward_features(features).shape == (3, 16) and torch.all(backbone.forward_features(features) >= 0)
    assert (backbone.block_dropout.p, backbone.embedding_dropout.p) == (0.2, 0.5)  # as PANNs' Cnn6
    backbone.train()
    assert not torch.equal(backbone(features), backbone(features))  # dropout acts in training
    backbone(features).sum().backward()
    assert all(parameter.grad is not None for parameter in backbone.parameters())


def test_initialisation_is_panns():
    from hlp_audio import Ontology

    ontology = Ontology.from_parents(["a", "b"], {"b": ["a"]})
    torch.manual_seed(0)
    model = HLPAudioForAudioClassification(
        HLPAudioConfig(ontology=ontology.to_dict(), backbone_type="cnn6", backbone_config=CNN6Backbone.default_config("base").to_dict())
    )
    backbone = model.backbone
    weight = backbone.blocks[2].convolution.weight  # Xavier uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
    bound = (6.0 / (128 * 25 + 256 * 25)) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
    assert torch.all(backbone.classifier.bias == 0) and torch.all(backbone.embedding.bias == 0)
    norm = backbone.input_norm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0) and torch.all(norm.running_var == 1)


def test_bad_inputs_and_configs_are_clear_errors():
    backbone = CNN6Backbone(CNN6Backbone.default_config("tiny"), num_labels=2)
    with pytest.raises(ValueError, match=r"CNN6 expects input_values of shape \(batch, frames, 16 mel bins\).*got \(2, 16, 40\)"):
        backbone(torch.zeros(2, 16, 40))  # (batch, mel, frames): EfficientAT's layout
    with pytest.raises(ValueError, match=r"got \(40, 16\)"):
        backbone(torch.zeros(40, 16))
    with pytest.raises(ValueError, match=r"needs at least 4 frames for its 2 2x2 poolings"):
        backbone(torch.zeros(1, 3, 16))
    for changes, match in [
        (dict(channels=[]), "at least one block"),
        (dict(channels=[8, 0]), r"'channels\[1\]'\] must be a positive int"),
        (dict(kernel_size=4), "must be odd"),
        (dict(block_dropout=1.0), r"'block_dropout'\] must be in \[0, 1\)"),
        (dict(num_mel_bins=8, channels=[8, 8, 8, 8]), "num_mel_bins=8 is too few for 4 2x2 poolings"),
    ]:
        with pytest.raises(ValueError, match=match):
            CNN6Config.from_dict({"num_mel_bins": 16, **changes})
    with pytest.raises(ValueError, match="unknown CNN6Config keys"):
        CNN6Config.from_dict({"mel_bins": 64})
    with pytest.raises(ValueError, match="unknown cnn6 size 'cnn10'"):
        CNN6Backbone.default_config("cnn10")
    with pytest.raises(ValueError, match=r"reads HLPAudioFeatureExtractor\(front_end='panns'\) features, got front_end='efficientat'"):
        CNN6Backbone.build_front_end(HLPAudioFeatureExtractor(num_mel_bins=64))


# -- conversion of an original-layout checkpoint ----------------------------------------------------------------


@pytest.fixture(scope="module")
def original_state():
    return original_cnn6_state_dict(seed=0)


@pytest.fixture(scope="module")
def converted(original_state, audioset_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn6")
    checkpoint = save_checkpoint(original_state, folder / "cnn6_random.pth")
    return convert_panns(checkpoint, folder / "converted", audioset_dir=audioset_dir)


def test_converted_logits_are_the_original_pre_sigmoid_outputs(converted, original_state):
    """Every tensor lands where the architecture uses it: the converted model (features from the saved extractor)
    gives the independent original forward's logits."""
    model = HLPAudioForAudioClassification.from_pretrained(converted).eval()
    extractor = HLPAudioFeatureExtractor.from_pretrained(converted)
    clips = example_clips(2.0)
    with torch.no_grad():
        ours = model(**extractor(list(clips.numpy()), sampling_rate=32000, return_tensors="pt")).raw_logits.double()
    expected = original_cnn6_logits(original_state, clips)
    assert expected.std() > 0.5  # the random network is not degenerate
    torch.testing.assert_close(ours, expected, atol=1e-4 * float(expected.abs().max()), rtol=0)

    # the comparison sees a transposed or swapped tensor
    for key, corrupt in [
        ("backbone.embedding.weight", lambda state: state["backbone.embedding.weight"].T.contiguous()),
        ("backbone.blocks.1.normalization.running_mean", lambda state: state["backbone.blocks.1.normalization.running_var"]),
        ("backbone.input_norm.weight", lambda state: state["backbone.input_norm.bias"]),
    ]:
        state = model.state_dict()
        damaged = HLPAudioForAudioClassification.from_pretrained(converted).eval()
        damaged.load_state_dict({**state, key: corrupt(state)})
        with torch.no_grad():
            wrong = damaged(**extractor(list(clips.numpy()), sampling_rate=32000, return_tensors="pt")).raw_logits.double()
        assert (wrong - expected).abs().max() > 0.05 * float(expected.abs().max()), key


def test_pipeline_scores_are_the_sigmoid_of_post_hlp_logits(converted, original_state, audioset_ontology, tmp_path):
    import soundfile as sf
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline

    clip = example_clips(2.0, count=1, seed=5)
    path = tmp_path / "clip.wav"
    sf.write(path, clip[0].numpy(), 32000, subtype="FLOAT")
    tagger = pipeline("audio-classification", model=str(converted), pipeline_class=HLPAudioClassificationPipeline)
    result = tagger(str(path), top_k=None)
    scores = np.zeros(527)
    for item in result:
        scores[tagger.model.config.label2id[item["label"]]] = item["score"]
    raw = original_cnn6_logits(original_state, clip)[0].numpy()
    post_hlp = np.where(audioset_ontology.lookup_table(), raw[:, None], -np.inf).max(axis=0)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-post_hlp)), atol=1e-5)


def test_converted_folder_and_card(converted, audioset_ontology):
    names = {path.name for path in converted.iterdir()}
    for required in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_hlp_audio.py",
                     "modeling_cnn6.py", "panns_input.py", "feature_extraction_hlp_audio.py", "front_ends.py"):
        assert required in names, required
    config = json.loads((converted / "config.json").read_text())
    assert config["backbone_type"] == "cnn6" and config["backbone_config"]["channels"] == list(CHANNELS)
    assert config["ontology"]["labels"] == list(audioset_ontology.labels)
    preprocessor = json.loads((converted / "preprocessor_config.json").read_text())
    assert (preprocessor["front_end"], preprocessor["num_mel_bins"], preprocessor["sampling_rate"]) == ("panns", 64, 32000)
    card = (converted / "README.md").read_text()
    assert "PANNs CNN6 (4,837,455 parameters)" in card and "cnn6_random.pth" in card and "license: mit" in card
    assert "model-index" not in card  # not the published file: no published mAP


def test_remote_code_loads_without_hlp_audio(converted, tmp_path):
    import soundfile as sf
    from transformers import pipeline

    from remote_code_helpers import remote_code_pipeline

    path = tmp_path / "clip.wav"
    sf.write(path, example_clips(1.0, count=1, seed=3)[0].numpy(), 32000, subtype="FLOAT")
    report = remote_code_pipeline(converted, path, tmp_path)
    assert report["model"].startswith("transformers_modules.") and report["extractor"].startswith("transformers_modules.")
    audio, _ = sf.read(path, dtype="float32")
    local = {item["label"]: item["score"] for item in pipeline("audio-classification", model=str(converted))(audio, top_k=3)}
    remote = {item["label"]: item["score"] for item in report["result"]}
    assert remote.keys() == local.keys()
    np.testing.assert_allclose([remote[label] for label in local], list(local.values()), atol=1e-6)


def test_published_file_is_checked_and_carries_its_map(original_state, audioset_dir, tmp_path, monkeypatch):
    published = save_checkpoint(original_state, tmp_path / "Cnn6_mAP=0.343.pth")
    with pytest.raises(PANNsCheckpointError, match=r"Cnn6_mAP=0.343.pth: sha256 [0-9a-f]{64} is not the published 8a175419"):
        convert_panns(published, tmp_path / "out", audioset_dir=audioset_dir)
    assert not (tmp_path / "out").exists()
    # with this file's digest as the published one, the card carries the published mAP, marked as not re-measured
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    monkeypatch.setitem(from_panns.PANNS_PUBLISHED, published.name, ("sha256", digest))
    out = convert_panns(published, tmp_path / "out", audioset_dir=audioset_dir, repo_id="me/cnn6-hlp")
    from huggingface_hub import ModelCard

    card = ModelCard((out / "README.md").read_text())
    (result,) = card.data.eval_results
    assert result.metric_value == 0.343 and result.source_name == "PANNs (published, not re-measured here)"
    assert 'model="me/cnn6-hlp"' in card.text


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda s: s.pop("conv_block3.bn1.running_var"), r"no 'conv_block3.bn1.running_var' key \(the 'blocks.2.normalization.running_var'"),
        (lambda s: s.update({"conv_block5.conv1.weight": torch.zeros(1)}), r"unexpected key 'conv_block5.conv1.weight'"),
        (lambda s: s.update({"fc1.weight": torch.zeros(512, 256)}), r"'fc1.weight' has shape \(512, 256\) but the backbone's 'embedding.weight' is \(512, 512\)"),
        (lambda s: s.update({"conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}), r"'conv_block1.conv1.weight' has shape \(64, 1, 3, 3\)"),
        (lambda s: s.update({MEL_MATRIX: torchlibrosa_tensors(64, f_max=16000.0)[MEL_MATRIX]}), r"'logmel_extractor.melW' differs from the front end"),
        (lambda s: s.update({MEL_MATRIX: torch.zeros(513, 128)}), r"'logmel_extractor.melW' has shape \(513, 128\)"),
        (lambda s: s.update({"fc_audioset.weight": torch.zeros(10, 512)}), "the head has 10 outputs but the AudioSet ontology has 527"),
    ],
)
def test_mismatching_checkpoints_are_refused_naming_the_first_difference(original_state, audioset_dir, tmp_path, damage, match):
    state = dict(original_state)
    damage(state)
    checkpoint = save_checkpoint(state, tmp_path / "damaged.pth")
    with pytest.raises(PANNsCheckpointError, match=match):
        convert_panns(checkpoint, tmp_path / "out", audioset_dir=audioset_dir)
    assert not (tmp_path / "out").exists()


def test_unreadable_or_foreign_files_are_clear_errors(audioset_dir, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(PANNsCheckpointError, match="foreign.pth: no 'conv_block1.conv1.weight' key; this is not a PANNs CNN6"):
        convert_panns(foreign, tmp_path / "out", audioset_dir=audioset_dir)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(PANNsCheckpointError, match="notes.pth: cannot be read as a torch checkpoint"):
        convert_panns(text, tmp_path / "out", audioset_dir=audioset_dir)
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        convert_panns(tmp_path / "missing.pth", tmp_path / "out", audioset_dir=audioset_dir)
    with pytest.raises(FileNotFoundError, match="Cnn6_mAP=0.343.pth does not exist"):
        convert_panns(tmp_path / "Cnn6_mAP=0.343.pth", tmp_path / "out", audioset_dir=audioset_dir)


# -- training from scratch ------------------------------------------------------------------------------------


def test_training_from_scratch_saves_a_model_the_pipeline_loads(tmp_path):
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline
    from training_helpers import train_briefly_from_scratch

    results, final = train_briefly_from_scratch(tmp_path, "cnn6", "tiny")
    assert results["global_step"] == 2 and 0.0 <= results["history"][0]["map_hlp_post"] <= 1.0
    config = json.loads((final / "config.json").read_text())
    assert config["backbone_type"] == "cnn6" and config["backbone_config"]["num_mel_bins"] == 16
    assert json.loads((final / "preprocessor_config.json").read_text())["front_end"] == "panns"
    tagger = pipeline("audio-classification", model=str(final), pipeline_class=HLPAudioClassificationPipeline)
    result = tagger(str(tmp_path / "eval" / "clip_0000.wav"), top_k=None)
    assert len(result) == 6 and all(0.0 < item["score"] < 1.0 for item in result)
