"""train.py and evaluate_model.py on AudioSet as Hugging Face users hold it: local replicas of
agkphysics/AudioSet (parquet, FLAC bytes) and confit/audioset-16khz-wds (WebDataset), loaded offline through
``datasets.load_dataset``, streamed and whole; a tiny tagger trained for a few steps and evaluated.
Also: resumption of a stream, a bad evaluation set after a finished epoch, skipped clips reported,
every clip once over 2 processes x 2 workers (accelerate's debug launcher), issue 12's check up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from replica_helpers import copy_replica, garbled_flac, rewrite_row, write_replicas
from training_helpers import reset_accelerate_state

from hlp_audio.training import build_evaluate_parser, evaluate_model, parse_train_args, train
from hlp_audio.training.columns import SourceError


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, shared_data):
    found = write_replicas(tmp_path_factory.mktemp("replicas"), shared_data)
    found["cache"] = str(tmp_path_factory.mktemp("datasets_cache"))
    return found


def train_args(replicas, shared_data, output_dir, *extra, data="agkphysics"):
    return [
        "--train-data", str(replicas[data]),
        "--ontology", "audioset", "--audioset-dir", str(shared_data / "audioset"),
        "--backbone-type", "efficientat", "--backbone-size", "tiny",
        "--clip-seconds", "0.5", "--eval-clip-seconds", "1.0",
        "--epochs", "2", "--batch-size", "4", "--lr", "5e-3", "--warmup-steps", "1",
        "--num-workers", "2", "--hlp", "--mixup", "0.3", "--seed", "5", "--no-progress", "--report-to", "none",
        "--cache-dir", replicas["cache"], "--output-dir", str(output_dir),
        *extra,
    ]


STREAMED = ["--train-config", "balanced", "--train-split", "train", "--streaming", "--shuffle-buffer", "3", "--eval-split", "test"]


def run_train(argv):
    reset_accelerate_state()
    return train(parse_train_args(argv))


def run_evaluate(argv):
    reset_accelerate_state()
    return evaluate_model(build_evaluate_parser().parse_args(argv))


@pytest.fixture(scope="module")
def streamed_run(replicas, shared_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("streamed")
    return output_dir, run_train(train_args(replicas, shared_data, output_dir, *STREAMED))


def test_streamed_training_on_the_parquet_copy(streamed_run):
    output_dir, results = streamed_run
    # the dataset card says 12 clips: an epoch of 12 // 4 = 3 steps; both epochs evaluated on the 8 test clips
    assert results["global_step"] == 6 and [row["num_samples"] for row in results["history"]] == [8, 8]
    assert all(0.0 <= row["map_hlp_post"] <= 1.0 for row in results["history"])
    args = json.loads((output_dir / "training_args.json").read_text())
    assert args["train_clips"] == 12 and args["streaming"] is True


def test_streamed_evaluation_equals_the_whole_one(streamed_run, replicas):
    output_dir, _ = streamed_run
    common = [str(output_dir / "best"), str(replicas["agkphysics"]), "--config", "balanced", "--split", "test",
              "--clip-seconds", "1.0", "--batch-size", "3", "--no-progress", "--cache-dir", replicas["cache"]]
    whole = run_evaluate(common + ["--num-workers", "0", "--out", str(output_dir / "whole")])
    streamed = run_evaluate(common + ["--streaming", "--num-workers", "0", "--out", str(output_dir / "streamed")])
    two_readers = run_evaluate(common + ["--streaming", "--num-workers", "2"])
    keys = ("map", "map_post", "map_hlp", "map_hlp_post", "auc", "num_samples")
    assert {k: streamed[k] for k in keys} == {k: whole[k] for k in keys}  # one reader: the very same batches
    for key in keys:  # two readers: other batches, the same clips
        assert two_readers[key] == pytest.approx(whole[key], abs=1e-6)
    assert json.loads((output_dir / "streamed" / "metrics.json").read_text())["streaming"] is True


def test_interrupted_streamed_training_resumes_to_the_same_weights(streamed_run, replicas, shared_data, tmp_path):
    """Stopped mid-epoch (2 workers, a shuffle block of 3) and at an epoch boundary, then resumed: the stream
    continues where it stopped, and the weights and metrics equal the uninterrupted run's."""
    reference_dir, reference = streamed_run
    resumed_dir = tmp_path / "resumed"
    first = run_train(train_args(replicas, shared_data, resumed_dir, *STREAMED, "--stop-after-steps", "2"))
    assert first["stopped"] and first["global_step"] == 2
    second = run_train(train_args(replicas, shared_data, resumed_dir, *STREAMED, "--resume", "--stop-after-steps", "3"))
    assert second["stopped"] and second["global_step"] == 3 and second["epoch"] == 1
    third = run_train(train_args(replicas, shared_data, resumed_dir, *STREAMED, "--resume"))
    assert third["global_step"] == 6 and third["history"] == reference["history"]
    expected = load_file(str(reference_dir / "final" / "model.safetensors"))
    actual = load_file(str(resumed_dir / "final" / "model.safetensors"))
    assert [key for key in expected if not torch.equal(expected[key], actual[key])] == []
    with pytest.raises(ValueError, match="resume with --num-workers 2"):
        run_train(train_args(replicas, shared_data, resumed_dir, *STREAMED, "--resume", "--num-workers", "1"))


def test_whole_training_on_the_webdataset_copy(replicas, shared_data, tmp_path):
    argv = train_args(
        replicas, shared_data, tmp_path / "confit", "--train-config", "20k", "--train-split", "train", "--eval-split", "test",
        "--labels-column", "json.label", "--label-format", "names", "--balanced-sampler", "--epochs", "1", data="confit",
    )
    results = run_train(argv)
    assert results["global_step"] == 3 and results["history"][0]["num_samples"] == 8
    streamed = argv[: argv.index("--balanced-sampler")] + ["--streaming", "--epochs", "1"]
    # what a stream cannot know before it is read: the class weights and the annotated classes
    with pytest.raises(SourceError, match=r"confit \[20k/train\]: --balanced-sampler draws clips at random"):
        run_train(streamed + ["--balanced-sampler"])
    with pytest.raises(SourceError, match=r"confit \[20k/train\]: --loss-on-annotated-classes needs the classes"):
        run_train(streamed + ["--loss-on-annotated-classes"])
    streamed[streamed.index("20k")] = "2m"  # not prepared in this cache: nothing tells its size
    with pytest.raises(SourceError, match=r"confit \[2m/train\]: its dataset card does not give the number of clips; pass --epoch-size"):
        run_train(streamed)


def test_a_bad_evaluation_set_does_not_lose_the_epoch_and_skipped_clips_are_reported(replicas, shared_data, tmp_path):
    agk = copy_replica(replicas["agkphysics"], tmp_path / "agk")
    eval_shard = agk / "data" / "eval" / "00001.parquet"
    good = __import__("pyarrow.parquet", fromlist=["pq"]).read_table(eval_shard).column("audio")[1]["bytes"].as_py()
    rewrite_row(eval_shard, 1, audio=garbled_flac())  # its header reads: found only when decoded
    rewrite_row(agk / "data" / "bal_train" / "00002.parquet", 0, audio=b"not audio")
    replicas = {**replicas, "agkphysics": agk}
    output_dir = tmp_path / "run"
    argv = train_args(replicas, shared_data, output_dir, *STREAMED, "--epochs", "1", "--skip-bad-audio")
    argv[argv.index("--eval-split") : argv.index("--eval-split") + 2] = ["--eval-data", str(agk), "--eval-split", "test"]
    with pytest.raises(ValueError, match=r"agk \[balanced/train\], shard 2 \(.*00002\.parquet\), row 0 \(id .*\): cannot decode"):
        run_train([a for a in argv if a != "--skip-bad-audio"])  # no skipping: the undecodable training clip stops it
    results = run_train(argv)  # skipping applies to training and evaluation alike: the garbled eval clip is skipped
    assert results["history"][0]["num_samples"] == 7 and results["history"][0]["num_skipped"] == 1
    skipped = [json.loads(line) for line in (output_dir / "skipped_clips.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in skipped] == ["epoch 1", "evaluation after epoch 1"]
    assert "shard 2" in skipped[0]["clip"] and "row 0" in skipped[0]["clip"] and "shard 1" in skipped[1]["clip"]
    logged = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("train/skipped_clips") == 1 for row in logged)
    # without --skip-bad-audio the evaluation fails, after the epoch's checkpoint is saved; fixed, --resume evaluates it
    output_dir = tmp_path / "run2"
    argv = [a if a != str(tmp_path / "run") else str(output_dir) for a in argv if a != "--skip-bad-audio"]
    rewrite_row(agk / "data" / "bal_train" / "00002.parquet", 0, audio=good)
    with pytest.raises(ValueError, match=r"agk \[balanced/test\], shard 1 \(.*00001\.parquet\), row 1 \(id .*\): cannot decode"):
        run_train(argv)
    assert [p.name for p in (output_dir / "checkpoints").iterdir()] == ["step_00000003"]
    rewrite_row(eval_shard, 1, audio=good)
    resumed = run_train(argv + ["--resume"])
    assert resumed["global_step"] == 3 and [row["epoch"] for row in resumed["history"]] == [1]
    assert (output_dir / "best" / "eval_results.json").is_file()


def test_a_missing_file_fails_before_training(shared_data, tmp_path):
    """Issue 12: the manifest is checked first; nothing is trained, and the error counts the problems."""
    from training_helpers import make_corpus, tone_noise_ontology

    manifest, _ = make_corpus(tmp_path, 8, seconds=0.5)
    (tmp_path / "train" / "clip_0003.wav").unlink()
    (tmp_path / "train" / "clip_0005.wav").write_bytes(b"RIFF....WAVEjunk")
    tone_noise_ontology().to_json(tmp_path / "ontology.json")
    argv = ["--train-manifest", str(manifest), "--ontology", str(tmp_path / "ontology.json"), "--backbone-type", "efficientat",
            "--backbone-size", "tiny", "--num-workers", "0", "--no-progress", "--output-dir", str(tmp_path / "run")]
    with pytest.raises(SourceError, match=r"train\.csv: 2 of 8 clips cannot be used \(first: row 3: audio file not found: .*clip_0003\.wav; row 5: cannot read the header"):
        run_train(argv)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _ddp_worker(replica, audioset_dir, model, out, cache):
    """One of 2 processes: read a stream with 2 workers, then evaluate the model on a streamed split."""
    from accelerate import Accelerator

    from hlp_audio import Ontology
    from hlp_audio.training.sources import open_source
    from hlp_audio.training.streaming import ClipStream, StreamLoader

    accelerator = Accelerator()
    ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    counts = {}
    for split in ("bal_train+unbal_train", "eval"):  # 5 shards for 4 readers; 2 shards for 4 readers (rows split)
        source = open_source(replica, ontology, config="full", split=split, streaming=True)
        stream = ClipStream(source, ontology, sampling_rate=16000, clip_seconds=0.2, shuffle=True, seed=3, passes=1,
                            process_index=accelerator.process_index, num_processes=accelerator.num_processes)
        counts[split] = [clip for batch in StreamLoader(stream, batch_size=3, num_workers=2) for clip in batch["ids"]]
    Path(out, f"ids_{accelerator.process_index}.json").write_text(json.dumps(counts))
    evaluate_model(build_evaluate_parser().parse_args([
        model, replica, "--config", "balanced", "--split", "test", "--streaming", "--num-workers", "2", "--batch-size", "3",
        "--clip-seconds", "1.0", "--no-progress", "--out", str(Path(out, "eval")),
    ]))


@pytest.mark.slow
def test_two_processes_two_workers_read_every_clip_once_and_evaluate_as_one(streamed_run, replicas, shared_data, tmp_path):
    import subprocess
    import sys
    from collections import Counter

    import datasets

    output_dir, _ = streamed_run
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1])\n"
        "from accelerate import debug_launcher\n"
        "from test_train_replicas import _ddp_worker\n"
        "debug_launcher(_ddp_worker, args=tuple(json.loads(sys.argv[2])), num_processes=2)\n"
    )
    args = [str(replicas["agkphysics"]), str(shared_data / "audioset"), str(output_dir / "best"), str(tmp_path), replicas["cache"]]
    completed = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(args)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    per_process = [json.loads((tmp_path / f"ids_{rank}.json").read_text()) for rank in (0, 1)]
    full = datasets.load_dataset(str(replicas["agkphysics"]), "full", cache_dir=replicas["cache"])
    for split, names in (("bal_train+unbal_train", ("bal_train", "unbal_train")), ("eval", ("eval",))):
        read = Counter(clip for process in per_process for clip in process[split])
        assert read == Counter(clip for name in names for clip in full[name]["video_id"])
        assert all(process[split] for process in per_process)  # both processes read
    ddp = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    single = run_evaluate([str(output_dir / "best"), str(replicas["agkphysics"]), "--config", "balanced", "--split", "test",
                           "--clip-seconds", "1.0", "--no-progress", "--num-workers", "0", "--cache-dir", replicas["cache"]])
    assert ddp["num_samples"] == single["num_samples"] == 8
    for key in ("map", "map_post", "map_hlp", "map_hlp_post", "auc"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)


def test_a_missing_shard_is_an_error_not_a_smaller_evaluation(streamed_run, replicas, tmp_path):
    output_dir, _ = streamed_run
    agk = copy_replica(replicas["agkphysics"], tmp_path / "agk")
    (agk / "data" / "eval" / "00001.parquet").unlink()  # a partial download: the card still says 8 clips
    with pytest.raises(SourceError, match=r"agk \[balanced/test\]: 4 clips read, but it has 8 \(its dataset card says so\): a shard is missing"):
        run_evaluate([str(output_dir / "best"), str(agk), "--config", "balanced", "--split", "test", "--streaming",
                      "--clip-seconds", "1.0", "--no-progress", "--num-workers", "0"])
