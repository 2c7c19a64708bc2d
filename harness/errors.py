"""The harness's errors: each message says what went wrong and what to look at."""


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why and what to look at."""


class GuestTimeout(LabError):
    """The guest (its agent, a command, a file, an event) did not answer in time."""
