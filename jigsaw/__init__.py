"""Jigsaw-puzzle self-supervised pretraining of the Context-Free Network (Noroozi & Favaro 2016)."""
from .cfn import CFN
from .permutations import load_permutations, make_permutations, save_permutations

__all__ = ["CFN", "make_permutations", "load_permutations", "save_permutations"]
