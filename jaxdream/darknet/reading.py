"""Reading a cfg section's options: typed readers, and errors that point at the file, line and section."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxdream.errors import CfgError

Reader = Callable[[str], Any]
INT_LIMIT = 2**31 - 1  # Darknet reads ints as C ints; anything larger is a typo or an attack, never a network


def read_int(text: str) -> int:
    value = int(text.strip())
    if abs(value) > INT_LIMIT:
        raise ValueError("out of range")
    return value


def read_float(text: str) -> float:
    value = float(text.strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def read_word(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("empty")
    return value


def read_ints(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty list")
    return tuple(read_int(p) for p in parts)


TYPE_WORDS = {
    read_int: f"an integer of at most {INT_LIMIT} in size", read_float: "a number", read_word: "a word",
    read_ints: f"a comma-separated list of integers of at most {INT_LIMIT} in size",
}


@dataclass
class Section:
    name: str
    line: int
    options: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)


class Reading:
    """Typed option access for one section (its keys and their readers), with errors at the right line."""

    def __init__(self, source: str, section: Section, keys: dict[str, Reader]):
        self.source, self.section, self.keys = source, section, keys

    def fail(self, message: str, line: int | None = None) -> CfgError:
        return CfgError(f"{self.source}:{line or self.section.line}: [{self.section.name}] {message}")

    def has(self, key: str) -> bool:
        return key in self.section.options

    def get(self, key: str, default: Any) -> Any:
        if key not in self.section.options:
            return default
        text, line = self.section.options[key]
        reader = self.keys[key]
        try:
            return reader(text)
        except ValueError:
            raise self.fail(f"{key}={text!r} is not {TYPE_WORDS[reader]}", line) from None

    def positive(self, key: str, default: int) -> int:
        value = self.get(key, default)
        if value < 1:
            raise self.fail(f"{key}={value} must be at least 1", self.line(key))
        return value

    def choice(self, key: str, default: str, valid: tuple[str, ...]) -> str:
        value = self.get(key, default)
        if value not in valid:
            raise self.fail(f"{key}={value!r} is unknown; valid: {', '.join(valid)}", self.line(key))
        return value

    def line(self, key: str) -> int:
        return self.section.options.get(key, ("", self.section.line))[1]

    def layer_index(self, key: str, offset: int, index: int) -> int:
        """The absolute index an offset (negative: relative) points at; an error unless it is an earlier layer."""
        absolute = index + offset if offset < 0 else offset
        if not 0 <= absolute < index:
            raise self.fail(
                f"{key}={offset} points at layer {absolute}, which does not exist before layer {index}; "
                f"use a negative offset (-1 .. -{index}) or an absolute index 0 .. {index - 1}", self.line(key))
        return absolute
