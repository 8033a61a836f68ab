"""Settings files (`--config`): JSON or YAML, bounded, read into a config dataclass's fields and checked."""
from dataclasses import fields
from typing import Any, Dict, Iterable, Mapping, Optional

from .decoding import decoding
from .errors import UserError, did_you_mean
from .options import check_types
from .paths import user_file

MAX_SETTINGS_BYTES = 1 << 20
INVOCATION = ("resume", "progress")  # how a command was run, not what it does: never taken from a file


def _parse(path: str, text: str) -> Any:
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UserError(f"{path}: YAML needs PyYAML (pip install pyyaml), or give the settings as JSON") from None
        with decoding(path, "yaml", "valid YAML"):  # RecursionError too: a hostile file nests past the stack
            return yaml.safe_load(text)
    import json
    with decoding(path, "json", "valid JSON"):
        return json.loads(text)


def read_settings(path: str, cls: type, extras: Iterable[str] = (), refuse: Optional[Mapping[str, str]] = None,
                  shown_by: str = "") -> Dict[str, Any]:
    """`cls`'s fields from a JSON or YAML file (a run's config.json is one): at most 1 MiB of UTF-8; keys in
    `extras` (what a run record holds beside its settings) are ignored, a key in `refuse` is its one line, any
    other unknown key is an error."""
    user_file(path, "settings file (.json or .yaml)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read the settings file ({e.strerror or e})") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise UserError(f"{path}: over {MAX_SETTINGS_BYTES >> 10} KiB; a settings file is a few lines")
    with decoding(path, "text", make=lambda e: UserError(
            f"{path}: not UTF-8 text (byte {getattr(e, 'start', '?')}); a settings file is JSON or YAML")):
        text = raw.decode("utf-8")
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for key, why in (refuse or {}).items():
        if key in data:
            raise UserError(f"{path}: {why}")
    known = {f.name for f in fields(cls)}
    strange = sorted(str(k) for k in data if k not in known and k not in extras)
    if strange:
        hint = did_you_mean(strange[0], known) if len(strange) == 1 else ""
        raise UserError(f"{path}: unknown setting(s) {', '.join(strange)}{hint} (settings are {cls.__name__}'s "
                        f"fields{', as ' + shown_by + ' prints them' if shown_by else ''})")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                if k in known and k not in INVOCATION}
    return check_types(cls, settings, path)
