"""The canonical message table every reader returns.

Messages travel through the pipeline as one pandas DataFrame rather than a list of objects: a million rows of
Python objects cost ~1 GB and make every cleaning rule a Python loop, while columns keep cleaning vectorised.

Columns, in order:
    message_id (`str`): unique within the export.
    author_id (`str`): stable per person; the username when the format has no ids.
    author (`str`): the display name (nickname if the export has one).
    text (`str`): message body, never NaN.
    timestamp (`datetime64[ns, UTC]`): tz-aware UTC; NaT when the format has no timestamps.
    reply_to (`str | None`): message_id of the message replied to.

Readers may add extra columns (e.g. `username`, `is_bot`); later steps keep them but rely only on the above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["message_id", "author_id", "author", "text", "timestamp", "reply_to"]


def empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "message_id": pd.Series(dtype="object"),
            "author_id": pd.Series(dtype="object"),
            "author": pd.Series(dtype="object"),
            "text": pd.Series(dtype="object"),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "reply_to": pd.Series(dtype="object"),
        }
    )
