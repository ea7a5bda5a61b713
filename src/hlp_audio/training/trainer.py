"""The training loop of ``scripts/train.py``: :func:`train` runs a job from its parsed options.

Each epoch: train on clips decoded in DataLoader workers (from files or from the bytes of a dataset,
read whole or streamed: :mod:`.data`; random crop / pad to the clip length), compute the features
batched on the accelerator, augment (time / frequency masking, mixup), save a resumable checkpoint in
``OUTPUT_DIR/checkpoints``, then evaluate the mAP on the base and HLP references with and without
post-HLP (gathered over processes) and keep the best model in ``OUTPUT_DIR/best``. ``--resume``
continues an interrupted run (a stream from where it stopped); it gives the same weights as an
uninterrupted run with the same seed. Clips skipped with ``--skip-bad-audio`` are logged, counted per
epoch and listed in ``OUTPUT_DIR/skipped_clips.jsonl``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..hub import publish_model
from ..metrics import compute_hierarchical_map
from ..ontology import Ontology
from .augmentation import mask_time_frequency, mixup
from .checkpoints import TrainingProgress, save_trained_model
from .data import check_clip_count, eval_loader as build_eval_loader, train_data as build_train_data
from .models import build_front_end, build_model, feature_axes, predict
from .optimization import build_lr_scheduler, build_optimizer
from .sampling import seed_everything_for_step, step_rng
from .skipped import SkippedClips

__all__ = ["train", "load_ontology", "find_checkpoint", "changed_recipe", "CHECKPOINT_PREFIX"]

CHECKPOINT_PREFIX = "step_"


def load_ontology(args) -> Optional[Ontology]:
    if args.ontology in (None, "") and args.model_name_or_path is not None:
        return None  # the checkpoint's
    if args.ontology in (None, "", "audioset"):
        return Ontology.from_audioset(audioset_dir=args.audioset_dir)
    return Ontology.from_json(args.ontology)


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
        return path
    checkpoints = sorted((output_dir / "checkpoints").glob(CHECKPOINT_PREFIX + "*"))
    if not checkpoints:
        raise FileNotFoundError(f"--resume: no checkpoint in {output_dir / 'checkpoints'}")
    return checkpoints[-1]


# Options that do not change what is trained: they may differ between an interrupted run and its resumption.
NEUTRAL_OPTIONS = {
    "resume", "stop_after_steps", "push_to_hub", "hub_private", "hub_license", "eval_name", "no_progress", "num_workers",
    "report_to", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "output_dir", "cache_dir",
    "no_audio_check",
}


def changed_recipe(saved_args: Path, run_record: dict) -> list:
    """(option, before, now) for every option that changed since the run being resumed."""
    if not saved_args.is_file():
        return []
    before = json.loads(saved_args.read_text())
    now = json.loads(json.dumps(run_record, default=str))  # the same JSON round trip as the saved record
    return [
        (key, before.get(key), now.get(key))
        for key in sorted(set(before) | set(now))
        if key not in NEUTRAL_OPTIONS and before.get(key) != now.get(key)
    ]


def train(args: argparse.Namespace) -> dict:
    """Run a training job from parsed options (:func:`~hlp_audio.training.parse_train_args`); returns its results."""
    output_dir = Path(args.output_dir)
    log_with = None
    if args.report_to != "none":
        if importlib.util.find_spec("tensorboard") is not None:
            log_with = "tensorboard"
        elif args.report_to == "tensorboard":
            raise ImportError("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=str(output_dir),
    )

    # ---------------------------------------------------------------------------- model and data
    set_seed(args.seed)  # the initial weights of a model trained from scratch (or of a new head)
    ontology = load_ontology(args)
    model, feature_extractor, ontology = build_model(
        ontology=ontology,
        model_name_or_path=args.model_name_or_path,
        backbone_type=args.backbone_type,
        backbone_size=args.backbone_size,
        backbone_overrides=args.backbone_config,
        post_hlp=args.post_hlp,
        hlp_targets=args.hlp,
    )
    if args.freeze_body:
        model.freeze_backbone()
    sampling_rate = int(feature_extractor.sampling_rate)
    # the data is checked before anything is trained (a missing or undecodable clip fails now, not hours in)
    skipped = SkippedClips(output_dir / "skipped_clips.jsonl", accelerator)
    train_data = build_train_data(args, ontology, sampling_rate, accelerator, report=skipped.path)
    loss_mask = None
    if train_data.annotated_classes is not None:  # --loss-on-annotated-classes; after HLP: with the propagated ancestors
        loss_mask = torch.from_numpy(train_data.annotated_classes)
    eval_loader = None
    if args.eval_data:
        eval_loader = build_eval_loader(
            args.eval_data, args.eval_config, args.eval_split, args, ontology, sampling_rate, args.eval_clip_seconds,
            args.eval_batch_size, accelerator, report=skipped.path,
        )

    # ---------------------------------------------------------------------------- optimisation
    optimizer = build_optimizer(
        model, lr=args.lr, weight_decay=args.weight_decay, head_lr=args.head_lr, head_prefix="backbone.classifier."
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    train_data.prepare(accelerator)
    updates_per_epoch = math.ceil(len(train_data) / args.gradient_accumulation_steps)
    total_steps = updates_per_epoch * args.epochs
    warmup_steps = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    scheduler = build_lr_scheduler(optimizer, warmup_steps=min(warmup_steps, total_steps), total_steps=total_steps, min_lr_ratio=args.min_lr_ratio)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)
    if train_data.checkpoint is not None:  # where each process's stream stands
        accelerator.register_for_checkpointing(train_data.checkpoint)
    unwrapped = accelerator.unwrap_model(model)
    front_end = build_front_end(unwrapped, feature_extractor).to(accelerator.device)
    time_axis, freq_axis = feature_axes(unwrapped)
    run_record = {**vars(args), "num_processes": accelerator.num_processes, "train_clips": train_data.clips}
    if args.eval_data and not args.eval_name:  # the card names the evaluation set; never a local path
        source = str(args.eval_data)
        name = Path(source).name if Path(source).exists() else source  # a Hub id is a fine name
        run_record["eval_name"] = name + (f" [{args.eval_split}]" if args.eval_split else "")
    run_record.pop("hub_token")  # never written to disk
    if loss_mask is not None:
        loss_mask = loss_mask.to(accelerator.device)
        run_record["annotated_classes"] = [ontology.labels[i] for i in torch.nonzero(loss_mask).flatten().tolist()]
    best_metric = args.best_metric or ("map_hlp" if args.hlp else "map") + ("_post" if args.post_hlp else "")

    if args.resume:
        checkpoint = find_checkpoint(output_dir, args.resume)
        accelerator.print(f"resuming from {checkpoint}")
        changed = changed_recipe(output_dir / "training_args.json", run_record)
        if changed:
            accelerator.print(
                "warning: the recipe differs from the interrupted run's, so the result will differ from an "
                "uninterrupted run: " + "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed)
            )
        accelerator.load_state(str(checkpoint))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_args.json").write_text(json.dumps(run_record, indent=2, default=str))
    if log_with:
        accelerator.init_trackers("train", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    def log(values: dict, step: int) -> None:
        if log_with:
            accelerator.log(values, step=step)
        if accelerator.is_main_process:
            with open(output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")

    def save_checkpoint() -> None:
        path = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{progress.global_step:08d}"
        train_data.before_checkpoint(accelerator)
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            existing = sorted((output_dir / "checkpoints").glob(CHECKPOINT_PREFIX + "*"))
            for old in existing[: max(0, len(existing) - args.checkpoints_total_limit)]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    def evaluate(epoch: int) -> None:
        """Evaluate the model of ``epoch`` (completed, and saved in a checkpoint first); keep it if it is the best."""
        logits, labels = predict(model, eval_loader, front_end, accelerator, progress=not args.no_progress, skipped=skipped.current)
        num_skipped = skipped.report(f"evaluation after epoch {epoch}")
        check_clip_count(eval_loader, len(logits), num_skipped)
        metrics = compute_hierarchical_map(logits, labels, ontology)
        metrics["num_skipped"] = num_skipped
        progress.history.append({"epoch": epoch, "step": progress.global_step, **metrics})
        log({f"eval/{key}": value for key, value in metrics.items()}, progress.global_step)
        accelerator.print(
            f"epoch {epoch}: " + ", ".join(f"{key} {metrics[key]:.4f}" for key in ("map", "map_post", "map_hlp", "map_hlp_post"))
        )
        if progress.best_metric is None or metrics[best_metric] > progress.best_metric:
            progress.best_metric, progress.best_epoch = metrics[best_metric], epoch
            save_trained_model(accelerator, model, feature_extractor, output_dir / "best", args=run_record, metrics=metrics, progress=progress)

    accelerator.print(
        f"{train_data.clips} training clips, {updates_per_epoch} optimizer steps per epoch x {args.epochs} epochs, "
        f"{accelerator.num_processes} process(es), effective batch {args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes}"
    )

    # ---------------------------------------------------------------------------- loop
    stopped = False
    running_loss = torch.zeros((), device=accelerator.device)
    running_count = 0

    def log_loss(epoch_position: float) -> float:
        """Log the mean training loss (over processes) of the batches since the last call, and start a new mean."""
        nonlocal running_count
        mean_loss = accelerator.reduce(running_loss / running_count, reduction="mean").item()
        running_loss.zero_()
        running_count = 0
        log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0], "train/epoch": epoch_position}, progress.global_step)
        return mean_loss

    evaluated = {row["epoch"] for row in progress.history}
    if eval_loader is not None and progress.epoch and not progress.batches_in_epoch and progress.epoch not in evaluated:
        evaluate(progress.epoch)  # the checkpoint of a finished epoch whose evaluation did not finish
    for epoch in range(progress.epoch, args.epochs):
        loader = train_data.epoch(epoch, progress.batches_in_epoch, accelerator)
        model.train()
        if args.freeze_body:  # linear probing: the body also keeps its batch-norm statistics and skips dropout
            unwrapped.backbone.eval()
            unwrapped.classifier.train()
        bar = tqdm(
            total=len(train_data),
            initial=progress.batches_in_epoch,
            desc=f"epoch {epoch + 1}/{args.epochs}",
            disable=args.no_progress or not accelerator.is_local_main_process,
        )
        for batch in loader:
            skipped.add(batch["skipped"])
            if "waveform" not in batch:
                raise ValueError(f"every clip of a batch was skipped as undecodable: {batch['skipped'][:3]} ...")
            seed_everything_for_step(args.seed, progress.micro_step, accelerator.process_index)
            rng = step_rng(args.seed, progress.micro_step, accelerator.process_index)
            with accelerator.accumulate(model):
                with torch.no_grad():
                    features = front_end(batch["waveform"])
                    targets = batch["labels"]
                    if args.time_mask or args.freq_mask:
                        features = mask_time_frequency(
                            features, rng, time_axis=time_axis, freq_axis=freq_axis,
                            time_mask=args.time_mask, freq_mask=args.freq_mask,
                            num_time_masks=args.num_time_masks, num_freq_masks=args.num_freq_masks,
                        )
                    if args.mixup:
                        features, targets = mixup(features, targets, args.mixup, rng)
                loss = model(input_values=features, labels=targets, loss_mask=loss_mask).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += loss.detach()
            running_count += 1
            progress.micro_step += 1
            progress.batches_in_epoch += 1
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            progress.global_step += 1
            if progress.global_step % args.logging_steps == 0:
                mean_loss = log_loss(epoch + progress.batches_in_epoch / len(train_data))
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if args.checkpointing_steps and progress.global_step % args.checkpointing_steps == 0:
                save_checkpoint()
            if args.stop_after_steps and progress.global_step >= args.stop_after_steps and progress.batches_in_epoch < len(train_data):
                stopped = True
                break
        bar.close()
        if stopped:
            save_checkpoint()
            break

        # ---------------------------------------------------------------- end of epoch
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        if running_count:
            log_loss(epoch + 1)
        count = skipped.report(f"epoch {epoch + 1}")
        if count:
            log({"train/skipped_clips": count}, progress.global_step)
        if args.stop_after_steps and progress.global_step >= args.stop_after_steps and epoch + 1 < args.epochs:
            stopped = True
        save_checkpoint()  # before evaluating: a bad evaluation set must not lose the epoch
        if eval_loader is not None:
            evaluate(epoch + 1)
        if stopped:
            break

    if stopped:
        accelerator.print(f"stopped after {progress.global_step} optimizer steps; continue with --resume")
    results = {"global_step": progress.global_step, "epoch": progress.epoch, "stopped": stopped, "history": progress.history}
    if not stopped:
        final_metrics = progress.history[-1] if progress.history else None
        save_trained_model(accelerator, model, feature_extractor, output_dir / "final", args=run_record, metrics=final_metrics, progress=progress)
        results.update(best_metric=best_metric, best_value=progress.best_metric, best_epoch=progress.best_epoch)
        if accelerator.is_main_process:
            (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        if args.push_to_hub and accelerator.is_main_process:
            folder = output_dir / "best" if (output_dir / "best").is_dir() else output_dir / "final"
            commit = publish_model(
                folder, args.push_to_hub, private=args.hub_private, token=args.hub_token, license=args.hub_license
            )
            accelerator.print(f"pushed {folder} to {args.push_to_hub}: {commit}")
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return results
