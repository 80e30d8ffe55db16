"""A message that pages through long text with Previous/Next buttons (the old server's context view).

The pages live on the view object, which discord.py keeps while the message is open; after `timeout_s` the
buttons stop answering and are removed.
"""

from __future__ import annotations

import discord

from bot.render import split_message

PAGE_CHARS = 1900  # a page in a code block stays under Discord's 2000-character message limit
PAGER_TIMEOUT_S = 600.0


def code_pages(text: str, limit: int = PAGE_CHARS) -> list[str]:
    """`text` split into pages, each shown verbatim in a code block (backtick runs broken so none closes it)."""
    safe = text.replace("```", "`\u200b``")
    return [f"```\n{piece}\n```" for piece in split_message(safe, limit=limit)]


class Pager(discord.ui.View):
    """Previous/Next over `pages`; the footer line says which page is shown.

    Args:
        pages (`list[str]`): the contents, one message each.
        owner_id (`int`): the member who asked; only they may turn the pages.
    """

    def __init__(self, pages: list[str], owner_id: int, timeout_s: float = PAGER_TIMEOUT_S):
        if not pages:
            raise ValueError("pages is empty; send a plain message instead")
        super().__init__(timeout=timeout_s)
        self.pages = pages
        self.owner_id = owner_id
        self.index = 0
        self._sync()

    def content(self) -> str:
        return f"{self.pages[self.index]}\npage {self.index + 1}/{len(self.pages)}"

    def _sync(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index == len(self.pages) - 1

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message(
                "Only the member who opened this may turn its pages.", ephemeral=True
            )
            return False
        return True

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.index = min(max(self.index + step, 0), len(self.pages) - 1)
        self._sync()
        await interaction.response.edit_message(content=self.content(), view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.primary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, 1)
