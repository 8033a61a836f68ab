"""Jigsaw-puzzle self-supervised pretraining of the Context-Free Network (Noroozi & Favaro 2016)."""
