"""Errors of image builds: each message says what failed and what to do."""

from __future__ import annotations

__all__ = ["EngineUnreachable", "ImageBuildError", "ImageError", "RegistryUnreachable", "log_tail"]


class ImageError(RuntimeError):
    """Building, pushing or recording an image failed; the message says what and what to do."""


class EngineUnreachable(ImageError):
    """No Docker-API engine answers at the configured URL."""


class RegistryUnreachable(ImageError):
    """The registry does not answer (or refuses) the Registry API."""


class ImageBuildError(ImageError):
    """The build failed; ``log_tail`` holds the last lines of the build output."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(
            f"{message}\n--- last lines of the build log ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


def log_tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a tool's output (for an error message)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
