"""YouTube links: metadata tags in training data and context, verified links in generated replies.

See `docs/youtube.md`. `YouTubeLinks.from_env(cfg.youtube)` is the entry point; it returns None when the feature is
off. Importing this package loads google-api-python-client, so callers that may not need it import it lazily.
"""

from cloneus.plugins.youtube.links import UNVERIFIED_LINK_TEXT, YouTubeLinks
from cloneus.plugins.youtube.urls import TagFormat, find_links, watch_url

__all__ = ["UNVERIFIED_LINK_TEXT", "TagFormat", "YouTubeLinks", "find_links", "watch_url"]
