"""User-facing errors: each message says what went wrong and what to do about it.

The CLI prints these without a traceback and the app shows them in a box; anything else is a bug.
"""


class SaelabError(Exception):
    """Base class for errors whose message is meant for the user."""


class MissingDependencyError(SaelabError):
    """A package or file that must be installed locally is missing (no hub access at run time)."""


class BadInputError(SaelabError):
    """The user's input (text, CSV, hook name, argument) cannot be used as given."""


class IncompatibleSAEError(SaelabError):
    """An SAE does not fit the model or hook it is asked to run on."""


class CorruptFileError(SaelabError):
    """A file on disk is unreadable or inconsistent; nothing was overwritten."""
