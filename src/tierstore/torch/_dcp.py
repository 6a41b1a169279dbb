"""torch.distributed.checkpoint storage: placeholder until the implementation lands (issue 7)."""

from __future__ import annotations

__all__ = ["TierstoreReader", "TierstoreWriter"]


class TierstoreWriter:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("being built (issue 7)")


class TierstoreReader:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("being built (issue 7)")
