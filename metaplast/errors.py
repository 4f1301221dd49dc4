"""The one error type for a configuration that cannot run, whatever configures it (a session,
a transfer, the gateware, a build, a simulated board): the command line turns it into one line
on stderr and exit status 2. Nothing here imports torch or amaranth."""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD = re.compile(r"`([a-z][a-z0-9_]*)`")


class ConfigError(ValueError):
    """A configuration that cannot run.

    Its message writes the configuration fields it is about in backquotes (```epochs```), so
    that each front end shows them by its own names: :meth:`naming` with the command line's
    flags, for instance, turns ```stuck_hrs``` into ``--stuck-hrs``.
    """

    def naming(self, name: Callable[[str], str]) -> str:
        """The message with every backquoted field shown as ``name(field)``."""
        return _FIELD.sub(lambda m: name(m.group(1)), str(self))
