"""Help screens in the user's words: metavars and usage lines, never Python types.

Typer labels every value with its annotation (``<bool>`` on a flag, ``<list[Path]>``,
``{paths}...`` in the usage line). A user reads ``--plots DIR`` and ``stabdiag analyze PATH...``;
the annotation is an implementation detail. These command classes keep Typer's rich layout and
change only the labels:

- a flag (``--no-cache``, ``--help``) shows no value label: it takes none;
- an option shows its ``metavar`` (every value option in cli.py names one: FILE, LEVEL, N, ...);
- an argument is named once (``PATH...``), in the usage line as ``PATH...`` or ``[KIND]``.
"""

from __future__ import annotations

from typing import Any

import typer.core


class _Option(typer.core.TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag and self.metavar is None:
            return None  # a flag takes no value: nothing to label
        return super().display_type_rich(ctx)


class _Argument(typer.core.TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name column already says PATH... / RUN / KIND

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return [name if self.required else f"[{name}]"]


def _plain(param: Any) -> Any:
    # Typer builds its own parameter objects; the label methods are all that differ, so the
    # class is swapped in place rather than rebuilding each parameter (state stays Typer's).
    if type(param) is typer.core.TyperOption:
        param.__class__ = _Option
    elif type(param) is typer.core.TyperArgument:
        param.__class__ = _Argument
    return param


class Command(typer.core.TyperCommand):
    """A command whose help labels values by meaning (FILE, N) and flags not at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for p in self.params:
            _plain(p)

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        return opt if opt is None else _plain(opt)


class Group(typer.core.TyperGroup):
    """The root command (``--version``, ``--help``) and, through it, every subcommand.

    Set once on the app (``typer.Typer(cls=Group)``): a command added later needs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for p in self.params:
            _plain(p)
        for cmd in self.commands.values():
            if type(cmd) is typer.core.TyperCommand:
                cmd.__class__ = Command
                for p in cmd.params:
                    _plain(p)

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        return opt if opt is None else _plain(opt)
