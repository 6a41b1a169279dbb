"""Engine: the ObjectService every face of tierstore talks to."""

from tierstore.engine._service import CompletedPart, CopyOptions, GetResult, ObjectService

__all__ = ["CompletedPart", "CopyOptions", "GetResult", "ObjectService"]
