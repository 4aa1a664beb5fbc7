"""``progress`` in Jupyter: an ipywidgets bar per task prefix, updated as keys finish."""

from __future__ import annotations

import html
from typing import Any

from storied.client.future import Future
from storied.diagnostics.progress import ProgressGroups, watch


class ProgressWidget:
    """Shown by Jupyter when it is a cell's last value (as Dask's ``MultiProgressWidget``);
    ``widget`` is the ipywidgets box, for placing it elsewhere."""

    def __init__(self, found: list[Future], groups: ProgressGroups) -> None:
        from ipywidgets import HTML, FloatProgress, HBox, VBox

        self.groups = groups
        self.bars = {
            group: FloatProgress(min=0, max=max(total, 1), value=0)
            for group, total in groups.total.items()
        }
        self.counts = {group: HTML(self._count_text(group)) for group in groups.total}
        self.widget = VBox(
            [
                HBox([HTML(f"<code>{html.escape(group)}</code>"), bar, self.counts[group]])
                for group, bar in self.bars.items()
            ]
        )
        watch(found, self._finished)

    def _count_text(self, group: str) -> str:
        text = f"{self.groups.done[group]} / {self.groups.total[group]}"
        erred = self.groups.erred[group]
        return text + (f", {erred} erred" if erred else "")

    def _finished(self, key: str, failed: bool) -> None:
        group = self.groups.finish(key, failed)
        if group is None:
            return
        bar = self.bars[group]
        bar.value = self.groups.done[group]
        if self.groups.erred[group]:
            bar.bar_style = "danger"
        elif self.groups.done[group] == self.groups.total[group]:
            bar.bar_style = "success"
        self.counts[group].value = self._count_text(group)

    def _ipython_display_(self, **kwargs: Any) -> None:
        from IPython.display import display

        display(self.widget, **kwargs)
