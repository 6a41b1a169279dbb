"""CheckpointStore: placeholder until the implementation lands (issue 7)."""

from __future__ import annotations

__all__ = ["CheckpointInfo", "CheckpointStore", "opened_datasets"]


class CheckpointInfo:
    pass


class CheckpointStore:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("CheckpointStore is being built (issue 7)")


def opened_datasets() -> list[str]:
    raise NotImplementedError("being built (issue 7)")
