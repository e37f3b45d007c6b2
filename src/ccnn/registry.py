"""One small registry class used for every family of named components.

A registry maps names (case-sensitive, with optional aliases) to classes or factory
functions. Looking up an unknown name raises a ``KeyError`` that lists every known name
and suggests the closest one, so a typo in a config or a keyword argument is caught at
construction time with a message that says how to fix it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from ccnn.errors import OptionError

T = TypeVar("T")


class RegistryError(KeyError, OptionError):
    """Unknown name in a registry. ``str(err)`` is the full human-readable message."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of classes/factories.

    Example:
        >>> KERNELS = Registry("kernel")
        >>> @KERNELS.register("MAGNet")
        ... class MAGNet: ...
        >>> KERNELS.get("MAGNet") is MAGNet
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str | None = None, *aliases: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``) and aliases."""

        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            for k in (key, *aliases):
                if k in self._entries and self._entries[k] is not obj:
                    raise OptionError(f"{self.kind} '{k}' is already registered")
                self._entries[k] = obj
                self._canonical[k] = key
            return obj

        return decorator

    def add(self, name: str, obj: T, *aliases: str) -> T:
        """Register ``obj`` without the decorator syntax."""
        return self.register(name, *aliases)(obj)

    def names(self) -> list[str]:
        """Canonical names (aliases excluded), sorted."""
        return sorted(set(self._canonical.values()))

    def canonical(self, name: str) -> str:
        self.get(name)
        return self._canonical[name]

    def get(self, name: str | T) -> T:
        """Return the entry for ``name``; a class/callable passes through unchanged."""
        if not isinstance(name, str):
            return name
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
        hint = f" Did you mean '{self._canonical[close[0]]}'?" if close else ""
        return f"Unknown {self.kind} '{name}'.{hint} Supported {self.kind}s: {', '.join(known)}."

    def options(self, name: str | T) -> tuple[str, ...] | None:
        """The keyword options of an entry (following ``**kwargs`` into base classes), or
        ``None`` when it accepts any keyword (a function with ``**kwargs``)."""
        obj = self.get(name)
        if not isinstance(obj, type):
            params = list(inspect.signature(obj).parameters.values())
            if any(p.kind == p.VAR_KEYWORD for p in params):
                return None
            return tuple(
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
        names: list[str] = []
        for cls in obj.__mro__:
            if "__init__" not in vars(cls) or cls is object:
                continue
            params = list(inspect.signature(cls.__init__).parameters.values())
            names += [
                p.name
                for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name != "self"
                and p.name not in names
            ]
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                return tuple(names)
        return None

    def check_options(self, name: str | T, options: dict[str, Any]) -> None:
        """An option the entry does not take is an error naming the entry and its options."""
        accepted = self.options(name)
        if accepted is None:
            return
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            label = name if isinstance(name, str) else getattr(name, "__name__", str(name))
            raise OptionError(
                f"Unknown option(s) {unknown} for {self.kind} '{label}'; its options: "
                f"{sorted(accepted)}"
            )

    def build(self, name: str | T, *args: Any, **kwargs: Any) -> Any:
        """Build the entry; keyword options it does not take are an :class:`OptionError`."""
        self.check_options(name, kwargs)
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
