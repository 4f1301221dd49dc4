"""Verilog and a C++ harness compiled by Verilator into one executable, built once and cached.

The cache key is a hash of the Verilog, the harness, the flags (the harness's C++ defines
included) and Verilator's version, so a changed gateware, layout, tile or harness builds anew
and an unchanged one starts at once. Builds live in ``$XDG_CACHE_HOME/metaplast/verilator/
<hash>/`` (``~/.cache`` without it); a build is made in a scratch folder and renamed into
place, so two processes building the same unit at once do not see each other's half-made
files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from metaplast.errors import ConfigError

__all__ = ["FLAGS", "PREFIX", "cache_root", "compile_harness", "verilator_version"]

PREFIX = "Vunit"
"""The C++ class of the compiled design, whatever its top module: harnesses include ``Vunit.h``."""

FLAGS = (
    "--cc",
    "--exe",
    "--build",
    "-O3",
    "-fno-dfg",
    "--x-assign",
    "0",
    "--x-initial",
    "0",
    "--noassert",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "-MAKEFLAGS",
    "OPT_FAST=-O2",
)
"""Verilator's flags: deterministic values for X (Amaranth's Verilog initialises every register
anyway), warnings that Amaranth's output raises are not errors, and the model at ``-O2``.

``-fno-dfg``: Verilator 5.006's data-flow-graph optimiser miscompiles the partial assignments
into packed vectors that Amaranth writes for its stage registers (the update pipeline's old
level came out as 7 for the 12-bit contract with 7 levels, found by
``experiments/bit_exactness.py --simulator verilator``; the class of Verilator issues #6542
and #8377). Without it every configuration matches the model."""

BINARY = "harness"


def cache_root() -> Path:
    """Where compiled units are kept (``$XDG_CACHE_HOME`` honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metaplast" / "verilator"


def verilator_version() -> str:
    """Verilator's version line, or a ConfigError that says how to install it."""
    exe = shutil.which("verilator")
    if exe is None:
        raise ConfigError(
            "the verilog backend needs Verilator, which is not on PATH "
            "(Debian and Ubuntu: apt-get install verilator; scripts/setup installs it)"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    if out.returncode != 0:
        raise ConfigError(f"Verilator at {exe} does not run: {out.stderr.strip()}")
    return out.stdout.strip()


def compile_harness(verilog: str, harness: str, *, top: str, defines: Sequence[str] = ()) -> Path:
    """The executable of ``harness`` (C++ source) driving ``verilog``'s module ``top``.

    ``defines``: C++ macros for the harness (``NAME`` or ``NAME=VALUE``). Compiled on the
    first call for this Verilog, harness and defines (tens of seconds), then found in the
    cache. A failed build is a ConfigError naming Verilator and the end of its log.
    """
    version = verilator_version()
    cflags = [arg for d in defines for arg in ("-CFLAGS", f"-D{d}")]
    key = hashlib.sha256()
    for part in (version, top, " ".join((*FLAGS, *cflags)), harness, verilog):
        key.update(part.encode())
        key.update(b"\0")
    final = cache_root() / key.hexdigest()[:24]
    binary = final / BINARY
    if binary.is_file():
        return binary
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    try:
        (scratch / "unit.v").write_text(verilog)
        (scratch / "harness.cpp").write_text(harness)
        jobs = str(min(4, os.cpu_count() or 1))
        cmd = ["verilator", *FLAGS, *cflags, "-j", jobs, "--top-module", top, "--prefix", PREFIX]
        cmd += ["-Mdir", "obj", "-o", f"../{BINARY}", "harness.cpp", "unit.v"]
        out = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
        (scratch / "build.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0 or not (scratch / BINARY).is_file():
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise ConfigError(
                f"Verilator could not build the unit (exit {out.returncode}; {version}):\n{tail}"
            )
        shutil.rmtree(scratch / "obj")
        try:
            scratch.rename(final)
        except OSError:  # another process finished the same build first
            if not binary.is_file():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return binary
