"""asyncio glue used by the extension: completes futures on their own event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Optional


def _resolve(future: "asyncio.Future[Any]", exc: Optional[BaseException], value: Any) -> None:
    """Completes `future` unless it was cancelled meanwhile (runs on the future's loop)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
