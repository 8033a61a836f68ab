"""Solver text shared by the recipes."""
ADAM = 'type: "Adam" base_lr: {lr} momentum: 0.9 momentum2: 0.999 lr_policy: "fixed"'
