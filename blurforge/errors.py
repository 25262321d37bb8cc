"""One exception type for every user-facing failure: the CLI prints its message on one line."""


class BlurforgeError(Exception):
    """Bad input or an environment problem, with a message a user can act on."""
