"""The one error type for a configuration that cannot run, whatever configures it (a session,
a transfer, the gateware, a build, a simulated board): the command line turns it into one line
on stderr and exit status 2. Nothing here imports torch or amaranth."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the option and the problem."""
