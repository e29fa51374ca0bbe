"""Rows → document text for `sharded-mix prepare`: a text field or a template over several fields, and row filters.

Pure: a ``RecordFormat`` turns one row (a dict) into its text, or None when a filter drops the row. Fields are
looked up through aliases (``question`` → the first of ``question``, ``instruction`` present in the row), so one
template serves datasets whose column names differ.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FILTER_OPS = ("==", "!=", ">=", "<=", ">", "<", "endswith", "startswith", "contains", "matches", "in")
"""``--where`` operators; the word operators take a ``not-`` prefix (``not-endswith``)."""

_WHERE = re.compile(
    r"^\s*(?P<field>[A-Za-z_][\w.-]*)\s+(?P<op>(?:not-)?(?:endswith|startswith|contains|matches|in)|==|!=|>=|<=|>|<)\s+(?P<value>.*?)\s*$"
)
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` typed on a command line → the characters (other text untouched)."""
    return re.sub(r"\\\\|\\n|\\t", lambda match: _ESCAPES[match.group(0)], text)


@dataclass(frozen=True)
class RowFilter:
    """One ``--where FIELD OP VALUE`` condition."""

    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        match = _WHERE.match(text)
        if match is None:
            raise ValueError(
                f"--where {text!r} is not 'FIELD OP VALUE'; OP is one of {', '.join(FILTER_OPS)} "
                "(word operators also as not-OP), e.g. --where 'path endswith .py'"
            )
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        row_filter = cls(match["field"], match["op"], value)
        if row_filter.op.removeprefix("not-") == "matches":
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"--where {text!r}: {value!r} is not a regular expression ({err})") from err
        if row_filter.op in (">=", "<=", ">", "<"):
            _number(value, f"--where {text!r}")
        return row_filter

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"

    def keeps(self, value: Any) -> bool:
        """Whether a row whose field holds ``value`` passes (a missing or null value never passes)."""
        if value is None:
            return False
        op = self.op
        negate = op.startswith("not-")
        op = op.removeprefix("not-")
        if op in (">=", "<=", ">", "<"):
            number, bound = _number(value, f"--where {self}"), _number(self.value, f"--where {self}")
            return {">=": number >= bound, "<=": number <= bound, ">": number > bound, "<": number < bound}[op]
        text = value if isinstance(value, str) else str(value)
        if op == "==":
            return text == self.value
        if op == "!=":
            return text != self.value
        result = {
            "endswith": lambda: text.endswith(tuple(self.value.split(","))),
            "startswith": lambda: text.startswith(tuple(self.value.split(","))),
            "contains": lambda: self.value in text,
            "matches": lambda: re.search(self.value, text) is not None,
            "in": lambda: text in self.value.split(","),
        }[op]()
        return result != negate


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number; compare numbers with >=, <=, >, <") from None


@dataclass(frozen=True)
class RecordFormat:
    """How a row becomes a document: ``template`` (``{field}``, ``{field?}`` for optional) or ``text_field``.

    An optional field that is missing or empty drops itself and the literal text after it, so
    ``"{instruction}\\n\\n{input?}\\n\\n{output}"`` reads well for rows without an input.
    """

    text_field: str = "text"
    template: str | None = None
    aliases: Mapping[str, Sequence[str]] = field(default_factory=dict)
    where: tuple[RowFilter, ...] = ()

    def __post_init__(self) -> None:
        if self.template is not None:
            self.parts()  # validates

    def parts(self) -> list[tuple[str, str | None, bool]]:
        """The template as ``(literal, field or None, optional)`` triples."""
        if self.template is None:
            return [("", self.text_field, False)]
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as err:
            raise ValueError(
                f"--template {self.template!r} is not a valid template ({err}); write fields as {{name}}"
            ) from err
        parts = []
        for literal, name, spec, conversion in parsed:
            if name is not None and (spec or conversion or not re.fullmatch(r"[\w.-]+\??", name)):
                raise ValueError(
                    f"--template {self.template!r}: write fields as {{name}} or {{name?}}, not {{{name}...}}"
                )
            if name is None:
                parts.append((literal, None, False))
            else:
                parts.append((literal, name.rstrip("?"), name.endswith("?")))
        if not any(name for _, name, _ in parts):
            raise ValueError(f"--template {self.template!r} names no field; write fields as {{name}}")
        return parts

    def fields(self) -> list[str]:
        """The logical fields the template and the filters read."""
        names = [name for _, name, _ in self.parts() if name] + [f.field for f in self.where]
        return list(dict.fromkeys(names))

    def candidates(self, name: str) -> tuple[str, ...]:
        """The row keys a logical field may come from, in order of preference."""
        return tuple(self.aliases.get(name, ())) or (name,)

    def columns(self, available: Sequence[str]) -> dict[str, str | None]:
        """Logical field → the first of its candidates in ``available`` (None when none is)."""
        present = set(available)
        return {name: next((key for key in self.candidates(name) if key in present), None) for name in self.fields()}

    def describe(self) -> str:
        what = f"template {self.template!r}" if self.template is not None else f"field {self.text_field!r}"
        if self.where:
            what += " where " + " and ".join(map(str, self.where))
        return what

    def render(self, row: Mapping[str, Any], where: str) -> str | None:
        """The document of ``row`` (None when a filter drops it; may be blank); ``where`` names the row in errors."""
        for row_filter in self.where:
            if not row_filter.keeps(self._raw(row, row_filter.field, where, "--where", optional=False)):
                return None
        pieces: list[str] = []
        skip_literal = False
        for literal, name, optional in self.parts():
            if literal and not skip_literal:
                pieces.append(literal)
            skip_literal = False
            if name is None:
                continue
            value = self._text(row, name, where, optional)
            if value:
                pieces.append(value)
            elif optional:
                skip_literal = True
        return "".join(pieces)

    def _option(self) -> str:
        return "--text-field" if self.template is None else "--template"

    def _text(self, row: Mapping[str, Any], name: str, where: str, optional: bool) -> str | None:
        value = self._raw(row, name, where, self._option(), optional)
        if value is None or isinstance(value, str):
            return value
        option = self._option()
        raise ValueError(
            f"{option} {name!r} in {where} holds a {type(value).__name__}, not a string; "
            f"pass {option} with the key that holds the text"
        )

    def _raw(self, row: Mapping[str, Any], name: str, where: str, option: str, optional: bool) -> Any:
        for key in self.candidates(name):
            if key in row:
                return row[key]
        if optional:
            return None
        keys = ", ".join(sorted(map(str, row))[:20]) or "none"
        tried = "" if self.candidates(name) == (name,) else f" (tried {', '.join(self.candidates(name))})"
        raise ValueError(
            f"{option} {name!r}{tried} not found in {where} (keys: {keys}); "
            f"pass {option} with the key that holds the text, or --field {name}=KEY[,KEY...]"
        )
