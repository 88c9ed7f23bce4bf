"""The one component factory: a class built from `{target, args}`, its arguments checked first.

A component's constructor is its schema. Its type annotations say what each argument takes
(`PositiveInt`, `Probability`, `Literal["relu", "gelu"]`, `list[PositiveInt]`, `int | None`, ...);
`check` validates arguments against them before anything is built, and a component class
(`Checked`) runs the same check when it is constructed directly, so config load, the bundle
and Python code refuse the same values with the same one-line message naming the key. Checks
that relate several arguments live in the class's `check_together(args)`, which gets them all,
defaults included, once each has its type.

Scalars are strict (YAML's `true` is not the integer 1, and "3" is not a number; integers
still count as numbers); a list stands for a tuple, since YAML has no tuples.

This module sits on the ground floor beside `tympan.targets`: config, models, transforms,
augmentations, tasks and datasets build on it, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal, Union

import annotated_types as at
from pydantic import AfterValidator, ConfigDict, Strict, TypeAdapter, ValidationError

from tympan.targets import VARIADIC, first_line, resolve_target

__all__ = [
    "Checked",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Says",
    "Unit",
    "WeightsPath",
    "Widths",
    "all_args",
    "build",
    "check",
    "describe",
]


@dataclasses.dataclass(frozen=True)
class Says:
    """Annotation metadata that words what an argument takes, where the type's own words are
    vague: `Annotated[str, at.MinLen(1), Says("the path of a weights file")]`."""

    text: str


PositiveInt = Annotated[int, at.Gt(0)]
NonNegativeInt = Annotated[int, at.Ge(0)]
PositiveFloat = Annotated[float, at.Gt(0), at.Lt(math.inf)]
NonNegativeFloat = Annotated[float, at.Ge(0), at.Lt(math.inf)]
Probability = Annotated[float, at.Ge(0), at.Lt(1)]  # a dropout rate: 1 would drop everything
Unit = Annotated[float, at.Ge(0), at.Le(1)]  # a chance or a mixing weight, 1 included
Widths = Annotated[list[PositiveInt], at.MinLen(1)]  # layer sizes, one per layer
WeightsPath = Annotated[str, at.MinLen(1), Says("a weights file's path or a published name")]


class Checked:
    """Mixin for components: constructing one checks its arguments against `__init__`'s
    annotations and `check_together`, once, by the class actually built (a subclass's
    `super().__init__(...)` call is not checked again)."""

    requires: tuple[str, ...] = ()  # the PyPI distributions it imports beyond tympan's own (a served model's pip)

    @classmethod
    def requirements(cls, args: dict[str, Any]) -> tuple[str, ...]:
        """What one built with `args` needs installed (a class wrapping another adds the other's)."""
        return cls.requires

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_checks", False):
            return

        @functools.wraps(init)
        def checked_init(self, *args: Any, **kw: Any) -> None:
            if type(self).__init__ is checked_init:
                check(type(self), inspect.signature(type(self)).bind(*args, **kw).arguments)
            init(self, *args, **kw)

        checked_init._checks = True
        cls.__init__ = checked_init

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """Checks that involve more than one argument (each has its type already): a ValueError."""


def check(cls: type, args: dict[str, Any], fixed: Iterable[str] = (), values: bool = True) -> dict[str, Any]:
    """Every argument `cls` is built with from `args` (defaults included), or a ValueError in one
    line naming the first argument that is unknown, of the wrong type, or out of range. `fixed`
    are arguments tympan fills in (from the data or the run): a config that sets one is refused.
    Without `values`, only the names are checked (the caller checks values once it has the rest)."""
    params = _parameters(cls)
    fixed = set(fixed)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    for name in args:
        if name in fixed:
            raise ValueError(f"{name!r} is filled in by tympan (from the data or the run); remove it")
        if name not in params and not takes_any:
            choices = ", ".join(n for n in params if n not in fixed) or "nothing"
            raise ValueError(f"{_name(cls)} takes no argument {name!r}; it takes: {choices}")
    bound = {name: p.default for name, p in params.items() if p.default is not p.empty}
    bound.update(args)
    if not values:
        return bound
    for name, annotation in _annotations(cls).items():
        if name in args and not _valid(annotation, args[name]):
            raise ValueError(f"{name} must be {describe(annotation)}, got {args[name]!r}")
    if hasattr(cls, "check_together"):
        cls.check_together(bound)
    return bound


def build(
    target: str | type,
    args: dict[str, Any] | None = None,
    *,
    where: str = "",
    fixed: dict | None = None,
    resolve: Callable[[str], Any] = resolve_target,
    kind: type | None = None,
) -> Any:
    """`target` (an import path, resolved by `resolve`, or a class) built with `args` plus `fixed`
    (what tympan fills in). Any refusal is a ValueError naming `where` and the target."""
    args = dict(args or {})
    name = target if isinstance(target, str) else _name(target)
    prefix = f"{where}: {name}" if where else name
    cls = resolve(target) if isinstance(target, str) else target
    if kind is not None and not (isinstance(cls, type) and issubclass(cls, kind)):
        raise ValueError(f"{prefix} is not a {kind.__module__}:{kind.__name__}")
    fixed = fixed or {}
    try:
        check(cls, args, fixed=fixed, values=False)  # names: a filled-in one given is refused
        check(cls, {**args, **fixed})  # values, with what tympan fills in (check_together sees the real rates)
        return cls(**args, **fixed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{prefix}: {_one_line(exc)}") from None


def all_args(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `cls` is built with from `args`, its defaults included (no *args or **kwargs)."""
    params = _parameters(cls)
    out = {name: p.default for name, p in params.items() if p.default is not p.empty}
    out.update(args)
    return {k: out[k] for k in params if k in out} | {k: v for k, v in args.items() if k not in params}


def describe(annotation: Any) -> str:
    """What an annotation takes, in words: 'a positive integer', 'one of relu, gelu', ..."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return "anything"
    if annotation is type(None) or annotation is None:
        return "null"
    origin, params = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _bounded(params[0], params[1:])
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(p) for p in params))
    if origin is Literal:
        return "one of " + ", ".join(str(p) for p in params) if len(params) > 1 else repr(params[0])
    if origin in (list, tuple, Sequence, set, frozenset) or annotation in (list, tuple):
        if origin is tuple and params and params[-1] is not Ellipsis:
            return f"a list of {len(params)}: " + ", ".join(describe(p) for p in params)
        return f"a list of {_plural(describe(params[0]))}" if params else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")


def _bounded(base: Any, metadata: Sequence[Any]) -> str:
    for meta in metadata:
        if isinstance(meta, Says):
            return meta.text
    bounds = {type(m).__name__: getattr(m, dataclasses.fields(m)[0].name) for m in metadata if _is_bound(m)}
    if typing.get_origin(base) in (list, tuple, Sequence) and "MinLen" in bounds:
        return "a non-empty " + describe(base).removeprefix("a ")
    noun = {int: "integer", float: "number"}.get(base)
    if noun is None:
        return describe(base)
    article = "an" if noun == "integer" else "a"
    low = bounds.get("Gt", bounds.get("Ge"))
    high = bounds.get("Lt", bounds.get("Le"))
    if high in (None, math.inf):
        if bounds.get("Gt") == 0:
            return f"a positive {noun}"
        if bounds.get("Ge") == 0:
            return f"a non-negative {noun}" if noun == "number" else "a non-negative integer"
        if low is None:
            return f"{article} {noun}"
        return f"{article} {noun} {'>' if 'Gt' in bounds else '>='} {low:g}"
    if low is None:
        return f"{article} {noun} {'<' if 'Lt' in bounds else '<='} {high:g}"
    left, right = "(" if "Gt" in bounds else "[", ")" if "Lt" in bounds else "]"
    return f"{article} {noun} in {left}{low:g}, {high:g}{right}"


def _plural(description: str) -> str:
    """'a positive integer' -> 'positive integers'; what has no simple plural is 'items, each ...'."""
    article, _, rest = description.partition(" ")
    words = rest.split(" ")
    for i, word in enumerate(words):
        if article in ("a", "an") and word in ("integer", "number", "string"):
            return " ".join([*words[:i], f"{word}s", *words[i + 1 :]])
    return f"items, each {description}"


def _is_bound(meta: Any) -> bool:
    return isinstance(meta, at.Gt | at.Ge | at.Lt | at.Le | at.MinLen)


def _valid(annotation: Any, value: Any) -> bool:
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(_strict(annotation), config=ConfigDict(arbitrary_types_allowed=True))


def _strict(annotation: Any) -> Any:
    """The annotation with its scalars strict (bool, int, float, str) and tuples taking lists."""
    if annotation in (bool, int, float, str):
        return Annotated[annotation, Strict()]
    origin, params = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:  # exactly: 80.0 is not the 80 of Literal[80, 128], nor True the 1 of Literal[1]
        return Annotated[Any, AfterValidator(functools.partial(_one_of, params))]
    if origin is Annotated:
        return Annotated[(_strict(params[0]), *params[1:])]
    if origin in (Union, types.UnionType):
        return Union[tuple(_strict(p) for p in params)]  # noqa: UP007 (built from a tuple)
    if origin in (list, Sequence):
        return list[_strict(params[0])] if params else list
    if origin is tuple:
        return tuple[tuple(_strict(p) if p is not Ellipsis else p for p in params)] if params else tuple
    if origin is dict and params:
        return dict[_strict(params[0]), _strict(params[1])]
    return annotation


def _one_of(choices: tuple, value: Any) -> Any:
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ValueError(f"not one of {choices}")
    return value


@functools.cache
def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of `cls`'s constructor (not *args or **kwargs)."""
    return {n: p for n, p in inspect.signature(cls).parameters.items() if p.kind not in VARIADIC}


@functools.cache
def _annotations(cls: type) -> dict[str, Any]:
    """`cls`'s constructor annotations, evaluated in its module (one that does not evaluate is not checked)."""
    init = inspect.unwrap(cls.__init__)
    raw = getattr(init, "__annotations__", {})
    namespace = vars(inspect.getmodule(init)) if inspect.getmodule(init) else {}
    out = {}
    for name in _parameters(cls):
        annotation = raw.get(name)
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))  # noqa: S307 (the class's own source annotations)
            except Exception:
                continue
        if annotation is not None:
            out[name] = annotation
    return out


def _name(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)}"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines and isinstance(exc, ValueError) else first_line(exc)
