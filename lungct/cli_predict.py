"""CLI commands that use trained models (filled in below)."""


def add_commands(sub, common) -> None:
    return None
