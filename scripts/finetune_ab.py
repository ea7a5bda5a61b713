#!/usr/bin/env python
"""Fine-tune the converted EfficientAT mn04 on UrbanSound8K's leaf labels, with and without HLP, and compare.

Arms (same recipe and seeds): (a) the pretrained model; (b) fine-tuned on base labels; (c) with
--hlp; (d) with --hlp --loss-on-annotated-classes. Trains on fold 2, scores on fold 10::

    python scripts/finetune_ab.py --data-dir ../shared/data/urbansound8k \
        --checkpoint ../shared/data/models/efficientat_mn04_as/mn04_as_mAP_432.pt --out outputs/finetune_ab

Writes OUT/results/{metrics.md, metrics.json, parent_ap.png}; see ``--help`` and
:mod:`hlp_audio.training.finetune_ab`.
"""

from hlp_audio.training.finetune_ab import main

if __name__ == "__main__":
    main()
