"""Transfer learning: reuse a CFN branch or a torchvision backbone on labelled datasets.

datasets.py (official on-disk formats) -> data.py (loaders, each backbone's own input) -> backbones.py
(one registry) -> finetune.py (head, then fine-tune) or probe.py (linear probes vs random twins) -> plots.
Settings in config.py, the seeds' experiments in recipes.py.
"""
