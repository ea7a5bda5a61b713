"""HLPAudioConfig / HLPAudioForAudioClassification: post-HLP in forward, loss, AST conversion, round trips,
remote code without hlp-audio installed, registration, and the model card."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
)

from hlp_audio import HLPAudioConfig, HLPAudioForAudioClassification, Ontology, propagate_labels
from hlp_audio.conversion import convert_ast, hlp_tagger_from_ast
from hlp_audio.hub import HLPModelCard, MAPResult
from hlp_audio.modeling.modeling_ast_backbone import ASTBackbone
from hlp_audio.modeling.modeling_hlp_audio import BACKBONES
from hlp_audio.registration import register_with_transformers

TINY = ASTBackbone.default_config("tiny").to_dict()  # 64 frames x 32 mel bins


def default_ast_config(size):
    return ASTBackbone.default_config(size).to_dict()


@pytest.fixture(scope="module", autouse=True)
def _registered():
    assert register_with_transformers()


def build_tiny_ast(ontology: Ontology, seed: int = 0) -> ASTForAudioClassification:
    torch.manual_seed(seed)
    names = dict(enumerate(ontology.names))
    config = ASTConfig(**TINY, id2label=names, label2id={name: i for i, name in names.items()})
    return ASTForAudioClassification(config).eval()


@pytest.fixture(scope="module")
def tiny_ast(audioset_ontology):
    return build_tiny_ast(audioset_ontology)


@pytest.fixture(scope="module")
def hlp_model(tiny_ast, audioset_ontology):
    return hlp_tagger_from_ast(tiny_ast, audioset_ontology)


@pytest.fixture(scope="module")
def saved_dir(hlp_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hlp_tiny_ast")
    hlp_model.save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=TINY["num_mel_bins"], max_length=TINY["max_length"]).save_pretrained(folder)
    return folder


def _features(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, TINY["max_length"], TINY["num_mel_bins"], generator=torch.Generator().manual_seed(seed))


def _reference_post_hlp(logits: torch.Tensor, ontology: Ontology) -> torch.Tensor:
    """Brute force over the lookup table L: out[j] = max over i with L[i, j] of logits[i] (any sign)."""
    table = torch.from_numpy(ontology.lookup_table())
    masked = torch.where(table, logits.unsqueeze(-1), torch.tensor(-torch.inf, dtype=logits.dtype))
    return masked.amax(dim=-2)


# ---------------------------------------------------------------------------------------- config
def test_config_carries_the_ontology_and_labels(audioset_ontology):
    config = HLPAudioConfig(ontology=audioset_ontology.to_dict(), backbone_config=default_ast_config("tiny"))
    assert config.num_labels == 527
    assert config.problem_type == "multi_label_classification"
    assert config.id2label[0] == "Speech" and config.id2label[526] == audioset_ontology.names[526]
    assert config.label2id == {name: index for index, name in config.id2label.items()}
    assert Ontology.from_dict(config.ontology) == audioset_ontology
    descendant, ancestor = config.ancestor_pairs()
    np.testing.assert_array_equal(descendant, audioset_ontology.ancestor_pairs[0])
    np.testing.assert_array_equal(ancestor, audioset_ontology.ancestor_pairs[1])
    assert config.post_hlp and config.hlp_targets and config.backbone_type == "ast"


def test_config_round_trip(audioset_ontology, tmp_path):
    config = HLPAudioConfig(
        ontology=audioset_ontology.to_dict(), post_hlp=False, hlp_targets=False, backbone_config=default_ast_config("tiny")
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hlp_audio"
    assert saved["auto_map"]["AutoConfig"] == "configuration_hlp_audio.HLPAudioConfig"
    assert "custom_pipelines" not in saved  # nothing asks pipeline() for remote code
    # the class names are stored once, in the ontology: id2label / label2id are derived when loading
    assert "id2label" not in saved and "label2id" not in saved
    text = (tmp_path / "config.json").read_text()
    assert text.count('"Speech"') == 1 and len(text) < 40_000  # was 61 kB, the names written three times
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, HLPAudioConfig)
    assert loaded.ontology == config.ontology and loaded.id2label == config.id2label
    assert (loaded.post_hlp, loaded.hlp_targets, loaded.backbone_config) == (False, False, default_ast_config("tiny"))


def test_config_disambiguates_duplicate_names():
    ontology = Ontology.from_parents(["/m/a", "/m/b", "/m/c"], {"/m/a": ["/m/c"]}, names=["Hum", "Hum", "Noise"])
    config = HLPAudioConfig(ontology=ontology.to_dict())
    assert config.id2label == {0: "Hum (/m/a)", 1: "Hum (/m/b)", 2: "Noise"}
    assert len(config.label2id) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ontology={"labels": ["a", "b"], "parents": [[1], [5]]}), r"invalid ontology: class 1 \('b'\) has parent index 5, outside \[0, 2\)"),
        (dict(ontology={"labels": ["a", "b"], "parents": [[1], [0]]}), "invalid ontology: .*cycle"),
        (dict(ontology={"labels": ["a", "b"], "parents": [[1]]}), "invalid ontology: 1 parent lists for 2 labels"),
        (dict(ontology={"labels": ["a"], "parents": [[]], "format": "other/2"}), "invalid ontology: unknown ontology dict format 'other/2'"),
        (dict(ontology={"labels": ["a", "b"], "parents": [[], []]}, num_labels=3), "num_labels=3 but the ontology has 2"),
        (dict(ontology={"labels": ["a", "b"], "parents": [[], []]}, id2label={0: "a"}), "id2label has 1 entries"),
        (dict(num_labels=2, problem_type="single_label_classification"), "problem_type must be 'multi_label_classification'"),
        (dict(num_labels=2, backbone_type=""), "backbone_type must be a non-empty string"),
    ],
)
def test_config_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HLPAudioConfig(**kwargs)


def test_config_field_types_are_checked():
    from huggingface_hub.errors import StrictDataclassFieldValidationError

    with pytest.raises(StrictDataclassFieldValidationError, match="post_hlp"):
        HLPAudioConfig(num_labels=2, post_hlp="yes")
    with pytest.raises(StrictDataclassFieldValidationError, match="backbone_config"):
        HLPAudioConfig(num_labels=2, backbone_config=[1, 2])
    with pytest.raises(StrictDataclassFieldValidationError, match="ontology"):
        HLPAudioConfig(ontology=Ontology.from_parents(["a"], {}))  # pass Ontology.to_dict()


# ---------------------------------------------------------------------------------------- forward
def test_from_ast_without_post_hlp_is_the_ast_bit_for_bit(tiny_ast, audioset_ontology):
    model = hlp_tagger_from_ast(tiny_ast, audioset_ontology, post_hlp=False)
    inputs = _features()
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, tiny_ast(inputs).logits)
    assert sorted(BACKBONES) == sorted(set(BACKBONES)) and "ast" in BACKBONES


def test_post_hlp_matches_the_lookup_table_and_the_peer_package(hlp_model, tiny_ast, audioset_ontology):
    inputs = _features(batch=8)
    with torch.no_grad():
        raw = tiny_ast(inputs).logits
        out = hlp_model(inputs).logits
    assert (raw < 0).any() and (raw > 0).any()  # logits of both signs
    assert torch.equal(out, _reference_post_hlp(raw, audioset_ontology))
    assert not torch.equal(out, raw)
    peer = pytest.importorskip("hierarchical_label_propagation")
    # The authors' lookup table works on probabilities; the sigmoid is monotone, so it commutes with the max.
    assert torch.equal(out.sigmoid(), peer.HLP().propagate(raw.sigmoid()))


def test_parents_never_below_unambiguous_children(hlp_model, audioset_ontology):
    with torch.no_grad():
        logits = hlp_model(_features(batch=4, seed=5)).logits
    child, parent = audioset_ontology.edges.T
    assert (logits[:, parent] >= logits[:, child]).all()


def test_post_hlp_switches_at_run_time(hlp_model, tiny_ast):
    inputs = _features(batch=2)
    hlp_model.config.post_hlp = False
    try:
        with torch.no_grad():
            assert torch.equal(hlp_model(inputs).logits, tiny_ast(inputs).logits)
    finally:
        hlp_model.config.post_hlp = True


def test_gradients_flow_through_post_hlp(hlp_model, audioset_ontology):
    child, parent = (int(i) for i in audioset_ontology.edges[0])  # "Male speech" -> "Speech"
    raw = torch.zeros(1, 527)
    raw[0, child], raw[0, parent] = 3.0, -1.0
    raw.requires_grad_(True)
    hlp_model.propagate_logits(raw)[0, parent].backward()
    assert raw.grad[0, child] == 1.0 and raw.grad[0, parent] == 0.0  # the max came from the child
    assert raw.grad.abs().sum() == 1.0
    # end to end: the loss reaches every trainable parameter of the head and the body
    hlp_model.zero_grad()
    inputs = _features(batch=2)
    labels = torch.zeros(2, 527)
    labels[:, child] = 1.0
    hlp_model(inputs, labels=labels).loss.backward()
    assert hlp_model.classifier.dense.weight.grad.abs().sum() > 0
    assert hlp_model.backbone.audio_spectrogram_transformer.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    hlp_model.zero_grad()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_post_hlp_keeps_the_dtype(hlp_model, audioset_ontology, dtype):
    raw = torch.randn(4, 527).to(dtype)
    out = hlp_model.propagate_logits(raw)
    assert out.dtype == dtype and out.device == raw.device
    assert torch.equal(out, _reference_post_hlp(raw.float(), audioset_ontology).to(dtype))


def test_bfloat16_model_forward(tiny_ast, audioset_ontology):
    model = hlp_tagger_from_ast(tiny_ast, audioset_ontology).to(torch.bfloat16)
    with torch.no_grad():
        logits = model(_features(batch=2).to(torch.bfloat16)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    child, parent = audioset_ontology.edges.T
    assert (logits[:, parent] >= logits[:, child]).all()


def test_loss_is_bce_against_propagated_targets(hlp_model, audioset_ontology):
    inputs = _features(batch=4, seed=9)
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.random((4, 527)) < 0.02).float()
    labels[0, int(audioset_ontology.edges[0, 0])] = 1.0  # a child whose parent is off
    with torch.no_grad():
        out = hlp_model(inputs, labels=labels)
        raw_logits = hlp_model.backbone(inputs)  # the loss is on the logits before post-HLP
        assert not torch.equal(raw_logits, out.logits)
        propagated = propagate_labels(labels, audioset_ontology)
        assert not torch.equal(propagated, labels)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(raw_logits, propagated)
        assert torch.allclose(out.loss, expected, rtol=1e-6)
        hlp_model.config.hlp_targets = False
        try:
            plain = hlp_model(inputs, labels=labels).loss
        finally:
            hlp_model.config.hlp_targets = True
        assert torch.allclose(plain, torch.nn.functional.binary_cross_entropy_with_logits(raw_logits, labels), rtol=1e-6)
        assert not torch.allclose(plain, out.loss)
        # boolean labels are accepted
        assert torch.allclose(hlp_model(inputs, labels=labels.bool()).loss, out.loss)
        with pytest.raises(ValueError, match=r"labels of shape \(4, 526\) do not match the logits \(4, 527\)"):
            hlp_model(inputs, labels=labels[:, :526])
        broken = labels.clone()
        broken[1, 7] = float("nan")
        with pytest.raises(ValueError, match=r"labels must be multi-hot or soft targets in \[0, 1\]; labels\(1, 7\) is nan"):
            hlp_model(inputs, labels=broken)
        broken[1, 7] = 2.0
        with pytest.raises(ValueError, match=r"labels\(1, 7\) is 2.0"):
            hlp_model(inputs, labels=broken)


def _output_layer(model) -> torch.nn.Linear:
    layers = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels]
    assert len(layers) == 1
    return layers[0]


def test_loss_mask_takes_the_loss_over_the_kept_classes_only(hlp_model, audioset_ontology):
    """Partial labels: masked classes are unknown (zero gradient to their head rows), not negative."""
    inputs = _features(batch=4, seed=11)
    child, parent = (int(i) for i in audioset_ontology.edges[0])
    labels = torch.zeros(4, 527)
    labels[0, child] = 1.0  # the parent's target comes from propagation (hlp_targets is on)
    labels[1, 5] = 1.0
    keep = torch.zeros(527, dtype=torch.bool)
    keep[[child, parent, 5, 300]] = True  # 300: kept, a negative on every clip
    masked = 400
    assert not keep[masked]
    hlp_model.zero_grad()
    loss = hlp_model(inputs, labels=labels, loss_mask=keep).loss
    loss.backward()
    weight_grad, bias_grad = _output_layer(hlp_model).weight.grad, _output_layer(hlp_model).bias.grad
    try:
        # exactly zero for every masked class's head row, non-zero for the kept ones
        assert torch.count_nonzero(weight_grad[~keep]) == 0 and torch.count_nonzero(bias_grad[~keep]) == 0
        assert (weight_grad[keep].abs().sum(dim=1) > 0).all() and (bias_grad[keep] != 0).all()
        with torch.no_grad():
            # BCE over the kept classes, written out independently of F.binary_cross_entropy_with_logits
            raw = hlp_model.backbone(inputs)[:, keep].double()
            targets = torch.from_numpy(propagate_labels(labels.numpy(), audioset_ontology))[:, keep].double()
            assert targets[0, keep.nonzero().flatten().tolist().index(parent)] == 1.0
            expected = -(targets * torch.log(torch.sigmoid(raw)) + (1 - targets) * torch.log(1 - torch.sigmoid(raw))).mean()
            assert abs(loss.item() - expected.item()) < 1e-5 * expected.item()
            full = hlp_model(inputs, labels=labels).loss
            assert not torch.isclose(full, loss)  # the mask changes the loss
            # 0/1 masks are accepted; an all-True mask is the unmasked loss
            assert torch.equal(hlp_model(inputs, labels=labels, loss_mask=keep.float()).loss, loss)
            assert torch.equal(hlp_model(inputs, labels=labels, loss_mask=torch.ones(527, dtype=torch.bool)).loss, full)
    finally:
        hlp_model.zero_grad()


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(526, dtype=torch.bool), r"loss_mask of shape \(526,\): expected one value per class, \(527,\)"),
        (torch.ones(2, 527, dtype=torch.bool), r"loss_mask of shape \(2, 527\)"),
        (torch.full((527,), 0.5), "loss_mask must be bool or 0/1 values"),
        (torch.zeros(527, dtype=torch.bool), "loss_mask keeps no class"),
    ],
)
def test_loss_mask_errors(hlp_model, mask, message):
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        hlp_model(_features(batch=2), labels=torch.zeros(2, 527), loss_mask=mask)


def test_shape_errors(hlp_model):
    with pytest.raises(ValueError, match=r"logits of shape \(2, 526\) have 526 classes on the last axis but the model has 527"):
        hlp_model.propagate_logits(torch.zeros(2, 526))
    with pytest.raises(ValueError, match="input_values is required"):
        hlp_model()
    bad = HLPAudioConfig(num_labels=3, backbone_config={"hidden_sise": 32})
    with pytest.raises(ValueError, match=r"unknown ASTBackboneConfig keys \['hidden_sise'\]"):
        HLPAudioForAudioClassification(bad)


def test_tuple_output(hlp_model):
    inputs = _features(batch=1)
    with torch.no_grad():
        logits, raw_logits = hlp_model(inputs, return_dict=False)
        outputs = hlp_model(inputs)
        assert torch.equal(logits, outputs.logits) and torch.equal(raw_logits, outputs.raw_logits)
        assert torch.equal(hlp_model.propagate_logits(raw_logits), logits)


def test_freeze_backbone_splits_body_and_head(audioset_ontology):
    config = HLPAudioConfig(ontology=audioset_ontology.to_dict(), backbone_config=default_ast_config("tiny"))
    model = HLPAudioForAudioClassification(config)
    head = list(model.head_parameters())
    body = list(model.body_parameters())
    assert {id(p) for p in head}.isdisjoint(id(p) for p in body)
    assert len(head) + len(body) == len(list(model.parameters()))
    model.freeze_backbone()
    assert all(p.requires_grad for p in head) and not any(p.requires_grad for p in body)
    labels = torch.zeros(2, 527)
    model(_features(batch=2), labels=labels).loss.backward()
    assert all(p.grad is not None for p in head) and all(p.grad is None for p in body)
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.parameters())


def test_constructible_from_a_config_alone(audioset_ontology):
    config = HLPAudioConfig(ontology=audioset_ontology.to_dict(), backbone_config=default_ast_config("tiny"))
    model = HLPAudioForAudioClassification(config).eval()
    with torch.no_grad():
        logits = model(_features(batch=2)).logits
    assert logits.shape == (2, 527) and torch.isfinite(logits).all()
    dense = model.classifier.dense
    assert dense.weight.std().item() == pytest.approx(0.02, rel=0.1) and torch.all(dense.bias == 0)
    with pytest.raises(ValueError, match=r"expects input_values of shape \(batch, 64, 32\).*got \(2, 32, 64\)"):
        model(torch.zeros(2, 32, 64))
    with pytest.raises(ValueError, match=r"unknown backbone_type 'wavenet'; available: \["):
        HLPAudioForAudioClassification(HLPAudioConfig(num_labels=3, backbone_type="wavenet"))
    with pytest.raises(ValueError, match=r"unknown ASTBackboneConfig keys \['hidden'\]"):
        HLPAudioForAudioClassification(HLPAudioConfig(num_labels=3, backbone_config={"hidden": 3}))
    with pytest.raises(ValueError, match="unknown ast size 'huge'"):
        default_ast_config("huge")


def test_flat_model_without_ontology_changes_nothing():
    model = HLPAudioForAudioClassification(HLPAudioConfig(num_labels=5, backbone_config=default_ast_config("tiny")))
    raw = torch.randn(3, 5)
    assert torch.equal(model.propagate_logits(raw), raw)


def test_from_ast_errors(tiny_ast, audioset_ontology):
    small = Ontology.from_parents(["a", "b"], {"a": ["b"]})
    with pytest.raises(ValueError, match="the AST has 527 labels but the ontology 2 classes"):
        hlp_tagger_from_ast(tiny_ast, small)
    renamed = audioset_ontology.to_dict()
    renamed["names"] = list(renamed["names"])
    renamed["names"][3] = "Something else"
    with pytest.raises(ValueError, match=r"1 AST labels differ from the ontology's names \(3: AST .* vs ontology 'Something else'\)"):
        hlp_tagger_from_ast(tiny_ast, renamed)
    assert hlp_tagger_from_ast(tiny_ast, renamed, check_labels=False).config.id2label[3] == "Something else"
    with pytest.raises(TypeError, match="expected an ASTForAudioClassification or a path, got dict"):
        hlp_tagger_from_ast({}, audioset_ontology)


# ---------------------------------------------------------------------------------------- round trips
def test_save_and_from_pretrained_round_trip(saved_dir, hlp_model, audioset_ontology):
    files = set(os.listdir(saved_dir))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    # the code that remote loading needs travels with the weights
    assert {"modeling_hlp_audio.py", "configuration_hlp_audio.py", "hierarchy_ops.py", "modeling_ast_backbone.py",
            "backbone.py", "front_ends.py"} <= files
    auto_map = json.loads((saved_dir / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForAudioClassification"] == "modeling_hlp_audio.HLPAudioForAudioClassification"
    loaded = AutoModelForAudioClassification.from_pretrained(saved_dir).eval()
    assert type(loaded) is HLPAudioForAudioClassification
    assert loaded.dtype == torch.float32
    assert not any(name for name, _ in loaded.named_buffers() if "hlp" in name)  # nothing left to refill
    inputs = _features(batch=3, seed=11)
    with torch.no_grad():
        expected = hlp_model(inputs).logits
        got = loaded(inputs).logits
        assert torch.equal(got, expected)
        loaded.config.post_hlp = False
        assert torch.equal(_reference_post_hlp(loaded(inputs).logits, audioset_ontology), got)
    extractor = AutoFeatureExtractor.from_pretrained(saved_dir)
    assert type(extractor) is ASTFeatureExtractor and extractor.max_length == TINY["max_length"]


def test_bfloat16_checkpoint_loads_in_bfloat16(tiny_ast, tmp_path, audioset_ontology):
    hlp_tagger_from_ast(tiny_ast, audioset_ontology).to(torch.bfloat16).save_pretrained(tmp_path)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path)  # dtype="auto" by default
    assert loaded.dtype == torch.bfloat16
    with torch.no_grad():
        logits = loaded(_features(batch=2).to(torch.bfloat16)).logits
    child, parent = audioset_ontology.edges.T
    assert logits.dtype == torch.bfloat16 and (logits[:, parent] >= logits[:, child]).all()


def test_convert_ast_script(tiny_ast, audioset_ontology, audioset_dir, tmp_path, monkeypatch):
    source, out = tmp_path / "ast", tmp_path / "ast-hlp"
    tiny_ast.save_pretrained(source)
    ASTFeatureExtractor(num_mel_bins=TINY["num_mel_bins"], max_length=TINY["max_length"]).save_pretrained(source)
    monkeypatch.setenv("HLP_AUDIOSET_DIR", str(audioset_dir))
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "scripts")))
    try:
        import convert_ast as script
    finally:
        sys.path.pop(0)
    assert script.main([str(source), str(out), "--no-post-hlp"]) == 0
    model = AutoModelForAudioClassification.from_pretrained(out).eval()
    assert model.config.post_hlp is False and model.config.num_labels == 527
    inputs = _features(batch=2, seed=3)
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, tiny_ast(inputs).logits)
    assert AutoFeatureExtractor.from_pretrained(out).to_dict() == ASTFeatureExtractor.from_pretrained(source).to_dict()
    # from a path, the same as from the model object
    from_path = hlp_tagger_from_ast(source, audioset_ontology.to_dict())
    with torch.no_grad():
        assert torch.equal(from_path.backbone(inputs), tiny_ast(inputs).logits)
    # a source without a feature extractor is refused by name
    bare = tmp_path / "bare"
    tiny_ast.save_pretrained(bare)
    with pytest.raises(FileNotFoundError, match="no ASTFeatureExtractor"):
        convert_ast(bare, tmp_path / "never")
    assert script.main([str(bare), str(tmp_path / "never")]) == 2


# ---------------------------------------------------------------------------------------- registration
def test_registration_uses_the_public_auto_class_api(saved_dir):
    from transformers import pipeline
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING
    from transformers.pipelines.audio_classification import AudioClassificationPipeline

    from hlp_audio import HLPAudioClassificationPipeline, HLPAudioFeatureExtractor

    assert type(AutoConfig.for_model("hlp_audio", num_labels=2)) is HLPAudioConfig
    assert MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING[HLPAudioConfig] is HLPAudioForAudioClassification
    assert FEATURE_EXTRACTOR_MAPPING[HLPAudioConfig] is HLPAudioFeatureExtractor
    assert register_with_transformers()  # idempotent
    # the task keeps transformers' implementation; the HLP pipeline is chosen explicitly
    stock = pipeline("audio-classification", model=str(saved_dir))
    assert type(stock) is AudioClassificationPipeline
    explicit = pipeline("audio-classification", model=str(saved_dir), pipeline_class=HLPAudioClassificationPipeline)
    assert type(explicit) is HLPAudioClassificationPipeline
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with torch.no_grad():
        features = stock.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        expected = torch.sigmoid(stock.model(**features).logits[0])
    for tagger in (stock, explicit):  # sigmoid scores either way: the config is multi-label
        tags = tagger(audio, top_k=3)
        top = torch.topk(expected, 3).values
        np.testing.assert_allclose([tag["score"] for tag in tags], top.tolist(), rtol=1e-5)


_COMPARE_PIPELINES = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    if sys.argv[1] == "import":
        import hlp_audio  # noqa: F401  -- the only difference between the two runs
    from transformers import pipeline
    results = {}
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for name in sys.argv[2:]:
        tagger = pipeline("audio-classification", model=name)
        results[name] = {"class": type(tagger).__name__, "tags": tagger(audio, top_k=3)}
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_importing_hlp_audio_changes_nothing_for_other_models(tmp_path):
    """A stock single-label AST (softmax) and a Wav2Vec2 classifier: the same pipeline outputs with and without the import."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    ast_dir, w2v_dir = tmp_path / "ast", tmp_path / "wav2vec2"
    labels = {0: "dog", 1: "cat", 2: "bird"}
    ast_config = ASTConfig(**TINY, id2label=labels, label2id={v: k for k, v in labels.items()})
    ASTForAudioClassification(ast_config).save_pretrained(ast_dir)
    ASTFeatureExtractor(num_mel_bins=TINY["num_mel_bins"], max_length=TINY["max_length"]).save_pretrained(ast_dir)
    w2v_config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(32, 32),
        conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2, id2label=labels,
        label2id={v: k for k, v in labels.items()}, classifier_proj_size=16,
    )
    Wav2Vec2ForSequenceClassification(w2v_config).save_pretrained(w2v_dir)
    Wav2Vec2FeatureExtractor().save_pretrained(w2v_dir)
    script = tmp_path / "compare.py"
    script.write_text(_COMPARE_PIPELINES)
    outputs = {}
    for mode in ("plain", "import"):
        run = subprocess.run(
            [sys.executable, str(script), mode, str(ast_dir), str(w2v_dir)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        outputs[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    assert outputs["plain"] == outputs["import"]
    for name in (str(ast_dir), str(w2v_dir)):
        assert outputs["import"][name]["class"] == "AudioClassificationPipeline"
        assert sum(tag["score"] for tag in outputs["import"][name]["tags"]) == pytest.approx(1.0, abs=1e-5)  # softmax


# ---------------------------------------------------------------------------------------- remote code
_REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    # Hide hlp-audio: its source folder and the editable install's meta path finder.
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("src")]
    try:
        import hlp_audio
        raise SystemExit("hlp_audio is still importable from " + hlp_audio.__file__)
    except ImportError:
        pass
    import numpy as np, torch
    from transformers import AutoModelForAudioClassification, pipeline

    folder, features, audio = sys.argv[1], sys.argv[2], sys.argv[3]
    model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.load(features))).logits
    tagger = pipeline("audio-classification", model=folder, trust_remote_code=True)
    print(json.dumps({
        "model_module": type(model).__module__,
        "pipeline_class": type(tagger).__name__,
        "logits": logits.tolist(),
        "tags": tagger(np.load(audio), top_k=None),
        "hlp_in_sys_modules": any(name.startswith("hlp_audio") for name in sys.modules),
    }))
    """
)


@pytest.mark.slow
def test_remote_code_without_hlp_audio_installed(saved_dir, hlp_model, shared_data, tmp_path):
    from transformers import pipeline

    from hlp_audio.audio_loading import load_audio

    features = _features(batch=2, seed=21)
    np.save(tmp_path / "features.npy", features.numpy())
    wav = shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / "speech.wav"
    audio = load_audio(wav, 16000)  # transformers' own pipeline needs ffmpeg for files: give it the array
    np.save(tmp_path / "audio.npy", audio)
    script = tmp_path / "remote.py"
    script.write_text(_REMOTE_SCRIPT)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(saved_dir), str(tmp_path / "features.npy"), str(tmp_path / "audio.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_module"].startswith("transformers_modules.")
    assert report["pipeline_class"] == "AudioClassificationPipeline"
    assert not report["hlp_in_sys_modules"]
    with torch.no_grad():
        expected = hlp_model(features).logits
    assert torch.equal(torch.tensor(report["logits"]), expected)
    from hlp_audio import HLPAudioClassificationPipeline

    local = pipeline("audio-classification", model=str(saved_dir), pipeline_class=HLPAudioClassificationPipeline)
    tags = local(str(wav), top_k=None)  # the file, decoded and resampled by hlp-audio
    scores = {tag["label"]: tag["score"] for tag in tags}
    remote = {tag["label"]: tag["score"] for tag in report["tags"]}
    assert remote.keys() == scores.keys() and all(0.0 <= value <= 1.0 for value in remote.values())  # sigmoid
    np.testing.assert_allclose([remote[name] for name in scores], list(scores.values()), rtol=1e-5)


# ---------------------------------------------------------------------------------------- model card
def test_model_card_renders_for_a_saved_model(saved_dir, audioset_ontology):
    from huggingface_hub import ModelCard

    model = AutoModelForAudioClassification.from_pretrained(saved_dir)
    extractor = AutoFeatureExtractor.from_pretrained(saved_dir)
    results = [
        MAPResult("AS-Base", post_hlp=False, value=0.4593),
        MAPResult("AS-Base", post_hlp=True, value=0.4601),
        MAPResult("AS-HLP", post_hlp=False, value=0.4478),
        MAPResult("AS-HLP", post_hlp=True, value=0.4712),
    ]
    card = HLPModelCard.from_model(
        model,
        "ast-audioset-hlp",
        feature_extractor=extractor,
        backbone="AST (tiny, random)",
        repo_id="someone/ast-audioset-hlp",
        results=results,
        training={"data": "AudioSet balanced + unbalanced", "epochs": 5, "learning rate": 1e-5},
        base_model="MIT/ast-finetuned-audioset-10-10-0.4593",
        license="bsd-3-clause",
    )
    path = card.save(saved_dir)
    text = path.read_text()
    parsed = ModelCard(text)
    assert parsed.data.pipeline_tag == "audio-classification" and parsed.data.library_name == "transformers"
    assert parsed.data.base_model == "MIT/ast-finetuned-audioset-10-10-0.4593"
    values = {(r.dataset_config, r.metric_config): r.metric_value for r in parsed.data.eval_results}
    assert values == {
        ("as-base", "no-post-hlp"): 0.4593,
        ("as-base", "post-hlp"): 0.4601,
        ("as-hlp", "no-post-hlp"): 0.4478,
        ("as-hlp", "post-hlp"): 0.4712,
    }
    assert "| AudioSet eval | AS-HLP | on | 0.4712 | measured on this checkpoint |" in text
    assert "| AudioSet eval | AS-Base | off | 0.4593 |" in text and "license: bsd-3-clause" in text
    assert "Whether these weights were trained on HLP-propagated labels is not recorded" in text
    assert "CC BY-SA 4.0" in text and "Google" in text
    assert "arXiv" in text and "2503.21826" in text and "Pellegrini" in text
    assert 'model="someone/ast-audioset-hlp", trust_remote_code=True' in text
    assert "- **epochs**: 5" in text and "resampled to 16000 Hz" in text
    assert f"{len(audioset_ontology.edges)} unique child-to-parent edges" in text
    assert f"{len(audioset_ontology.receiving)} classes" in text
    assert "{{" not in text and "{%" not in text


def test_model_card_without_results_and_bad_figures():
    with pytest.raises(ValueError, match="needs a licence"):
        HLPModelCard(model_name="untrained", backbone="AST-base").render()
    text = HLPModelCard(model_name="untrained", backbone="AST-base", license="mit").render()
    assert "has not been evaluated yet" in text and "model-index" not in text
    with pytest.raises(ValueError, match=r"mAP must be in \[0, 1\], got 45.9"):
        MAPResult("AS-HLP", post_hlp=True, value=45.9)
    with pytest.raises(ValueError, match="labels must be one of"):
        MAPResult("FSD50K", post_hlp=True, value=0.5)
