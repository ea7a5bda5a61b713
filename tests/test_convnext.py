"""Audio ConvNeXt (Pellegrini et al.): architecture, parameter counts, conversion of original-layout checkpoints,
pipeline, remote code and training from scratch.

The real ``convnext_tiny_471mAP.pth`` cannot be downloaded here: the converter is checked on random state dicts with
the reference's names and shapes (``ConvNeXt`` of ``audioset_convnext_inf/pytorch/convnext.py``), against an
independent forward of the reference written with plain torch ops (``panns_reference`` for the front end and bn0).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panns_reference import MEL_MATRIX, batch_norm_tensors, example_clips, original_front_end, random_tensor, torchlibrosa_tensors
from hlp_audio import HLPAudioConfig, HLPAudioFeatureExtractor, HLPAudioForAudioClassification, Ontology
from hlp_audio.conversion import ConvNeXtCheckpointError, convert_convnext
from hlp_audio.conversion import from_convnext
from hlp_audio.modeling.modeling_convnext import ConvNeXtBackbone, ConvNeXtConfig

# The reference's stems by after_stem_dim: (kernel, stride, padding), as in its convnext_tiny / convnext_nano.
REFERENCE_STEMS = {"56": ((18, 4), (18, 4), (9, 0)), "252x56": ((4, 4), (4, 4), (4, 0))}
# (depths, dims, mel bins) of the reference's convnext_tiny and convnext_nano, and of a toy of the same structure
REFERENCE_SIZES = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 224),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640), 224),
    "toy": ((1, 1, 1, 1), (8, 16, 24, 32), 32),
}


def original_convnext_state_dict(size: str, stem: str = "252x56", seed: int = 0, classes: int = 527) -> dict:
    """A random state dict with the reference's names and shapes: ``bn0``, ``downsample_layers`` (stem conv + LayerNorm,
    then LayerNorm + 2x2 conv), ``stages.i.j`` (dwconv 7x7, norm, pwconv1, pwconv2, gamma), ``norm``, ``head_audioset``,
    and torchlibrosa's front end. Layer scales are random (the reference initialises them at 1e-6, which would hide
    any swapped tensor inside the blocks)."""
    depths, dims, mel_bins = REFERENCE_SIZES[size]
    kernel = REFERENCE_STEMS[stem][0]
    generator = torch.Generator().manual_seed(seed)

    def layer(prefix, shape, scale=False):
        return {
            f"{prefix}.weight": random_tensor(shape, "scale" if scale else "weight", generator),
            f"{prefix}.bias": random_tensor(shape[:1], "shift", generator),
        }

    state = batch_norm_tensors("bn0", mel_bins, generator, mean=-40.0, variance=300.0)
    state.update(layer("downsample_layers.0.0", (dims[0], 1, *kernel)))
    state.update(layer("downsample_layers.0.1", (dims[0],), scale=True))
    for index in range(1, 4):
        state.update(layer(f"downsample_layers.{index}.0", (dims[index - 1],), scale=True))
        state.update(layer(f"downsample_layers.{index}.1", (dims[index], dims[index - 1], 2, 2)))
    for index, (depth, dim) in enumerate(zip(depths, dims)):
        for block in range(depth):
            prefix = f"stages.{index}.{block}"
            state.update(layer(f"{prefix}.dwconv", (dim, 1, 7, 7)))
            state.update(layer(f"{prefix}.norm", (dim,), scale=True))
            state.update(layer(f"{prefix}.pwconv1", (4 * dim, dim)))
            state.update(layer(f"{prefix}.pwconv2", (dim, 4 * dim)))
            state[f"{prefix}.gamma"] = 0.5 * random_tensor((dim,), "scale", generator)
    state.update(layer("norm", (dims[-1],), scale=True))
    state.update(layer("head_audioset", (classes, dims[-1])))
    state.update(torchlibrosa_tensors(mel_bins))
    return state


def _channels_first_norm(hidden, weight, bias):
    mean = hidden.mean(1, keepdim=True)
    variance = (hidden - mean).pow(2).mean(1, keepdim=True)
    return weight[:, None, None] * (hidden - mean) / torch.sqrt(variance + 1e-6) + bias[:, None, None]


def original_convnext_logits(state: dict, waveforms: torch.Tensor, stem: str = "252x56") -> torch.Tensor:
    """The reference's ``ConvNeXt.forward`` in eval mode, float64: its ``clipwise_logits`` (before the sigmoid)."""
    hidden = original_front_end(state, waveforms)
    state = {key: value.double() for key, value in state.items()}
    _, stride, padding = REFERENCE_STEMS[stem]
    hidden = F.conv2d(hidden, state["downsample_layers.0.0.weight"], state["downsample_layers.0.0.bias"], stride=stride, padding=padding)
    hidden = _channels_first_norm(hidden, state["downsample_layers.0.1.weight"], state["downsample_layers.0.1.bias"])
    stage = 0
    while f"stages.{stage}.0.dwconv.weight" in state:
        if stage:
            hidden = _channels_first_norm(hidden, state[f"downsample_layers.{stage}.0.weight"], state[f"downsample_layers.{stage}.0.bias"])
            hidden = F.conv2d(hidden, state[f"downsample_layers.{stage}.1.weight"], state[f"downsample_layers.{stage}.1.bias"], stride=2)
        block = 0
        while f"stages.{stage}.{block}.dwconv.weight" in state:
            p = f"stages.{stage}.{block}"
            width = hidden.shape[1]
            branch = F.conv2d(hidden, state[f"{p}.dwconv.weight"], state[f"{p}.dwconv.bias"], padding=3, groups=width)
            branch = F.layer_norm(branch.permute(0, 2, 3, 1), (width,), state[f"{p}.norm.weight"], state[f"{p}.norm.bias"], 1e-6)
            branch = F.linear(F.gelu(F.linear(branch, state[f"{p}.pwconv1.weight"], state[f"{p}.pwconv1.bias"])), state[f"{p}.pwconv2.weight"], state[f"{p}.pwconv2.bias"])
            hidden = hidden + (state[f"{p}.gamma"] * branch).permute(0, 3, 1, 2)
            block += 1
        stage += 1
    hidden = hidden.mean(dim=3)
    hidden = hidden.max(dim=2).values + hidden.mean(dim=2)
    hidden = F.layer_norm(hidden, (hidden.shape[1],), state["norm.weight"], state["norm.bias"], 1e-6)
    return F.linear(hidden, state["head_audioset.weight"], state["head_audioset.bias"])


def save_checkpoint(state: dict, path):
    torch.save({"epoch": 10, "model": state}, path)
    return path


# -- architecture -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, stem, expected",
    [
        ("tiny", [252, 56], 28_222_767),  # the paper's figure: the public checkpoint's stem
        ("tiny", [56], 28_228_143),  # the reference's comment "tiny: 28228143": its default [56] stem
        ("nano", [252, 56], 15_288_255),
    ],
)
def test_parameter_counts(size, stem, expected):
    """What the reference counts (``requires_grad`` parameters: bn0 included, the frozen front end excluded)."""
    backbone = ConvNeXtBackbone(ConvNeXtBackbone.default_config(size).replace(after_stem_dim=stem), num_labels=527)
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("size", ["tiny", "nano"])
def test_state_dict_maps_one_to_one_onto_the_reference_layout(size):
    backbone = ConvNeXtBackbone(ConvNeXtBackbone.default_config(size), num_labels=527)
    expected = {key: tuple(value.shape) for key, value in original_convnext_state_dict(size).items() if "extractor" not in key}
    assert {from_convnext.convnext_original_key(key): tuple(value.shape) for key, value in backbone.state_dict().items()} == expected


def test_forward_shapes_geometry_and_drop_path():
    torch.manual_seed(0)
    backbone = ConvNeXtBackbone(ConvNeXtBackbone.default_config("tiny"), num_labels=527).eval()
    assert (backbone.time_axis, backbone.freq_axis, backbone.front_end) == (1, 2, "panns")
    with torch.no_grad():
        stem = backbone.stem(torch.zeros(1, 1, 1001, 224))
    assert stem.shape == (1, 96, 252, 56)  # the [252, 56] stem on a 10 s clip
    toy = ConvNeXtBackbone(ConvNeXtBackbone.default_config("toy"), num_labels=4).eval()
    features = torch.randn(2, 50, 32)
    assert toy(features).shape == (2, 4) and toy.forward_features(features).shape == (2, 32)
    torch.testing.assert_close(toy(features.unsqueeze(1)), toy(features))
    rates = [block.drop_path_rate for stage in backbone.stages for block in stage.blocks]
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.1, 18), rtol=1e-6)  # linear over all blocks, as the reference
    assert backbone.stages[0].downsample is None and all(stage.downsample is not None for stage in backbone.stages[1:])
    toy.train()
    toy(features).sum().backward()
    assert all(parameter.grad is not None for parameter in toy.parameters())


def test_initialisation_is_the_reference():
    ontology = Ontology.from_parents(["a", "b"], {"b": ["a"]})
    torch.manual_seed(0)
    config = HLPAudioConfig(ontology=ontology.to_dict(), backbone_type="convnext", backbone_config=ConvNeXtBackbone.default_config("nano").to_dict())
    backbone = HLPAudioForAudioClassification(config).backbone
    weight = backbone.stages[2].blocks[3].pointwise_expand.weight
    assert abs(weight.std().item() - 0.02) < 0.001 and weight.abs().max() <= 2.0
    block = backbone.stages[1].blocks[0]
    assert torch.all(block.layer_scale == 1e-6) and torch.all(block.norm.weight == 1) and torch.all(block.depthwise_convolution.bias == 0)
    assert torch.all(backbone.input_norm.running_var == 1) and torch.all(backbone.classifier.bias == 0)


def test_bad_inputs_and_configs_are_clear_errors():
    toy = ConvNeXtBackbone(ConvNeXtBackbone.default_config("toy"), num_labels=2)
    with pytest.raises(ValueError, match=r"ConvNeXt expects input_values of shape \(batch, frames, 32 mel bins\).*got \(2, 32, 50\)"):
        toy(torch.zeros(2, 32, 50))
    with pytest.raises(ValueError, match=r"with the \[252, 56\] stem needs at least 24 frames"):
        toy(torch.zeros(1, 23, 32))
    assert toy(torch.zeros(1, 24, 32)).shape == (1, 2)
    wide_stem = ConvNeXtBackbone(ConvNeXtBackbone.default_config("toy").replace(after_stem_dim=[56]), num_labels=2)
    with pytest.raises(ValueError, match=r"with the \[56\] stem needs at least 126 frames"):
        wide_stem(torch.zeros(1, 125, 32))
    for changes, match in [
        (dict(after_stem_dim=[100]), r"\[100\] is not one of the reference's stems"),
        (dict(depths=[1, 1, 1]), r"'depths'\] must be 4 positive ints"),
        (dict(widths=[8, 16, 0, 32]), r"'widths'\] must be 4 positive ints"),
        (dict(drop_path_rate=1.0), r"'drop_path_rate'\] must be in \[0, 1\)"),
        (dict(num_mel_bins=16), r"num_mel_bins=16 gives 4 mel positions after the \[252, 56\] stem"),
    ]:
        with pytest.raises(ValueError, match=match):
            ConvNeXtConfig.from_dict({**ConvNeXtBackbone.sizes["toy"], **changes})
    with pytest.raises(ValueError, match="unknown convnext size 'small'"):
        ConvNeXtBackbone.default_config("small")


def test_feature_extractor_is_the_panns_front_end_with_224_bins():
    extractor = ConvNeXtBackbone.build_feature_extractor(ConvNeXtBackbone.default_config("nano"))
    assert (extractor.front_end, extractor.num_mel_bins, extractor.f_min, extractor.f_max) == ("panns", 224, 50.0, 14000.0)
    features = extractor(np.zeros(320000, dtype=np.float32), sampling_rate=32000, return_tensors="pt")["input_values"]
    assert features.shape == (1, 1001, 224)


# -- conversion of original-layout checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("stem", ["252x56", "56"])
def test_converted_toy_gives_the_reference_logits(stem, audioset_dir, tmp_path):
    """Both stems, read from the stem weight: the converted model gives the independent reference forward's logits,
    and a transposed or swapped tensor shows."""
    state = original_convnext_state_dict("toy", stem, seed=1)
    out = convert_convnext(save_checkpoint(state, tmp_path / "toy.pth"), "toy", tmp_path / "out", audioset_dir=audioset_dir)
    model = HLPAudioForAudioClassification.from_pretrained(out).eval()
    assert model.config.backbone_config["after_stem_dim"] == ([252, 56] if stem == "252x56" else [56])
    extractor = HLPAudioFeatureExtractor.from_pretrained(out)
    clips = example_clips(2.0, seed=2)
    features = extractor(list(clips.numpy()), sampling_rate=32000, return_tensors="pt")
    expected = original_convnext_logits(state, clips, stem)
    assert expected.std() > 0.3
    with torch.no_grad():
        torch.testing.assert_close(model(**features).raw_logits.double(), expected, atol=1e-4 * float(expected.abs().max()), rtol=0)
    weights = model.state_dict()
    for key, corrupt in [
        ("backbone.stages.1.blocks.0.pointwise_expand.weight", lambda w: w["backbone.stages.1.blocks.0.pointwise_project.weight"].T),
        ("backbone.stages.2.blocks.0.layer_scale", lambda w: w["backbone.stages.2.blocks.0.norm.weight"]),
        ("backbone.stem.norm.weight", lambda w: w["backbone.stem.norm.bias"]),
        ("backbone.input_norm.running_mean", lambda w: w["backbone.input_norm.running_mean"].flip(0)),
    ]:
        model.load_state_dict({**weights, key: corrupt(weights).contiguous()})
        with torch.no_grad():
            wrong = model(**features).raw_logits.double()
        assert (wrong - expected).abs().max() > 0.02 * float(expected.abs().max()), key
        model.load_state_dict(weights)


@pytest.fixture(scope="module")
def converted_tiny(audioset_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("convnext_tiny")
    state = original_convnext_state_dict("tiny", seed=3)
    return state, convert_convnext(save_checkpoint(state, folder / "tiny_random.pth"), "tiny", folder / "out", audioset_dir=audioset_dir)


def test_converted_tiny_gives_the_reference_logits_and_a_card(converted_tiny):
    state, out = converted_tiny
    model = HLPAudioForAudioClassification.from_pretrained(out).eval()
    extractor = HLPAudioFeatureExtractor.from_pretrained(out)
    clips = example_clips(0.5, seed=4)
    expected = original_convnext_logits(state, clips)
    with torch.no_grad():
        ours = model(**extractor(list(clips.numpy()), sampling_rate=32000, return_tensors="pt")).raw_logits.double()
    torch.testing.assert_close(ours, expected, atol=1e-4 * float(expected.abs().max()), rtol=0)
    names = {path.name for path in out.iterdir()}
    assert {"modeling_convnext.py", "backbone.py", "panns_input.py", "modeling_passt.py", "front_ends.py"} <= names
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert (preprocessor["front_end"], preprocessor["num_mel_bins"]) == ("panns", 224)
    card = (out / "README.md").read_text()
    assert "Audio ConvNeXt-tiny, stem [252, 56] (28,222,767 parameters)" in card and "model-index" not in card


def test_pipeline_and_remote_code(converted_tiny, audioset_ontology, tmp_path):
    import soundfile as sf
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline
    from remote_code_helpers import remote_code_pipeline

    state, out = converted_tiny
    clip = example_clips(1.0, count=1, seed=6)
    path = tmp_path / "clip.wav"
    sf.write(path, clip[0].numpy(), 32000, subtype="FLOAT")
    tagger = pipeline("audio-classification", model=str(out), pipeline_class=HLPAudioClassificationPipeline)
    scores = np.zeros(527)
    for item in tagger(str(path), top_k=None):
        scores[tagger.model.config.label2id[item["label"]]] = item["score"]
    raw = original_convnext_logits(state, clip)[0].numpy()
    post_hlp = np.where(audioset_ontology.lookup_table(), raw[:, None], -np.inf).max(axis=0)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-post_hlp)), atol=1e-5)

    report = remote_code_pipeline(out, path, tmp_path)
    assert report["model"].startswith("transformers_modules.") and report["pipeline"] == "AudioClassificationPipeline"
    local = {item["label"]: item["score"] for item in tagger(str(path), top_k=3)}
    remote = {item["label"]: item["score"] for item in report["result"]}
    assert remote.keys() == local.keys()
    np.testing.assert_allclose([remote[label] for label in local], list(local.values()), atol=1e-6)


def test_published_file_is_checked_and_carries_its_map(audioset_dir, tmp_path, monkeypatch):
    published = save_checkpoint(original_convnext_state_dict("toy"), tmp_path / "convnext_tiny_471mAP.pth")
    with pytest.raises(ConvNeXtCheckpointError, match=r"convnext_tiny_471mAP.pth: md5 [0-9a-f]{32} is not the published e069ecd1c7b880268331119521c549f2"):
        convert_convnext(published, "tiny", tmp_path / "out", audioset_dir=audioset_dir)
    monkeypatch.setitem(from_convnext.CONVNEXT_PUBLISHED, published.name, ("md5", hashlib.md5(published.read_bytes()).hexdigest()))
    out = convert_convnext(published, "toy", tmp_path / "out", audioset_dir=audioset_dir)
    from huggingface_hub import ModelCard

    (result,) = ModelCard((out / "README.md").read_text()).data.eval_results
    assert result.metric_value == 0.471 and "not re-measured" in result.source_name


@pytest.mark.parametrize(
    "size, damage, match",
    [
        ("toy", lambda s: s.pop("stages.2.0.gamma"), r"no 'stages.2.0.gamma' key \(the 'stages.2.blocks.0.layer_scale' tensor"),
        ("toy", lambda s: s.update({"stages.3.1.dwconv.weight": torch.zeros(1)}), r"unexpected key 'stages.3.1.dwconv.weight'"),
        ("toy", lambda s: s.update({"downsample_layers.0.0.weight": torch.zeros(8, 1, 3, 3)}), r"'downsample_layers.0.0.weight' has kernel \(3, 3\), which is none of the reference's stems"),
        ("toy", lambda s: s.update({MEL_MATRIX: torchlibrosa_tensors(32, f_max=16000.0)[MEL_MATRIX]}), "'logmel_extractor.melW' differs from the front end"),
        ("toy", lambda s: s.update({"head_audioset.weight": torch.zeros(527, 16)}), r"'head_audioset.weight' has shape \(527, 16\) but the backbone's 'classifier.weight' is \(527, 32\)"),
        ("nano", lambda s: None, r"\(--size tiny\): 'downsample_layers.0.0.weight' has shape \(80, 1, 4, 4\) but the backbone's 'stem.convolution.weight' is \(96, 1, 4, 4\)"),  # a nano file as tiny
    ],
)
def test_mismatching_checkpoints_are_refused_naming_the_first_difference(size, damage, match, audioset_dir, tmp_path):
    state = original_convnext_state_dict(size)
    damage(state)
    checkpoint = save_checkpoint(state, tmp_path / "damaged.pth")
    with pytest.raises(ConvNeXtCheckpointError, match=match):
        convert_convnext(checkpoint, "toy" if size == "toy" else "tiny", tmp_path / "out", audioset_dir=audioset_dir)
    assert not (tmp_path / "out").exists()


def test_unreadable_foreign_files_and_bad_arguments(audioset_dir, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(ConvNeXtCheckpointError, match="foreign.pth: no 'downsample_layers.0.0.weight' key; this is not an audio ConvNeXt"):
        convert_convnext(foreign, "tiny", tmp_path / "out", audioset_dir=audioset_dir)
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        convert_convnext(tmp_path / "missing.pth", "tiny", tmp_path / "out", audioset_dir=audioset_dir)
    with pytest.raises(ValueError, match="unknown convnext size 'small'"):
        convert_convnext(foreign, "small", tmp_path / "out", audioset_dir=audioset_dir)
    checkpoint = save_checkpoint(original_convnext_state_dict("toy"), tmp_path / "toy.pth")
    with pytest.raises(ValueError, match=r"\[7, 7\] is not one of the reference's stems"):
        convert_convnext(checkpoint, "toy", tmp_path / "out", after_stem_dim=[7, 7], audioset_dir=audioset_dir)


# -- training from scratch ------------------------------------------------------------------------------------


def test_training_from_scratch_saves_a_model_the_pipeline_loads(tmp_path):
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline
    from training_helpers import train_briefly_from_scratch

    results, final = train_briefly_from_scratch(tmp_path, "convnext", "toy")
    assert results["global_step"] == 2 and 0.0 <= results["history"][0]["map_hlp_post"] <= 1.0
    config = json.loads((final / "config.json").read_text())
    assert config["backbone_type"] == "convnext" and config["backbone_config"]["widths"] == [8, 16, 24, 32]
    tagger = pipeline("audio-classification", model=str(final), pipeline_class=HLPAudioClassificationPipeline)
    result = tagger(str(tmp_path / "eval" / "clip_0001.wav"), top_k=None)
    assert len(result) == 6 and all(0.0 < item["score"] < 1.0 for item in result)
