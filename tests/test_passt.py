"""PaSST backbone: equality with the reference ``hear21passt`` model, patchout, converter, pipeline.

The reference is ``hear21passt.models.passt`` (install: ``pip install --no-deps hear21passt==0.0.26``). Its
helper module imports ``timm`` for one function, the checkpoint download, which ``pretrained=False`` never
calls; ``scripts/bench_passt.py``'s ``import_hear21passt`` imports it through a stand-in ``timm``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from hlp_audio.conversion import from_passt as convert_passt
from hlp_audio.modeling.modeling_passt import PASST_SIZES, PaSSTBackbone, PaSSTConfig
from hlp_audio.modeling.modeling_passt import passt_grid_size as _grid_size

TOLERANCE = 1e-4


def default_passt_config(size: str) -> dict:
    """The full config dict of a named PaSST size."""
    return PaSSTBackbone.default_config(size).to_dict()


def make_backbone(config: dict, num_labels: int) -> PaSSTBackbone:
    return PaSSTBackbone(PaSSTConfig.from_dict(config), num_labels)


def passt_grid_size(config: dict):
    return _grid_size(PaSSTConfig.from_dict(config))


@pytest.fixture(scope="module")
def reference():
    """``hear21passt.models.passt``, imported offline through a stand-in ``timm``."""
    return convert_passt.import_hear21passt()


def _run_reference(model, mel: torch.Tensor) -> torch.Tensor:
    """Logits of a hear21passt PaSST for mel (batch, bands, frames); silences its prints and size warnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits, _features = model(mel.unsqueeze(1))
    return logits


def _perturb_(model: torch.nn.Module, seed: int = 0) -> None:
    """Randomise every parameter (LayerNorms start at 1/0 and biases at 0), so that any swapped key shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def _small_reference(reference, *, stride: int, max_length: int, num_classes: int = 7, **patchout):
    model = reference.PaSST(
        img_size=(128, max_length),
        patch_size=16,
        stride=stride,
        in_chans=1,
        num_classes=num_classes,
        embed_dim=64,
        depth=2,
        num_heads=4,
        distilled=True,
        **patchout,
    )
    _perturb_(model)
    return model


def _convert(reference_model, **config_overrides) -> PaSSTBackbone:
    state_dict = convert_passt.convert_passt_state_dict(reference_model.state_dict())
    base = {**default_passt_config("s"), **config_overrides}
    config = convert_passt.passt_config_from_state_dict(state_dict, base, num_attention_heads=4)
    num_labels = state_dict["classifier.dense.weight"].shape[0]
    model = make_backbone(config, num_labels)
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.fixture(scope="module")
def speech_mel(shared_data):
    """Real log-mel input: the 10 s speech sample through HLPAudioFeatureExtractor (PaSST's front end)."""
    import soundfile

    from hlp_audio.modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor

    audio, rate = soundfile.read(shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / "speech.wav")
    features = HLPAudioFeatureExtractor()(audio.astype("float32"), sampling_rate=rate, return_tensors="pt")
    return features["input_values"]  # (1, 128, 1000)


# --------------------------------------------------------------------------------------------------------------
# Equality with the reference implementation


def test_passt_s_matches_reference_get_model(reference, speech_mel):
    """PaSST-S as built by hear21passt's get_model(pretrained=False), converted: equal logits in eval mode."""
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        original = reference.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=527)
    _perturb_(original)
    original.eval()
    state_dict = convert_passt.convert_passt_state_dict(original.state_dict())
    config = convert_passt.passt_config_from_state_dict(state_dict)  # variant inferred from the 12 x 99 grid
    assert config == default_passt_config("s")
    ours = make_backbone(config, 527)
    ours.load_state_dict(state_dict, strict=True)
    ours.eval()
    # A 3 s excerpt of the real clip keeps this CPU test short; the full grid is covered by the strided tests.
    mel = speech_mel[:, :, 200:500]
    with torch.no_grad():
        torch.testing.assert_close(ours(mel), _run_reference(original, mel), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("stride", [10, 12, 14, 16])
def test_strided_variants_match_reference(reference, stride):
    """Every public stride, at the training length and at shorter lengths (first time positions used)."""
    max_length = 200
    original = _small_reference(reference, stride=stride, max_length=max_length).eval()
    ours = _convert(original, frequency_stride=stride, time_stride=stride, max_length=max_length).eval()
    generator = torch.Generator().manual_seed(stride)
    for frames in (max_length, max_length - 3, 57, 16):
        mel = torch.randn(3, 128, frames, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(ours(mel), _run_reference(original, mel), atol=TOLERANCE, rtol=0)


def test_training_mode_patchout_matches_reference_for_same_seed(reference):
    """Train mode: with the same CPU seed both models drop the same time frames, bands and patches."""
    patchout = dict(s_patchout_t=5, s_patchout_f=3, u_patchout=11)
    original = _small_reference(reference, stride=10, max_length=150, **patchout).train()
    ours = _convert(original, max_length=150, **patchout).train()
    mel = torch.randn(2, 128, 150, generator=torch.Generator().manual_seed(1))
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = _run_reference(original, mel)
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(mel), expected, atol=TOLERANCE, rtol=0)


def test_longer_input_than_training_length(reference):
    """The reference cannot add its time embedding to a longer grid; ours interpolates it."""
    original = _small_reference(reference, stride=10, max_length=100).eval()
    ours = _convert(original, max_length=100).eval()
    mel = torch.randn(2, 128, 230)
    with pytest.raises(RuntimeError):
        _run_reference(original, mel)
    with torch.no_grad():
        logits = ours(mel)
        embedding = ours.embeddings.time_positions(22)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    trained = ours.embeddings.time_position_embeddings
    assert embedding.shape == (1, 64, 1, 22)
    # Linear interpolation: every stretched position lies between the trained values around it.
    assert torch.all(embedding.amax(-1) <= trained.amax(-1) + 1e-6)
    assert torch.all(embedding.amin(-1) >= trained.amin(-1) - 1e-6)
    torch.testing.assert_close(ours.embeddings.time_positions(7), trained[..., :7])


# --------------------------------------------------------------------------------------------------------------
# Patchout


def _sequence_lengths(model: PaSSTBackbone, mel: torch.Tensor) -> list[int]:
    lengths = []
    handle = model.layers[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        model(mel)
    finally:
        handle.remove()
    return lengths


def test_patchout_on_in_train_off_in_eval():
    config = {**default_passt_config("tiny"), "s_patchout_t": 3, "s_patchout_f": 4, "u_patchout": 5}
    model = make_backbone(config, 4)
    mel = torch.randn(2, 128, 100)
    bands, columns = 12, 9  # (128 - 16) // 10 + 1, (100 - 16) // 10 + 1

    model.eval()
    assert _sequence_lengths(model, mel) == [2 + bands * columns]
    with torch.no_grad():
        torch.testing.assert_close(model(mel), model(mel), atol=0, rtol=0)

    model.train()
    assert _sequence_lengths(model, mel) == [2 + (bands - 4) * (columns - 3) - 5]
    torch.manual_seed(0)
    first = model(mel)
    torch.manual_seed(1)
    second = model(mel)
    assert not torch.allclose(first, second)


def test_structured_patchout_drops_whole_frames_and_bands():
    """In train mode every kept token comes from a kept (band, column) pair of the grid, shared by the batch."""
    config = {**default_passt_config("tiny"), "s_patchout_t": 4, "s_patchout_f": 5, "u_patchout": 0}
    model = make_backbone(config, 3).train()
    captured = []
    handle = model.layers[0].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    mel = torch.randn(2, 128, 100)
    torch.manual_seed(3)
    model(mel)
    handle.remove()
    tokens = captured[0][:, 2:]  # drop the class / distillation tokens

    with torch.no_grad():
        model.eval()
        patches = model.embeddings.patch_embeddings(mel.unsqueeze(1))
        patches = patches + model.embeddings.frequency_position_embeddings + model.embeddings.time_positions(9)
    torch.manual_seed(3)
    kept_columns = torch.randperm(9)[: 9 - 4].sort().values
    kept_bands = torch.randperm(12)[: 12 - 5].sort().values
    expected = patches[:, :, kept_bands][:, :, :, kept_columns].flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected)


def test_patchout_never_drops_every_frame_of_a_short_input():
    config = {**default_passt_config("tiny"), "s_patchout_t": 40, "s_patchout_f": 20, "u_patchout": 10_000}
    model = make_backbone(config, 3).train()
    assert _sequence_lengths(model, torch.randn(2, 128, 30)) == [2 + 1]


def test_gradients_reach_every_parameter_in_training():
    model = make_backbone(default_passt_config("tiny"), 5).train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.randn(2, 128, 100)), torch.ones(2, 5))
    loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


# --------------------------------------------------------------------------------------------------------------
# Configs, initialisation and errors


def test_public_variant_grids():
    assert passt_grid_size(default_passt_config("s")) == (12, 99)
    assert passt_grid_size(default_passt_config("passt-s-f128-p16-s12")) == (10, 83)
    assert passt_grid_size(default_passt_config("passt-s-f128-p16-s14")) == (9, 71)
    assert passt_grid_size(default_passt_config("passt-s-f128-p16-s16")) == (8, 62)
    assert passt_grid_size(default_passt_config("passt-s-f128-20sec-p16-s10")) == (12, 200)
    assert default_passt_config("base") == default_passt_config("passt-s-f128-p16-s10")
    # Patchout defaults never drop a whole axis of the variant's grid.
    for name, overrides in PASST_SIZES.items():
        config = PaSSTConfig.from_dict(overrides)
        bands, columns = _grid_size(config)
        assert config.s_patchout_f < bands and config.s_patchout_t < columns, name


def test_fresh_model_is_initialised():
    from hlp_audio import HLPAudioConfig, HLPAudioForAudioClassification

    config = HLPAudioConfig(num_labels=5, backbone_type="passt", backbone_config=default_passt_config("tiny"))
    model = HLPAudioForAudioClassification(config).backbone  # initialised through the backbone's hook
    embeddings = model.embeddings
    for parameter in (embeddings.time_position_embeddings, embeddings.cls_token, model.layers[0].attention.qkv.weight):
        assert 0.005 < parameter.std().item() < 0.03
    assert torch.equal(model.layernorm.weight, torch.ones(32))
    assert torch.equal(model.classifier.dense.bias, torch.zeros(5))
    assert isinstance(model.classifier.dense, torch.nn.Linear) and (model.time_axis, model.freq_axis) == (2, 1)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 64, 100), r"\(batch, 128 mel bins, frames\), got \(2, 64, 100\)"), ((128, 100), r"got \(128, 100\)"),
     ((2, 128, 10), r"at least patch_size=16 frames.*\(2, 128, 10\)")],
)
def test_bad_input_shape_is_named(shape, message):
    model = make_backbone(default_passt_config("tiny"), 3)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hiden_size": 32}, r"unknown PaSSTConfig keys \['hiden_size'\]"),
        ({"num_attention_heads": 5}, r"hidden_size \(32\) must be a multiple of num_attention_heads \(5\)"),
        ({"s_patchout_t": -1}, r"backbone_config\['s_patchout_t'\] must be a non-negative int, got -1"),
        ({"time_stride": 0}, r"backbone_config\['time_stride'\] must be positive"),
        ({"drop_path_rate": 1.5}, r"backbone_config\['drop_path_rate'\] must be in \[0, 1\)"),
        ({"hidden_act": "swishy"}, r"'swishy' is not a known activation"),
        ({"frequency_stride": 8}, r"give 15 patch rows but 16 frequency positions"),
    ],
)
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_backbone({**default_passt_config("tiny"), **overrides}, 3)


def test_unknown_size_and_bad_num_labels():
    with pytest.raises(ValueError, match=r"unknown passt size 'huge'"):
        default_passt_config("huge")
    with pytest.raises(ValueError, match=r"num_labels must be a positive int, got 0"):
        make_backbone(default_passt_config("tiny"), 0)


# --------------------------------------------------------------------------------------------------------------
# Converter errors


def test_converter_rejects_foreign_keys_and_files(reference, tmp_path):
    state_dict = _small_reference(reference, stride=10, max_length=100).state_dict()
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"unexpected key 'pos_embed' \(shape \(1, 3, 64\)\)"):
        convert_passt.convert_passt_state_dict({**state_dict, "pos_embed": torch.zeros(1, 3, 64)})
    flat = {**state_dict, "patch_embed.proj.weight": state_dict["patch_embed.proj.weight"].flatten(1)}
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"4-d conv weight, got shape \(64, 256\)"):
        convert_passt.convert_passt_state_dict(flat)

    converted = convert_passt.convert_passt_state_dict(state_dict)
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"grid \(12, 10\) .* matches PaSST variants \[\]"):
        convert_passt.passt_config_from_state_dict(converted)
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"\(12, 10\) does not match the config's \(12, 99\)"):
        convert_passt.passt_config_from_state_dict(converted, default_passt_config("s"))

    not_passt = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, not_passt)
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"resnet\.pt: no 'time_new_pos_embed' key"):
        convert_passt.load_passt_checkpoint(not_passt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(convert_passt.PaSSTCheckpointError, match=r"garbage\.pt: cannot be read"):
        convert_passt.load_passt_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        convert_passt.load_passt_checkpoint(tmp_path / "missing.pt")


def test_converter_unwraps_training_checkpoints(reference, tmp_path):
    state_dict = _small_reference(reference, stride=10, max_length=100).state_dict()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"net.{key}": value for key, value in state_dict.items()}}, path)
    loaded = convert_passt.load_passt_checkpoint(path)
    assert sorted(loaded) == sorted(state_dict)
    assert all(torch.equal(loaded[key], state_dict[key]) for key in state_dict)


# --------------------------------------------------------------------------------------------------------------
# Converted model: HLPAudioForAudioClassification, pipeline, trust_remote_code


@pytest.fixture(scope="module")
def converted_folder(reference, audioset_dir, shared_data, tmp_path_factory):
    """A small random PaSST with PaSST-S's 12 x 99 grid and 527 classes, saved as a checkpoint file and
    converted with the script's command line; returns (reference model, output folder)."""
    torch.manual_seed(0)
    original = _small_reference(reference, stride=10, max_length=998, num_classes=527).eval()
    folder = tmp_path_factory.mktemp("passt")
    checkpoint = folder / "passt-small-f128-p16-s10.pt"
    torch.save(original.state_dict(), checkpoint)
    speech = shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / "speech.wav"
    out = folder / "converted"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        convert_passt.convert_passt(
            checkpoint, out, num_attention_heads=4, audioset_dir=audioset_dir, check_files=[speech]
        )
    assert "reproduces the converted logits" in printed.getvalue()
    assert "speech.wav: " in printed.getvalue()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "PaSST passt-custom (patch 16, stride 10" in card and "s_patchout_t=40, s_patchout_f=4" in card
    return original, out


def test_published_map_and_missing_files(tmp_path):
    assert convert_passt.published_map(Path("passt-s-f128-p16-s10-ap.476-swa.pt")) == 0.476
    assert convert_passt.published_map(Path("passt-l-kd-ap.47.pt")) == 0.47
    assert convert_passt.published_map(Path("my-passt.pt")) is None
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        convert_passt.convert_passt(tmp_path / "missing.pt", tmp_path / "out")


def test_converted_model_matches_reference_with_and_without_post_hlp(converted_folder, speech_mel, audioset_ontology):
    from hlp_audio import propagate_scores
    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    original, out = converted_folder
    model = HLPAudioForAudioClassification.from_pretrained(out).eval()
    assert model.config.backbone_type == "passt" and model.config.num_labels == 527
    assert model.config.backbone_config["s_patchout_t"] == 40  # PaSST-S's patchout, for fine-tuning
    assert model.config.id2label[0] == "Speech"
    expected = _run_reference(original, speech_mel)
    with torch.no_grad():
        model.config.post_hlp = False
        torch.testing.assert_close(model(input_values=speech_mel).logits, expected, atol=TOLERANCE, rtol=0)
        model.config.post_hlp = True
        torch.testing.assert_close(
            model(input_values=speech_mel).logits, propagate_scores(expected, audioset_ontology), atol=TOLERANCE, rtol=0
        )


TYPING_WAV = ("models", "efficientat_mn04_as", "sample_audio", "typing.wav")


def _check_top5(predictions, original, wav: Path, ontology) -> None:
    """Pipeline predictions must be the reference's sigmoid(post-HLP(logits)) top 5 on the extractor's features."""
    import soundfile

    from hlp_audio import propagate_scores
    from hlp_audio.modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor

    audio, rate = soundfile.read(wav, dtype="float32")
    mel = HLPAudioFeatureExtractor()(audio, sampling_rate=rate, return_tensors="pt")["input_values"]
    scores = torch.sigmoid(propagate_scores(_run_reference(original, mel), ontology))[0]
    # Post-HLP makes a parent tie with its best child: compare the sets of labels, then the sorted scores.
    values, indices = scores.sort(descending=True, stable=True)
    assert {p["label"] for p in predictions} == {ontology.id2label[int(index)] for index in indices[:5]}
    torch.testing.assert_close(torch.tensor([p["score"] for p in predictions]), values[:5], atol=TOLERANCE, rtol=0)


def test_converted_model_runs_through_pipeline(converted_folder, shared_data, audioset_ontology):
    from transformers import pipeline

    from hlp_audio import HLPAudioClassificationPipeline

    original, out = converted_folder
    wav = shared_data.joinpath(*TYPING_WAV)
    tagger = pipeline("audio-classification", model=str(out), pipeline_class=HLPAudioClassificationPipeline)
    predictions = tagger(str(wav), top_k=5)
    _check_top5(predictions, original, wav, audioset_ontology)


@pytest.mark.slow
def test_converted_model_runs_with_trust_remote_code_without_hlp_audio(
    converted_folder, shared_data, audioset_ontology
):
    """A fresh interpreter that cannot import hlp_audio runs the model files saved next to the weights
    (modeling_passt.py included) and the pipeline saved with them."""
    original, out = converted_folder
    wav = shared_data.joinpath(*TYPING_WAV)
    assert (out / "modeling_passt.py").is_file()
    script = f"""
import json, sys
class BlockHLPAudio:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hlp_audio":
            raise ImportError("hlp_audio is blocked in this test")
sys.meta_path.insert(0, BlockHLPAudio())
import soundfile
from transformers import pipeline
tagger = pipeline("audio-classification", model={str(out)!r}, trust_remote_code=True)
backbone = type(tagger.model.backbone)
audio, rate = soundfile.read({str(wav)!r}, dtype="float32")  # transformers' own pipeline needs ffmpeg for paths
print(json.dumps({{"module": backbone.__module__, "name": backbone.__name__,
                   "predictions": tagger(audio, top_k=5)}}))
"""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(out.parent / "hf")}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=out.parent, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.") and result["name"] == "PaSSTBackbone"
    _check_top5(result["predictions"], original, wav, audioset_ontology)


def test_wrapper_round_trip_gradient_checkpointing_and_linear_probing(audioset_ontology, tmp_path):
    from hlp_audio import HLPAudioConfig, HLPAudioForAudioClassification

    config = HLPAudioConfig(
        ontology=audioset_ontology.to_dict(), backbone_type="passt", backbone_config=default_passt_config("tiny")
    )
    torch.manual_seed(0)
    model = HLPAudioForAudioClassification(config)
    positions = model.backbone.embeddings.time_position_embeddings
    assert 0.005 < positions.std().item() < 0.03  # PaSST's init reached the backbone's own parameters
    model.save_pretrained(tmp_path)
    reloaded = HLPAudioForAudioClassification.from_pretrained(tmp_path)
    for (name, saved), loaded in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(saved, loaded), name

    mel = torch.randn(2, 128, 100)
    labels = (torch.rand(2, 527) < 0.02).float()
    gradients = []
    for checkpointing in (False, True):
        if checkpointing:
            reloaded.activation_checkpointing_enable()
        reloaded.train().zero_grad()
        torch.manual_seed(5)  # same patchout in both runs
        reloaded(input_values=mel, labels=labels).loss.backward()
        gradients.append(reloaded.backbone.layers[0].attention.qkv.weight.grad.clone())
    assert reloaded.backbone.layers[0].gradient_checkpointing
    torch.testing.assert_close(gradients[0], gradients[1])

    reloaded.freeze_backbone()
    trainable = {name for name, parameter in reloaded.named_parameters() if parameter.requires_grad}
    assert trainable == {f"backbone.classifier.{part}" for part in
                         ("layernorm.weight", "layernorm.bias", "dense.weight", "dense.bias")}
