"""Typed section models on pydantic v2, with our error messages.

pydantic gives each section its fields, types and defaults in one class and collects every
error of a section with its location. Its own messages ("Input should be a valid integer")
name neither the key path as a user writes it nor what is allowed, so each field type here
raises one custom error carrying our full message, and :func:`validate` prefixes the section's
key path. A broken key falls back to its default (a second, lenient pass without the broken
keys), so later sections are checked against sensible values and a file's errors come at once.
Keys a section does not declare are kept (``extra="allow"``) and reported by
:meth:`Check.unused`: a near miss is an error with "did you mean", the rest are warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from pipeline.schema.check import Check, is_int, is_number, show
from pipeline.schema.keys import near_miss

S = TypeVar("S", bound="Section")
LENIENT = "lenient"  # context flag of the fallback pass: required keys and cross checks relax


def fail(message: str) -> PydanticCustomError:
    """An error whose text is ``message`` as is (braces in it are not placeholders)."""
    return PydanticCustomError("strategy", "{message}", {"message": message})


def whole(minimum: int) -> Any:
    """A whole number >= ``minimum``; ``true`` and ``14.0`` are refused."""
    def check(value: Any) -> int:
        if not is_int(value) or value < minimum:
            raise fail(f"{show(value)} is not allowed; a whole number >= {minimum}")
        return int(value)
    return Annotated[int, BeforeValidator(check)]


def number(allowed: str, ok: Callable[[float], bool]) -> Any:
    """A finite number (an int is fine) for which ``ok`` holds; ``allowed`` says the range."""
    def check(value: Any) -> float:
        if not is_number(value) or not ok(value):
            raise fail(f"{show(value)} is not allowed; a number {allowed}")
        return float(value)
    return Annotated[float, BeforeValidator(check)]


def choice(allowed: tuple[str, ...]) -> Any:
    """One of ``allowed``, case-insensitive (KTRDR lower-cases these too)."""
    def check(value: Any) -> str:
        text = value.lower() if isinstance(value, str) else value
        if text not in allowed:
            raise fail(f"{show(value)} is not allowed; allowed: {', '.join(allowed)}")
        return text
    return Annotated[str, BeforeValidator(check)]


class Section(BaseModel):
    """A mapping of the strategy file. ``null`` for a key means its default, as in KTRDR."""

    model_config = ConfigDict(extra="allow", validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise fail(f"must be a mapping, got {show(data)}")
        return {k: v for k, v in data.items() if v is not None}

    # Per-key text for a required key that is missing (pydantic's own says "Field required").
    MISSING: ClassVar[dict[str, str]] = {}

    def known(self) -> tuple[str, ...]:
        """The keys this section reads; may depend on its values (cost_model for regression)."""
        return tuple(type(self).model_fields)


def validate(cls: type[S], data: Any, path: str, check: Check, **context: Any) -> S:
    """``data`` as ``cls``; every error goes to ``check`` as ``path.key: message``. Returns the
    model with each broken key at its default, so the caller always has values to go on."""
    data = {} if data is None else data
    checked, typed_as = _as_meant(cls, data)
    try:
        section = cls.model_validate(checked, context=context)
    except ValidationError as exc:
        broken = set()
        for error in exc.errors():
            loc = error["loc"]
            if loc:
                broken.add(loc[0])
                loc = (typed_as.get(loc[0], loc[0]), *loc[1:])  # the key as the file has it
            check.error(_join(path, loc), _message(cls, error))
        section = _fallback(cls, checked, broken, context)
    if isinstance(data, Mapping):
        check.unused(data, section.known(), f"{path}." if path else "")
    return section


def _as_meant(cls: type[Section], data: Any) -> tuple[Any, dict[str, str]]:
    """``data`` with each near-miss key read as the key meant, and meant -> typed keys.

    The typo itself is reported once, by :meth:`Check.unused`; reading its value under the
    meant key checks that value too, and spares a second error saying the meant key is missing.
    """
    if not isinstance(data, Mapping):
        return data, {}
    fields = tuple(cls.model_fields)
    typed_as: dict[str, str] = {}
    for key in data:
        meant = near_miss(str(key), fields) if key not in fields else None
        if meant is not None and meant not in data and meant not in typed_as:
            typed_as[meant] = key
    renamed = {typed: meant for meant, typed in typed_as.items()}
    return {renamed.get(k, k): v for k, v in data.items()}, typed_as


def _fallback(cls: type[S], data: Any, broken: set, context: dict) -> S:
    kept = {k: v for k, v in data.items() if k not in broken} if isinstance(data, Mapping) else {}
    try:
        return cls.model_validate(kept, context={**context, LENIENT: True})
    except ValidationError:  # a required key is broken: the caller gets no value for it
        return cls.model_construct(**kept)


def _join(path: str, loc: tuple) -> str:
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "(file)"


def _message(cls: type[Section], error: Mapping[str, Any]) -> str:
    if error["type"] == "strategy":
        return str(error["ctx"]["message"])
    if error["type"] == "missing":
        return cls.MISSING.get(str(error["loc"][-1]), "missing; required")
    return f"{show(error.get('input'))} is not allowed; {error['msg']}"


def lenient(info: Any) -> bool:
    """True in the fallback pass (``info`` is pydantic's ValidationInfo)."""
    return bool(info.context and info.context.get(LENIENT))
