"""One hierarchy for errors a user can act on.

Every error raised for bad input, a bad file or a missing dependency derives from `UserError`: the
CLIs print it as one line (`error: <message>`) and exit 1; a server answers it with a JSON error.
Anything else is a bug. The library raises, it never prints or exits.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on: printed as one line, exit status 1."""


class ManifestError(UserError, ValueError):
    """An artifact folder or its manifest is missing, malformed or incompatible."""


class IntegrityError(ManifestError):
    """A file of an artifact folder differs from what its manifest recorded."""


class ImageError(UserError, ValueError):
    """An input could not be read as an image."""


class PixelLimitError(ImageError):
    """An image has more pixels than the limit: refused before it is decoded."""


class BackendError(UserError, RuntimeError):
    """A backend could not be created or run."""


class UsageError(UserError, ValueError):
    """A command-line or API value is malformed."""


class OutputError(UserError, OSError):
    """An output could not be written."""


class CollectionError(UserError):
    """A collection folder is incomplete, inconsistent, or belongs to another job."""
