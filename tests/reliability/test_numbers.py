"""Every numeric setting of every config declares its range once, on its field, and is checked against it
however it comes: an option, a --config file, a run record, Python (issue 26 §4)."""
import argparse
import dataclasses
import math
import typing

import pytest

from jigsaw.config import ConvertConfig, EvaluateConfig, PermutationsConfig, PrepareConfig, TrainConfig
from tools.run.errors import UserError
from tools.run.options import add_options
from transfer.config import FinetuneConfig, ProbeConfig

REQUIRED = {TrainConfig: dict(out="o"), PermutationsConfig: dict(output="p.npy"),
            PrepareConfig: dict(source="s", output="o.h5"), EvaluateConfig: dict(weights="w", data="d"),
            ConvertConfig: dict(source="s", output="o"), FinetuneConfig: dict(dataset="mnist", model="mlp", out="o"),
            ProbeConfig: dict(dataset="mnist", model="mlp", out="o")}


def _numeric_fields():
    for cls in REQUIRED:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if a in (int, float)]
            rule = f.metadata.get("type")
            if kinds or (hints[f.name] is tuple and rule in (int, float) or hasattr(rule, "range_check")):
                yield cls, f


FIELDS = list(_numeric_fields())


def _bad_values(f):
    """Values outside the field's declared rule (and NaN / inf for floats)."""
    rule = f.metadata["type"]
    text = rule.rule
    out = []
    kind = float if isinstance(f.default, float) or "float" in str(f.type) else int
    if kind is float:
        out += [math.nan, math.inf, -math.inf]
    if text.startswith(("positive", "0 or more", "at least", "above")):
        out.append(-1 if kind is int else -1.5)
    hi = text.split("at most ")[-1] if "at most" in text else text.split("below ")[-1] if "below" in text else None
    if hi is not None:
        out.append(kind(float(hi) * 2 + 1) if kind is int else float(hi) * 2 + 1)
    return out


def test_every_numeric_field_declares_its_range():
    missing = [f"{cls.__name__}.{f.name}" for cls, f in FIELDS if not hasattr(f.metadata.get("type"), "range_check")]
    assert not missing and len(FIELDS) > 50, missing


@pytest.mark.parametrize("cls, f", FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in FIELDS])
def test_out_of_range_values_are_refused_in_python_files_and_records(cls, f):
    bad = _bad_values(f)
    assert bad, f.name
    for value in bad:
        value = (value,) if f.metadata.get("nargs") in ("+", "*") else value
        with pytest.raises(UserError, match=f"setting '{f.name}'"):
            cls(**{**REQUIRED[cls], f.name: value})


@pytest.mark.parametrize("cls, f", [(c, f) for c, f in FIELDS if "help" in f.metadata],
                         ids=[f"{c.__name__}.{f.name}" for c, f in FIELDS if "help" in f.metadata])
def test_out_of_range_values_are_refused_on_the_command_line(cls, f, capsys):
    parser = argparse.ArgumentParser()
    add_options(parser, cls, not_required=[g.name for g in dataclasses.fields(cls)])
    flag = next(a for a in parser._actions if a.dest == f.name).option_strings
    for value in _bad_values(f) + ["nan", "abc"]:
        args = [str(value)] if not flag else [flag[-1], str(value)]
        with pytest.raises(SystemExit) as e:
            parser.parse_args(args)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "must be" in err or "expected" in err or "invalid" in err, err


def test_tile_without_cell_is_refused():
    with pytest.raises(UserError, match="--tile .* with --cell"):
        TrainConfig(out="o", tile=32)


@pytest.mark.parametrize("spec, said", [("zoom=-5", "zoom must be 0 or more"), ("zoom=1", "below 1"),
                                        ("rotation=nan", "rotation must be"), ("shift=abc", "expected a number"),
                                        ("blur=2", "unknown augmentation")])
def test_augmentations_are_checked_on_the_command_line(spec, said):
    from transfer.config import augment_spec
    with pytest.raises(argparse.ArgumentTypeError, match=said):
        augment_spec(spec)


@pytest.mark.parametrize("augment, said", [({"zoom": -5}, "must be 0 or more"), ({"shear": 1e9}, "at most 90"),
                                           ({"hflip": "yes"}, "expected true or false"),
                                           ({"rotation": "10"}, "expected a number"), ({"blur": 1}, "unknown")])
def test_augmentations_from_a_file_or_a_record_are_checked(augment, said):
    with pytest.raises(UserError, match=said):
        FinetuneConfig(**REQUIRED[FinetuneConfig], augment=augment)
    assert FinetuneConfig(**REQUIRED[FinetuneConfig], augment={"rotation": 10, "hflip": True}).augment["hflip"]
