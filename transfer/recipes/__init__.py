"""Each seed experiment (shared/SEEDS.md) as a recipe, one small file per seed report; `transfer run
NAME` uses them. A recipe may name a second stage (`then`) that starts from the first stage's model.
Figures in `reported` are the seeds' own: targets to compare with, not copied results."""
from . import seed000, seed001, seed002, seed003, seed004

RECIPES = {}
for _module in (seed000, seed001, seed002, seed003, seed004):
    RECIPES.update(_module.RECIPES)
