"""Faust's table manager, without the second it sleeps before the recovery starts.

`TableManager.on_start` waits one second so that tables declared late still register.
Every table of this service is declared when the app is built (app.py), so that second
is only time a restarted worker spends processing nothing.
"""

from __future__ import annotations

from faust.tables.manager import TableManager


class PromptTableManager(TableManager):
    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
