"""Exceptions raised by the pat binding.

Every failure of the C library becomes a :class:`PatError` (or a subclass chosen by its
status code) whose message carries the library's detail (``pat_last_error``). Argument
problems found in Python before anything reaches the library raise
:class:`PatArgumentError`, whose message starts with the name of the offending argument.
"""
from __future__ import annotations

# Status codes of runtime/pat.h (enum pat_status), in order.
PAT_OK = 0
PAT_ERR_INVALID_ARG = 1
PAT_ERR_NO_MEMORY = 2
PAT_ERR_SPEC = 3
PAT_ERR_COMPILE = 4
PAT_ERR_NO_DRIVER = 5
PAT_ERR_CUDA = 6
PAT_ERR_WORKSPACE = 7
PAT_ERR_CACHE_IO = 8

STATUS_NAMES = {
    PAT_OK: "PAT_OK",
    PAT_ERR_INVALID_ARG: "PAT_ERR_INVALID_ARG",
    PAT_ERR_NO_MEMORY: "PAT_ERR_NO_MEMORY",
    PAT_ERR_SPEC: "PAT_ERR_SPEC",
    PAT_ERR_COMPILE: "PAT_ERR_COMPILE",
    PAT_ERR_NO_DRIVER: "PAT_ERR_NO_DRIVER",
    PAT_ERR_CUDA: "PAT_ERR_CUDA",
    PAT_ERR_WORKSPACE: "PAT_ERR_WORKSPACE",
    PAT_ERR_CACHE_IO: "PAT_ERR_CACHE_IO",
}


class PatError(RuntimeError):
    """A call into libpat failed.

    Attributes:
        status: the ``pat_status`` code (an int; 0 when the error was raised in Python).
        detail: the library's explanation (``pat_last_error`` or the create message).
    """

    def __init__(self, message: str, status: int = 0, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.detail = detail

    @property
    def status_name(self) -> str:
        """The symbolic name of :attr:`status` (``"PAT_ERR_SPEC"``, ...)."""
        return STATUS_NAMES.get(self.status, f"status {self.status}")


class PatLibraryNotFound(PatError, OSError):
    """libpat.so could not be located or loaded (see :func:`pat.library_path`)."""


class PatNoDriverError(PatError):
    """No CUDA driver or no usable (sm_80+) device on this machine."""


class PatSpecError(PatError):
    """The spec could not be loaded, or it does not build what the call needs."""


class PatCompileError(PatError):
    """Kernel generation or NVRTC compilation failed."""


class PatCudaError(PatError):
    """A CUDA driver call failed."""


class PatArgumentError(PatError, ValueError):
    """An argument is unusable: wrong dtype, device, shape, strides, alignment or value.

    The message starts with the argument's name, e.g. ``"q: expected dtype float16, got
    float32"``; :attr:`argument` holds that name.
    """

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument}: {problem}", 0, problem)
        self.argument = argument


_BY_STATUS = {
    PAT_ERR_INVALID_ARG: PatArgumentError,
    PAT_ERR_SPEC: PatSpecError,
    PAT_ERR_COMPILE: PatCompileError,
    PAT_ERR_NO_DRIVER: PatNoDriverError,
    PAT_ERR_CUDA: PatCudaError,
}


def error_for_status(status: int, what: str, detail: str) -> PatError:
    """Builds the exception for a failed library call.

    Args:
        status: the ``pat_status`` returned by the call.
        what: what was being done ("creating a context for specs/x.yaml").
        detail: the library's detail text (may be empty).
    """
    name = STATUS_NAMES.get(status, f"status {status}")
    message = f"{what} failed: {name}"
    if detail:
        message += f": {detail}"
    cls = _BY_STATUS.get(status, PatError)
    if cls is PatArgumentError:
        err = PatError.__new__(PatArgumentError)
        PatError.__init__(err, message, status, detail)
        err.argument = ""
        return err
    return cls(message, status, detail)
