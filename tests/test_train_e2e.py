"""End to end on CPU: train a tiny tagger on generated audio, resume, evaluate, publish to a fake Hub.

The corpus (``training_helpers``): tones and noises of a small hierarchy whose clips name their
parent class only half of the time, as AudioSet's annotators often do. ``scripts/train.py`` runs
in-process (``main(argv)``), once uninterrupted and once interrupted mid-epoch and at an epoch
boundary; the resumed run must end with exactly the same weights and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_helpers import make_corpus, reset_accelerate_state, tone_noise_ontology

from hlp_audio.training import build_evaluate_parser, evaluate_model, parse_train_args, train
from hlp_audio.training.trainer import changed_recipe, find_checkpoint


class FakeHfApi:
    """Records what would reach the Hub: repository creation and the uploaded folder's files."""

    instances = []

    def __init__(self, token=None):
        self.token = token
        self.created, self.uploads = [], []
        FakeHfApi.instances.append(self)

    def create_repo(self, **kwargs):
        self.created.append(kwargs)

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        folder = Path(folder_path)  # a temporary folder: read it now
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        self.uploads.append(dict(repo_id=repo_id, repo_type=repo_type, commit_message=commit_message, files=files))
        return f"https://huggingface.co/{repo_id}/commit/fake"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tone_noise")
    train, _ = make_corpus(folder, 32, name="train", sampling_rate=32000, seconds=1.0, seed=0)
    evaluation, _ = make_corpus(folder, 12, name="eval", sampling_rate=32000, seconds=1.0, seed=1)
    ontology_path = folder / "ontology.json"
    tone_noise_ontology().to_json(ontology_path)
    return {"train": train, "eval": evaluation, "ontology": ontology_path, "folder": folder}


def train_args(corpus, output_dir, *extra):
    return [
        "--train-manifest", str(corpus["train"]),
        "--eval-manifest", str(corpus["eval"]),
        "--ontology", str(corpus["ontology"]),
        "--backbone-type", "efficientat",
        "--backbone-size", "tiny",
        "--clip-seconds", "0.8",
        "--eval-clip-seconds", "1.0",
        "--epochs", "2",
        "--batch-size", "8",
        "--lr", "5e-3",
        "--warmup-steps", "1",
        "--num-workers", "0",
        "--hlp",
        "--mixup", "0.3",
        "--time-mask", "8",
        "--freq-mask", "3",
        "--balanced-sampler",
        "--logging-steps", "4",
        "--seed", "7",
        "--no-progress",
        "--output-dir", str(output_dir),
        *extra,
    ]


def run_train(argv):
    reset_accelerate_state()
    try:
        return train(parse_train_args(argv))
    finally:  # a later test that forks processes (debug_launcher) must not inherit this process state
        reset_accelerate_state()


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory):
    """An uninterrupted run that also publishes its best model through ``--push-to-hub``."""
    import huggingface_hub

    output_dir = tmp_path_factory.mktemp("full_run")
    FakeHfApi.instances.clear()
    original = huggingface_hub.HfApi
    huggingface_hub.HfApi = FakeHfApi
    try:
        results = run_train(train_args(
            corpus, output_dir, "--push-to-hub", "me/tone-noise-hlp", "--hub-license", "cc-by-4.0", "--report-to", "tensorboard"
        ))
    finally:
        huggingface_hub.HfApi = original
    return output_dir, results, list(FakeHfApi.instances)


def test_training_runs_two_epochs_loss_falls_and_metrics_are_logged(full_run):
    output_dir, results, _ = full_run
    assert not results["stopped"] and results["epoch"] == 2 and results["global_step"] == 8
    logged = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in logged if "train/loss" in row]
    assert len(losses) == 2 and losses[1] < losses[0]  # mean loss of epoch 2 below epoch 1's
    assert all(0 < row["train/lr"] <= 5e-3 for row in logged if "train/lr" in row)
    evaluations = [row for row in logged if "eval/map" in row]
    assert [row["step"] for row in evaluations] == [4, 8]
    for row in evaluations:
        for key in ("map", "map_post", "map_hlp", "map_hlp_post", "auc"):
            assert 0.0 <= row[f"eval/{key}"] <= 1.0
        assert row["eval/num_samples"] == 12
    assert list((output_dir / "train").rglob("events.out.tfevents*")), "tensorboard logs"
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["step_00000004", "step_00000008"]


def test_best_model_reloads_and_matches_its_recorded_metrics(full_run, corpus):
    from hlp_audio import Ontology
    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    output_dir, results, _ = full_run
    best = output_dir / "best"
    recorded = json.loads((best / "eval_results.json").read_text())
    assert recorded["epoch"] == results["best_epoch"]
    assert recorded[results["best_metric"]] == results["best_value"] == max(h[results["best_metric"]] for h in results["history"])
    assert results["best_metric"] == "map_hlp_post"  # --hlp, and post-HLP is on in the saved config
    model = HLPAudioForAudioClassification.from_pretrained(best)
    assert model.config.post_hlp and model.config.hlp_targets
    assert Ontology.from_dict(model.config.ontology) == tone_noise_ontology()
    # evaluate_model.py recomputes the same figures from the saved model and the audio files
    reset_accelerate_state()
    evaluation = evaluate_model(build_evaluate_parser().parse_args(
        [str(best), str(corpus["eval"]), "--out", str(output_dir / "evaluation"), "--clip-seconds", "1.0", "--num-workers", "0", "--no-progress"]
    ))
    for key in ("map", "map_post", "map_hlp", "map_hlp_post", "auc"):
        assert evaluation[key] == pytest.approx(recorded[key], abs=1e-6)
    written = json.loads((output_dir / "evaluation" / "metrics.json").read_text())
    assert [row["label"] for row in written["per_class"] if row["receiving"]] == ["tone", "noise"]
    assert (output_dir / "evaluation" / "ap_change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (output_dir / "evaluation" / "metrics.md").read_text()
    assert f"{recorded['map_hlp_post']:.4f}" in table


def test_push_to_hub_flag_uploads_one_commit_with_card(full_run, corpus):
    output_dir, _, apis = full_run
    assert len(apis) == 1
    api = apis[0]
    assert api.created == [dict(repo_id="me/tone-noise-hlp", repo_type="model", private=False, exist_ok=True)]
    assert len(api.uploads) == 1
    files = api.uploads[0]["files"]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "eval_results.json",
                 "modeling_hlp_audio.py", "configuration_hlp_audio.py", "feature_extraction_hlp_audio.py"):
        assert name in files, name
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_hlp_audio.HLPAudioForAudioClassification"
    card = files["README.md"].decode()
    best = json.loads((output_dir / "best" / "eval_results.json").read_text())
    for key in ("map", "map_post", "map_hlp", "map_hlp_post"):
        assert f"value: {best[key]}" in card
    assert "HLP-propagated (label pre-processing)" in card and "mixup (alpha 0.3)" in card
    assert "license: cc-by-4.0" in card and "These weights were trained on HLP-propagated labels" in card
    assert "| eval.csv (12 clips) | AS-HLP | on |" in card and "AudioSet eval" not in card  # the set it was measured on
    assert str(corpus["folder"]) not in card  # no local path on a public card
    assert "Tuncay" in card and "2503.21826" in card
    weights = load_file(str(output_dir / "best" / "model.safetensors"))
    from safetensors.torch import load as load_bytes

    pushed = load_bytes(files["model.safetensors"])
    assert pushed.keys() == weights.keys() and all(torch.equal(pushed[k], weights[k]) for k in weights)


def test_publish_model_with_a_fake_api(full_run, tmp_path):
    from hlp_audio.hub import prepare_hub_folder, publish_model

    output_dir, _, _ = full_run
    api = FakeHfApi()
    publish_model(output_dir / "best", "me/other", private=True, base_model="me/base", license="cc-by-4.0", api=api)
    assert api.created[0]["private"] is True and len(api.uploads) == 1
    assert "base_model: me/base" in api.uploads[0]["files"]["README.md"].decode()
    prepare_hub_folder(output_dir / "best", tmp_path / "repo", repo_id="me/other", license="cc-by-4.0")
    assert (tmp_path / "repo" / "README.md").is_file() and (tmp_path / "repo" / "model.safetensors").is_file()
    with pytest.raises(FileNotFoundError, match="is not a saved model folder"):
        publish_model(tmp_path / "nothing", "me/other", license="cc-by-4.0", api=api)


def test_interrupted_run_resumes_to_the_same_weights(full_run, corpus, tmp_path):
    output_dir, reference, _ = full_run
    resumed_dir = tmp_path / "resumed"
    first = run_train(train_args(corpus, resumed_dir, "--stop-after-steps", "3"))  # mid-epoch 1
    assert first["stopped"] and first["global_step"] == 3
    assert not (resumed_dir / "final").exists()
    second = run_train(train_args(corpus, resumed_dir, "--resume", "--stop-after-steps", "4"))  # epoch boundary
    assert second["stopped"] and second["global_step"] == 4 and second["epoch"] == 1
    third = run_train(train_args(corpus, resumed_dir, "--resume"))
    assert not third["stopped"] and third["global_step"] == 8
    expected = load_file(str(output_dir / "final" / "model.safetensors"))
    actual = load_file(str(resumed_dir / "final" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"resumed weights differ: {different[:5]}"
    assert third["history"] == reference["history"]


def test_linear_probing_trains_the_head_only(corpus, tmp_path):
    """--freeze-body: the head changes; every body tensor (batch-norm statistics included) does not."""
    from accelerate.utils import set_seed

    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from hlp_audio.training import build_model

    run_train(train_args(corpus, tmp_path / "probe", "--freeze-body", "--epochs", "1", "--report-to", "none"))
    trained = HLPAudioForAudioClassification.from_pretrained(tmp_path / "probe" / "final").state_dict()
    set_seed(7)  # train.py seeds with --seed before building the model: the same initial weights
    fresh, _, _ = build_model(ontology=tone_noise_ontology(), backbone_type="efficientat", backbone_size="tiny")
    fresh = fresh.state_dict()
    head = [name for name in fresh if name.startswith("backbone.classifier.")]
    body = [name for name in fresh if name not in head]
    assert head and body
    assert [name for name in body if not torch.equal(trained[name], fresh[name])] == []
    assert any(not torch.equal(trained[name], fresh[name]) for name in head)


def test_loss_on_annotated_classes_leaves_the_other_head_rows_untouched(corpus, tmp_path):
    """Partial labels on a corpus of tones only: with --hlp the vocabulary is low_tone, high_tone and their
    parent tone; the head rows of noise, white_noise and buzz (unknown, not negative) do not move."""
    import csv

    from accelerate.utils import set_seed

    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from hlp_audio.training import build_model

    with open(corpus["train"], newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if "tone" in row["labels"]]
    tones = corpus["folder"] / "tones.csv"
    with open(tones, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    argv = train_args(corpus, tmp_path / "partial", "--epochs", "1", "--batch-size", "4", "--report-to", "none",
                      "--loss-on-annotated-classes", "--weight-decay", "0")
    argv[argv.index(str(corpus["train"]))] = str(tones)
    run_train(argv)
    recorded = json.loads((tmp_path / "partial" / "training_args.json").read_text())
    assert recorded["loss_on_annotated_classes"] and recorded["annotated_classes"] == ["tone", "low_tone", "high_tone"]
    trained = HLPAudioForAudioClassification.from_pretrained(tmp_path / "partial" / "final")
    set_seed(7)  # train.py seeds with --seed before building the model: the same initial weights
    fresh, _, _ = build_model(ontology=tone_noise_ontology(), backbone_type="efficientat", backbone_size="tiny")
    output = [name for name, tensor in fresh.state_dict().items() if name.startswith("backbone.classifier.") and tensor.shape[0] == 6]
    assert sorted(name.rsplit(".", 1)[1] for name in output) == ["bias", "weight"]
    for name in output:
        before, after = fresh.state_dict()[name], trained.state_dict()[name]
        assert torch.equal(before[3:], after[3:]), name  # noise, white_noise, buzz
        assert all(not torch.equal(before[i], after[i]) for i in range(3)), name  # tone, low_tone, high_tone

    unlabelled = corpus["folder"] / "unlabelled.csv"
    unlabelled.write_text("audio,labels\ntrain/clip_0000.wav,\"\"\n")
    argv[argv.index(str(tones))] = str(unlabelled)
    with pytest.raises(ValueError, match=r"--loss-on-annotated-classes: .*unlabelled.csv \(HLP\) has no label at all"):
        run_train(argv)


def _debug_worker(argv):
    train(parse_train_args(argv))


@pytest.mark.slow
def test_two_processes_with_debug_launcher(corpus, tmp_path):
    """``accelerate.debug_launcher(num_processes=2)``: two CPU processes, gloo, sharded batches.

    It forks, and a fork of a process whose OpenMP pool is running (as this test process's is,
    after the other tests) hangs in libgomp: the launcher runs in a fresh interpreter.
    """
    import subprocess
    import sys

    output_dir = tmp_path / "ddp"
    argv = train_args(
        corpus, output_dir, "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "5",
        "--gradient-accumulation-steps", "2", "--report-to", "none",
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import json\n"
        "from accelerate import debug_launcher\n"
        "from test_train_e2e import _debug_worker\n"
        "debug_launcher(_debug_worker, args=(json.loads(sys.argv[2]),), num_processes=2)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(argv)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((output_dir / "results.json").read_text())
    # 32 clips / (4 per process x 2 processes) = 4 batches per process, 2 optimizer steps with accumulation 2
    assert results["global_step"] == 2 and results["epoch"] == 1
    recorded = json.loads((output_dir / "best" / "eval_results.json").read_text())
    assert recorded["num_samples"] == 12  # gathered over both processes, padding duplicates dropped
    assert json.loads((output_dir / "training_args.json").read_text())["num_processes"] == 2


def test_command_line_errors_and_recipe_changes(tmp_path, capsys):
    base = ["--train-manifest", "t.csv", "--output-dir", str(tmp_path)]
    for argv, message in [
        (base, "--model-name-or-path, or --backbone-type and --backbone-size"),
        (base + ["--backbone-type", "ast", "--backbone-size", "tiny", "--push-to-hub", "me/x"], "--push-to-hub needs --hub-license"),
        (base + ["--backbone-type", "ast", "--backbone-size", "tiny", "--epochs", "0"], "--epochs must be >= 1"),
        (base + ["--backbone-type", "ast", "--backbone-size", "tiny", "--best-metric", "loss"], "--best-metric must be one of"),
        (base + ["--backbone-type", "ast", "--backbone-size", "tiny", "--epoch-size", "10"], "--epoch-size applies to --balanced-sampler"),
        (base + ["--model-name-or-path", "m", "--backbone-size", "tiny"], "--backbone-size is for training from scratch"),
    ]:
        with pytest.raises(SystemExit):
            parse_train_args(argv)
        assert message in capsys.readouterr().err
    args = parse_train_args(base + ["--backbone-type", "passt", "--backbone-size", "tiny", "--s-patchout-t", "5"])
    assert args.backbone_config == {"s_patchout_t": 5} and args.eval_batch_size == args.batch_size
    saved = tmp_path / "training_args.json"
    saved.write_text(json.dumps({"lr": 1e-4, "seed": 0, "num_workers": 4, "resume": None}))
    assert changed_recipe(saved, {"lr": 1e-4, "seed": 0, "num_workers": 8, "resume": "latest"}) == []
    assert changed_recipe(saved, {"lr": 2e-4, "seed": 0}) == [("lr", 1e-4, 2e-4)]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        find_checkpoint(tmp_path, "latest")


@pytest.mark.parametrize(
    "backbone, extra",
    [("ast", []), ("passt", ["--s-patchout-t", "2", "--s-patchout-f", "1", "--u-patchout", "3"])],
)
def test_other_backbones_train_from_scratch(corpus, tmp_path, backbone, extra):
    """AST (16 kHz Kaldi filter banks, (batch, time, mel)) and PaSST (32 kHz mel, patchout) go through the same loop."""
    argv = train_args(corpus, tmp_path / backbone, "--epochs", "1", "--report-to", "none", *extra)
    argv[argv.index("efficientat")] = backbone
    results = run_train(argv)
    assert results["global_step"] == 4 and 0.0 <= results["history"][0]["map_hlp_post"] <= 1.0
    config = json.loads((tmp_path / backbone / "final" / "config.json").read_text())
    assert config["backbone_type"] == backbone
    if backbone == "passt":
        assert (config["backbone_config"]["s_patchout_t"], config["backbone_config"]["u_patchout"]) == (2, 3)
    else:
        assert json.loads((tmp_path / backbone / "final" / "preprocessor_config.json").read_text())["feature_extractor_type"] == "ASTFeatureExtractor"


def test_fine_tune_the_real_mn04_checkpoint_with_a_new_label_set(corpus, shared_data, audioset_ontology, tmp_path):
    """Initialise from a converted checkpoint (EfficientAT mn04, AudioSet): the 6-class head is new, and
    linear probing leaves the converted body untouched."""
    from hlp_audio import HLPAudioForAudioClassification
    from hlp_audio.conversion import convert_efficientat

    checkpoint = shared_data / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt"
    convert_efficientat(checkpoint, 0.4, tmp_path / "mn04", audioset_dir=shared_data / "audioset")
    converted = HLPAudioForAudioClassification.from_pretrained(tmp_path / "mn04")

    argv = train_args(corpus, tmp_path / "run", "--epochs", "1", "--report-to", "none", "--freeze-body")
    at = argv.index("--backbone-type")
    argv[at : at + 4] = ["--model-name-or-path", str(tmp_path / "mn04")]
    results = run_train(argv)
    assert results["global_step"] == 4
    tuned = HLPAudioForAudioClassification.from_pretrained(tmp_path / "run" / "final")
    assert tuned.config.num_labels == 6 and tuned.config.id2label[4] == "White noise"
    before, after = converted.state_dict(), tuned.state_dict()
    body = [key for key in before if not key.startswith("backbone.classifier.")]
    assert [key for key in body if not torch.equal(before[key], after[key])] == []
    # the head: its output layer is new (6 classes), its hidden layer starts from mn04's and is trained
    new_outputs = [key for key in after if key.startswith("backbone.classifier.") and after[key].shape[0] == 6]
    assert new_outputs and all(before[key].shape[0] == 527 for key in new_outputs)
    hidden = [key for key in before if key.startswith("backbone.classifier.") and key not in new_outputs and key.endswith("weight")]
    assert hidden and all(before[key].shape == after[key].shape for key in hidden)
