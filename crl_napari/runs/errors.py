"""The gateway's own errors (plain ValueErrors, so every face reports them as one line)."""


class RunError(ValueError):
    """A run folder is missing, incomplete, tampered with or from another version; the message names the file."""


class RunLocked(RunError):
    """Another process is writing the run folder (training, resuming or scoring it); the message names it."""
