"""AdamW without decay on biases and norms, and a linear-warmup cosine schedule."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

__all__ = ["build_optimizer", "build_lr_scheduler"]


def build_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: Tuple[float, float] = (0.9, 0.999),
    head_lr: Optional[float] = None,
    head_prefix: Optional[str] = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms and other 1-D parameters get no decay.

    With ``head_prefix`` (e.g. ``"backbone.classifier."``) and ``head_lr``, the head gets its own
    learning rate (common when fine-tuning a pre-trained body).
    """
    groups: Dict[Tuple[bool, bool], List[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_head = bool(head_prefix) and name.startswith(head_prefix)
        decays = parameter.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((is_head, decays), []).append(parameter)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    param_groups = []
    for (is_head, decays), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if is_head and head_lr is not None:
            group["lr"] = head_lr
        param_groups.append(group)
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then a half cosine down to ``min_lr_ratio`` * the peak (per group)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, min_lr_rate=min_lr_ratio
    )
