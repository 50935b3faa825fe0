"""Recording the commands the app's MongoDB client sends (read preference, filters)."""
from __future__ import annotations

from typing import Any

from pymongo import monitoring


class CommandRecorder(monitoring.CommandListener):
    """Every command sent to one database while ``recording``. Registered globally
    (``monitoring.register``): PyMongo's only way onto a client the app creates itself; it
    must be registered before the app starts, and ignores every other database."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.recording = False
        self.commands: list[tuple[str, dict[str, Any]]] = []

    @classmethod
    def installed(cls, database: str) -> "CommandRecorder":
        recorder = cls(database)
        monitoring.register(recorder)
        return recorder

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and event.database_name == self.database:
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def replica_set_url(mongo_url: str) -> str:
    """The test server's URL as a replica set member (SecantusDB is a one-member set
    "secantus"): on a direct connection the driver sends every read as primaryPreferred,
    whatever the read preference, so only this shows which preference each read carries."""
    return mongo_url.replace("directConnection=true", "replicaSet=secantus")
