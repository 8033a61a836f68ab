"""Protobuf text format (.prototxt) reader that reports errors by file:line and skips unknown fields with a warning."""
import re
import warnings
from typing import Any, Optional

from google.protobuf.descriptor import FieldDescriptor as FD

from ..run.atomic import read_bounded
from ..run.decoding import decoding
from ..run.errors import CaffeError, where

MAX_TEXT_BYTES = 64 << 20  # a prototxt is a few KB; refuse anything absurd before reading it
MAX_DEPTH = 64

_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?))
  | (?P<ident>[-]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:;,\[\]])
""", re.VERBOSE)

_INT_RANGES = {
    FD.TYPE_INT32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_UINT32: (0, (1 << 32) - 1),
    FD.TYPE_FIXED32: (0, (1 << 32) - 1), FD.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1), FD.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_UINT64: (0, (1 << 64) - 1), FD.TYPE_FIXED64: (0, (1 << 64) - 1),
}
_FLOATS = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _repeated(field):
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6 drops `label`
    return flag if flag is not None else field.label == FD.LABEL_REPEATED


class UnknownFieldWarning(UserWarning):
    """A field the schema does not know was skipped."""


def _tokenize(text, path):
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise CaffeError(f"{where(path, line, pos - line_start + 1)}: unexpected character "
                             f"{text[pos]!r}")
        kind = m.lastgroup
        if kind != "ws":
            tokens.append((kind, m.group(), line, pos - line_start + 1))
        newlines = m.group().count("\n")
        if newlines:
            line += newlines
            line_start = m.start() + m.group().rindex("\n") + 1
        pos = m.end()
    return tokens


def _unescape(body, loc):
    out, i = bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif nxt in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise CaffeError(f"{loc}: bad \\x escape in string")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        else:
            raise CaffeError(f"{loc}: unknown escape \\{nxt} in string")
    return bytes(out)


def _enum_value(field, kind, text):
    """An enum field's number, from its name or its number; KeyError when the enum has neither."""
    if kind == "number":
        number = int(text, 0)
        if field.enum_type.values_by_number.get(number) is None:
            raise KeyError(text)
        return number
    value = field.enum_type.values_by_name.get(text)
    if value is None:
        raise KeyError(text)
    return value.number


def _number(field, kind, text, loc):
    """A float or integer field's value as protobuf's text format reads it (inf / nan, hex, octal, a trailing
    f on floats); ValueError when it is not one, one line when an integer is out of its type's range."""
    t = field.type
    if t in _FLOATS:
        low = text.lower().lstrip("+")
        if kind == "ident" and low in ("inf", "-inf", "infinity", "-infinity", "nan", "-nan"):
            return float(low)
        if kind != "number":
            raise ValueError(text)
        if "x" in text.lower():
            return float(int(text, 16))
        return float(text.rstrip("fF"))
    if kind != "number" or ("x" not in text.lower() and text[-1] in "fF"):
        raise ValueError(text)
    value = int(text, 8) if re.fullmatch(r"[-+]?0[0-7]+", text) else int(text, 0)
    low, high = _INT_RANGES[t]
    if not low <= value <= high:
        raise CaffeError(f"{loc}: '{field.name}' = {value} is out of range [{low}, {high}]")
    return value


class _Parser:
    def __init__(self, text, path):
        self.tokens = _tokenize(text, path)
        self.i = 0
        self.path = path

    def loc(self, tok=None):
        tok = tok or (self.tokens[self.i] if self.i < len(self.tokens) else None)
        if tok is None:
            return f"{where(self.path)}: at end of file"
        return where(self.path, tok[2], tok[3])

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            raise CaffeError(f"{self.loc()}: unexpected end of file")
        self.i += 1
        return tok

    def accept(self, text):
        tok = self.peek()
        if tok is not None and tok[0] == "punct" and tok[1] == text:
            self.i += 1
            return True
        return False

    def message(self, msg, close, context, depth):
        if depth > MAX_DEPTH:
            raise CaffeError(f"{self.loc()}: messages nested deeper than {MAX_DEPTH}")
        seen = set()
        while True:
            tok = self.peek()
            if tok is None:
                if close is None:
                    return
                raise CaffeError(f"{self.loc()}: missing '{close}' to close {context}")
            if tok[0] == "punct" and tok[1] == close:
                self.i += 1
                return
            name_tok = self.take()
            if name_tok[0] != "ident":
                raise CaffeError(f"{self.loc(name_tok)}: expected a field name in {context}, "
                                 f"found {name_tok[1]!r}")
            name = name_tok[1]
            field = msg.DESCRIPTOR.fields_by_name.get(name)
            if field is None:
                if isinstance(msg, _Sink):
                    self.skip_value(depth)
                    self.accept(";") or self.accept(",")
                    continue
                warnings.warn(f"{self.loc(name_tok)}: unknown field '{name}' in "
                              f"{msg.DESCRIPTOR.name} ({context}), skipped", UnknownFieldWarning,
                              stacklevel=2)
                self.skip_value(depth)
            else:
                if not _repeated(field) and name in seen:
                    raise CaffeError(f"{self.loc(name_tok)}: field '{name}' given twice in {context}")
                seen.add(name)
                self.field_value(msg, field, context, depth)
            self.accept(";") or self.accept(",")

    def field_value(self, msg, field, context, depth):
        is_msg = field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP)
        colon = self.accept(":")
        if is_msg:
            if self.accept("["):
                while not self.accept("]"):
                    self.sub_message(msg, field, context, depth)
                    self.accept(",")
                return
            self.sub_message(msg, field, context, depth)
            return
        if not colon:
            raise CaffeError(f"{self.loc()}: expected ':' after '{field.name}'")
        if self.accept("["):
            if not _repeated(field):
                raise CaffeError(f"{self.loc()}: '{field.name}' is not repeated; a list was given")
            while not self.accept("]"):
                getattr(msg, field.name).append(self.scalar(field))
                self.accept(",")
            return
        value = self.scalar(field)
        if _repeated(field):
            getattr(msg, field.name).append(value)
        else:
            setattr(msg, field.name, value)

    def sub_message(self, msg, field, context, depth):
        open_tok = self.take()
        if open_tok[0] != "punct" or open_tok[1] not in "{<":
            raise CaffeError(f"{self.loc(open_tok)}: expected '{{' after '{field.name}'")
        close = "}" if open_tok[1] == "{" else ">"
        if _repeated(field):
            sub = getattr(msg, field.name).add()
        else:
            sub = getattr(msg, field.name)
            sub.SetInParent()
        label = field.name
        if field.name in ("layer", "layers") and _repeated(field):
            label = f"{field.name} #{len(getattr(msg, field.name))} at line {open_tok[2]}"
        self.message(sub, close, f"{context} > {label}" if context != "net" else label, depth + 1)

    def scalar(self, field):
        tok = self.take()
        kind, text = tok[0], tok[1]
        loc = self.loc(tok)
        t = field.type
        try:
            if t == FD.TYPE_STRING or t == FD.TYPE_BYTES:
                if kind != "string":
                    raise CaffeError(f"{loc}: '{field.name}' expects a quoted string, found {text!r}")
                raw = _unescape(text[1:-1], loc)
                while self.peek() is not None and self.peek()[0] == "string":
                    raw += _unescape(self.take()[1][1:-1], loc)
                return raw if t == FD.TYPE_BYTES else raw.decode("utf-8")
            if t == FD.TYPE_BOOL:
                if text in ("true", "True", "t", "1"):
                    return True
                if text in ("false", "False", "f", "0"):
                    return False
                raise CaffeError(f"{loc}: '{field.name}' expects true or false, found {text!r}")
            if t == FD.TYPE_ENUM:
                return _enum_value(field, kind, text)
            return _number(field, kind, text, loc)
        except CaffeError:
            raise
        except KeyError:
            names = ", ".join(v.name for v in field.enum_type.values)
            raise CaffeError(f"{loc}: '{field.name}' expects one of {names}; found {text!r}") from None
        except ValueError:
            kind_name = "a number" if t in _FLOATS else "an integer"
            raise CaffeError(f"{loc}: '{field.name}' expects {kind_name}, found {text!r}") from None

    def skip_value(self, depth):
        if depth > MAX_DEPTH:
            raise CaffeError(f"{self.loc()}: messages nested deeper than {MAX_DEPTH}")
        colon = self.accept(":")
        tok = self.take()
        if tok[0] == "punct" and tok[1] in "{<":
            self.message(_Sink(), "}" if tok[1] == "{" else ">", "skipped field", depth + 1)
        elif tok[0] == "punct" and tok[1] == "[":
            while not self.accept("]"):
                nxt = self.peek()
                if nxt is None:
                    raise CaffeError(f"{self.loc()}: missing ']' to close a skipped list")
                self.skip_value(depth + 1) if nxt[1] in "{<" else self.take()
                self.accept(",")
        elif not colon:
            raise CaffeError(f"{self.loc(tok)}: expected ':' or '{{' after a field name")
        elif tok[0] == "string":
            while self.peek() is not None and self.peek()[0] == "string":
                self.take()


class _Descriptor:
    name = "unknown message"
    fields_by_name = {}


class _Sink:
    """Swallows the contents of an unknown message field."""
    DESCRIPTOR = _Descriptor()


def parse_text(text: str, msg: Any, path: Optional[str] = None) -> Any:
    """Parse protobuf text `text` into `msg` (merging); returns msg."""
    if len(text) > MAX_TEXT_BYTES:
        raise CaffeError(f"{where(path)}: text file larger than {MAX_TEXT_BYTES >> 20} MB")
    parser = _Parser(text, path)
    parser.message(msg, None, "net" if msg.DESCRIPTOR.name == "NetParameter"
                   else msg.DESCRIPTOR.name, 0)
    return msg


def read_text(path: str, msg: Any) -> Any:
    """Read a .prototxt file into message `msg`."""
    raw = read_bounded(path, MAX_TEXT_BYTES, "text file")
    with decoding(path, "text", make=lambda e: CaffeError(
            f"{path}: not a text prototxt (byte {getattr(e, 'start', '?')} is not UTF-8; is this a binary .caffemodel?)")):
        text = raw.decode("utf-8")
    return parse_text(text, msg, path)
