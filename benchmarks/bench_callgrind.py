"""Callgrind from inside the measured process: its client requests, its command line, its dump files.

Who owns what: this module talks to valgrind and knows nothing of training; `bench_instructions`
decides what to count, `profile_step` which functions to attribute instructions to.

The client requests (CALLGRIND_START_INSTRUMENTATION and friends, `valgrind/callgrind.h`) are
magic x86-64 instruction sequences that do nothing on a real CPU and that valgrind's JIT
recognises. They are issued here through ctypes from a few bytes of machine code copied into an
executable page, so the benchmark needs neither a compiler nor valgrind's headers, builds
nothing, and switches counting exactly at the call (`callgrind_control -i on`, from another
process, takes effect whenever valgrind next polls, some blocks later). The cost is portability:
x86-64 Linux only; elsewhere `client_requests_unavailable()` says why and nothing is counted.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "callgrind_command",
    "client_requests_unavailable",
    "dump_stats",
    "read_dumps",
    "running_on_valgrind",
    "start_instrumentation",
    "stop_instrumentation",
    "toggle_collect",
    "valgrind_missing",
    "valgrind_version",
]

# `valgrind.h`'s VALGRIND_DO_CLIENT_REQUEST_EXPR for amd64 as a function `uint64 f(uint64 args[6])`
# (System V ABI: `args` arrives in rdi): the request's words go in rax, the default result (0) in
# rdx, then the preamble (four rotations of rdi by 3+13+61+51 = 128 bits: rdi unchanged) and
# `xchg rbx, rbx` mark the request; valgrind puts its answer in rdx.
_AMD64_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi
    "31d2"  # xor edx, edx
    "48c1c703"  # rol rdi, 3
    "48c1c70d"  # rol rdi, 13
    "48c1c73d"  # rol rdi, 61
    "48c1c733"  # rol rdi, 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)

_RUNNING_ON_VALGRIND = 0x1001  # valgrind.h: VG_USERREQ__RUNNING_ON_VALGRIND
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)  # callgrind.h: VG_USERREQ_TOOL_BASE('C', 'T')
_DUMP_STATS_AT = _CALLGRIND + 3
_TOGGLE_COLLECT = _CALLGRIND + 2
_START_INSTRUMENTATION = _CALLGRIND + 4
_STOP_INSTRUMENTATION = _CALLGRIND + 5

_Request = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)
_request: object = None  # the callable, made on first use
_page: mmap.mmap | None = None  # keeps the code's page mapped
_args: dict[int, ctypes.Array[ctypes.c_uint64]] = {}  # one argument block per argument-less request


def client_requests_unavailable() -> str | None:
    """Why client requests cannot be issued on this machine, or None when they can."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"callgrind client requests are issued as x86-64 machine code; this is {sys.platform} on {platform.machine()}"
    return None


def valgrind_missing() -> str | None:
    """Why instructions cannot be counted here (no valgrind, another platform), or None."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (e.g. `apt-get install valgrind`)"
    return client_requests_unavailable()


def _issue(request: int, arg: int = 0) -> int:
    global _request, _page
    if _request is None:
        reason = client_requests_unavailable()
        if reason:
            raise RuntimeError(f"Cannot issue a callgrind client request: {reason}.")
        _page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        _page.write(_AMD64_REQUEST)
        _request = _Request(ctypes.addressof(ctypes.c_char.from_buffer(_page)))
    if arg == 0 and request in _args:
        block = _args[request]
    else:
        block = (ctypes.c_uint64 * 6)(request, arg, 0, 0, 0, 0)
        if arg == 0:
            _args[request] = block  # reused: the toggles run per call of a profiled function
    return int(_request(ctypes.addressof(block)))  # type: ignore[operator]


def running_on_valgrind() -> bool:
    """Whether this process runs under valgrind (False on a real CPU)."""
    return _issue(_RUNNING_ON_VALGRIND) > 0


def start_instrumentation() -> None:
    """Count from here on (callgrind started with `--instr-atstart=no` counts nothing until this)."""
    _issue(_START_INSTRUMENTATION)


def stop_instrumentation() -> None:
    """Stop counting (what was counted is kept for the next dump)."""
    _issue(_STOP_INSTRUMENTATION)


def toggle_collect() -> None:
    """Flip whether executed instructions are charged (instrumentation stays on)."""
    _issue(_TOGGLE_COLLECT)


def dump_stats(label: str) -> None:
    """Write what was counted since the last dump to a new dump file tagged `label`, and zero it."""
    text = ctypes.create_string_buffer(label.encode())
    _issue(_DUMP_STATS_AT, ctypes.addressof(text))


def callgrind_command(out_file: Path, *, collect_at_start: bool = True) -> list[str]:
    """The valgrind command line to put before `python ...`: callgrind counting nothing until asked.

    Dumps go to `out_file.1`, `out_file.2`, ... (`read_dumps` reads them); only instruction
    counts are kept (no cache simulation, no per-line or per-instruction detail).
    """
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--collect-atstart={'yes' if collect_at_start else 'no'}",
        "--dump-line=no",
        f"--callgrind-out-file={out_file}",
    ]


_DESC = re.compile(r"^desc: Trigger: Client Request: (.*)$", re.MULTILINE)
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


def read_dumps(out_file: Path) -> dict[str, int]:
    """The instructions counted in each dump of `dump_stats`, by label, from `out_file.<n>` files.

    Raises:
        ValueError: a dump has no label or no total (not a callgrind dump of `dump_stats`), or a
            label repeats.
    """
    counts: dict[str, int] = {}
    dumps = sorted(out_file.parent.glob(f"{out_file.name}.*"), key=lambda path: int(path.suffix[1:]))
    for path in dumps:
        text = path.read_text()
        desc, totals = _DESC.search(text), _TOTALS.search(text)
        if desc is None or totals is None or desc[1] in counts:
            raise ValueError(
                f"`{path}` is not a labelled callgrind dump with a total, or repeats a label; dump with "
                f"`dump_stats(label)` once per label. Received: desc={desc and desc[1]!r}, totals={totals and totals[1]!r}"
            )
        counts[desc[1]] = int(totals[1])
    return counts


def valgrind_version() -> str:
    """`valgrind --version`'s answer, e.g. "valgrind-3.19.0"."""
    return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=True).stdout.strip()
