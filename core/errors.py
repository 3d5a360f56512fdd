"""Errors a person reads: each carries one sentence saying what is wrong and what to do."""


class LoyaltyError(Exception):
    """An error shown to a user as one sentence, without a traceback."""


class ConfigurationError(LoyaltyError):
    """An environment variable is missing or malformed."""


class DefinitionError(LoyaltyError):
    """A campaign definition or template is invalid (the message names the file and line)."""

    def __init__(self, path: str, line: int | None, problem: str):
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {problem}")


class InputError(LoyaltyError):
    """A command-line argument or input file is unusable as a whole."""
