#!/usr/bin/env python
"""Fine-tune an HLP audio tagger (AST, PaSST or EfficientAT backbone) with or without HLP labels.

Runs on CPU, one GPU or many with accelerate::

    accelerate launch scripts/train.py --train-manifest train.csv --eval-manifest eval.csv \
        --model-name-or-path converted/ast-audioset --hlp --mixup 0.5 --mixed-precision bf16 \
        --output-dir runs/ast-hlp

See ``--help`` for every option; the loop is :func:`hlp_audio.training.train`.
"""

from hlp_audio.training import parse_train_args, train

if __name__ == "__main__":
    train(parse_train_args())
