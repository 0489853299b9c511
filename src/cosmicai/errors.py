"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class CosmicaiError(Exception):
    """A user-facing failure: the message names the file and what is wrong with it."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
