"""User-facing errors of opmlc.

Every mistake a user can make (a malformed model, an unsupported op, a wrong input file) is
raised as an `OpmlcError` whose message is one line naming the thing and what to do. The CLI
prints that line and exits with code 2; library users catch the class.
"""

from __future__ import annotations


class OpmlcError(Exception):
    """A user mistake or an unsupported request, explained in one line."""

    exit_code = 2


class ModelError(OpmlcError):
    """The ONNX file is unreadable, invalid, or uses something opmlc cannot compile."""


class UnsupportedError(ModelError):
    """A valid model uses an op, attribute or opset that opmlc does not (yet) lower."""


class InputError(OpmlcError):
    """An input tensor file has the wrong format, dtype or shape."""


class BuildError(OpmlcError):
    """A build directory is missing, incomplete, or from another opmlc version."""
