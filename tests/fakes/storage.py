"""StorageHealth fake: healthy until told otherwise."""


class FakeStorageHealth:
    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self.checks = 0

    async def check(self) -> str | None:
        self.checks += 1
        return self.problem
