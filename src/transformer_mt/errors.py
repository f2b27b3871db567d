"""The one exception type that user-facing code raises for bad input."""


class TransformerMTError(Exception):
    """A problem the user can fix: a bad flag, file, line, checkpoint or request.

    The CLI prints its message on one line and exits non-zero; the server turns it
    into a 4xx JSON body. Messages name the file, line or field and say what is
    allowed.
    """
