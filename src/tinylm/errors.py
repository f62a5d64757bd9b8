"""Exceptions with messages meant for users: they name the file, line or field at fault."""


class TinylmError(Exception):
    """Base class; the CLI prints these without a traceback."""


class DataError(TinylmError):
    """Bad or missing input data (names the file, line or field and what was expected)."""


class DataNotFoundError(DataError):
    """Neither a local data directory nor the Hugging Face hub can provide a dataset."""


class ConfigError(TinylmError):
    """One or more invalid configuration values; the message lists all of them."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        if len(problems) == 1:  # one line
            super().__init__(f"{source}: {problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{len(problems)} problems in {source}:\n{lines}")


class CheckpointError(TinylmError):
    """A checkpoint that is missing, truncated or corrupt."""


class TrainingDiverged(TinylmError):
    """The loss became NaN or infinite."""
