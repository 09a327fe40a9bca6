"""The explorer: label browser, point cloud viewer and details pane side by side; neuroglancer below on request.

The three wrap rather than squeeze: the table takes what the view leaves and
scrolls sideways within its own box, and when the output is too narrow for
all three (a notebook at 1,280 px with its file browser open) the details move
under the other two, then the view under the table; nothing overlaps.

The box tool above them limits both to a region: "labels in box" asks the
engine which labels have a point inside it (``get_labels_in_box``), the table
lists only those, and the view shows their points inside the box.

A double-click on a point in the view selects its label's row: the view then
shows that label, and the details pane describes it.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from pocaduck import InvalidBoxError

from ._source import StoreLike, open_query
from .browser import LabelBrowser
from .neuroglancer_view import NeuroglancerView
from .viewer import PointCloudViewer

_BLOCKS_LISTED = 6
_GAP = "0 12px 8px 0"  # right and below each part, so wrapped rows keep apart too


class Explorer(w.VBox):
    """Find labels in the table; the selected ones appear in 3D and their details beside.

    ``width`` and ``height`` are the 3D view's canvas in pixels; the table takes the width left beside it.
    The box tool's corners are voxel coordinates, lower inclusive and upper exclusive.
    "open in neuroglancer" exports the store (once; see ``neuroglancer_viewer``) and opens neuroglancer
    below, with the selected labels as its segments; later selections follow there too.

    Example::

        explorer = Explorer(store)
        explorer.limit_to_box((0, 0, 0), (512, 512, 64))
    """

    def __init__(
        self, store: StoreLike, *, point_budget: int = 1_500_000, width: int = 480, height: int = 400, **kwargs: Any
    ):
        self.query = open_query(store)
        # flex "grow shrink basis": the table grows most, from a basis that shows its first three columns.
        self.browser = LabelBrowser(self.query, layout=w.Layout(flex="3 1 340px", min_width="0", margin=_GAP))
        self.viewer = PointCloudViewer(
            self.query,
            point_budget=point_budget,
            width=width,
            height=height,
            layout=w.Layout(flex="0 0 auto", width=f"{width}px", margin=_GAP),  # the canvas's width: legend under it
        )
        self.details = w.HTML(layout=w.Layout(max_height=f"{height + 40}px", overflow="auto", margin="4px 0 0 0"))
        self.neuroglancer: NeuroglancerView | None = None
        self.open_button = w.Button(description="open in neuroglancer", icon="external-link")
        self.open_button.on_click(lambda _button: self.open_neuroglancer())
        side = w.VBox([self.open_button, self.details], layout=w.Layout(flex="1 1 180px", min_width="0"))
        for part, name in ((self.browser, "browser"), (self.viewer, "viewer"), (side, "details")):
            part.add_class(f"pocaduck-explorer-{name}")
        self.browser.observe(self._on_selection, "selected_labels")
        self.viewer.observe(self._on_pick, "picked")
        self._box: tuple[list[float], list[float]] | None = None
        self._box_labels: list[int] = []
        self._corners = {
            name: w.FloatText(description=name, style={"description_width": "initial"}, layout=w.Layout(width="8em"))
            for name in ("x0", "y0", "z0", "x1", "y1", "z1")
        }
        box_button = w.Button(description="labels in box", layout=w.Layout(width="auto"))
        box_button.on_click(lambda _button: self._on_box_button())
        clear_button = w.Button(description="all labels", layout=w.Layout(width="auto"))
        clear_button.on_click(lambda _button: self.clear_box())
        self.box_message = w.HTML()
        box_tool = w.HBox(
            [*self._corners.values(), box_button, clear_button, self.box_message],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        box_tool.add_class("pocaduck-explorer-box")
        parts = w.HBox(
            [self.browser, self.viewer, side], layout=w.Layout(flex_flow="row wrap", align_items="flex-start")
        )
        self._below = w.Box(layout=w.Layout(width="100%"))
        super().__init__([box_tool, parts, self._below], **kwargs)
        self._describe([])

    def limit_to_box(self, lower: tuple[float, float, float], upper: tuple[float, float, float]) -> list[int]:
        """List only the labels with a point in ``lower <= p < upper`` and show their points inside it.

        Returns those labels. A bad box raises ``InvalidBoxError`` and changes nothing.
        """
        labels = self.query.get_labels_in_box(lower, upper).tolist()
        self._box, self._box_labels = (list(lower), list(upper)), labels
        for name, value in zip(self._corners, [*lower, *upper], strict=True):
            self._corners[name].value = float(value)
        self.browser.only_labels = labels
        if self.browser.selected_labels:
            self.browser.selected_labels = []  # shows every label in the box
        else:
            self.viewer.show(labels, box=self._box)
        self.box_message.value = html.escape(f"{len(labels):,} labels in the box")
        return labels

    def clear_box(self) -> None:
        """List every label again and show whole labels."""
        self._box, self._box_labels = None, []
        self.browser.only_labels = None
        if self.browser.selected_labels:
            self.browser.selected_labels = []
        else:
            self.viewer.clear()
        self.box_message.value = ""

    def _on_box_button(self) -> None:
        values = [self._corners[name].value for name in self._corners]
        try:
            self.limit_to_box(values[:3], values[3:])
        except InvalidBoxError as error:
            self.box_message.value = f"<span style='color:#b00020'>{html.escape(str(error))}</span>"

    def open_neuroglancer(self) -> NeuroglancerView:
        """Show neuroglancer below, with the selected labels (the first time, the store is exported first)."""
        if self.neuroglancer is None:
            self.open_button.disabled, self.open_button.description = True, "exporting…"
            try:
                self.neuroglancer = NeuroglancerView(self.query, self.browser.selected_labels)
            finally:
                self.open_button.disabled, self.open_button.description = False, "open in neuroglancer"
            self._below.children = (self.neuroglancer,)
        else:
            self.neuroglancer.show(self.browser.selected_labels)
        return self.neuroglancer

    def _on_selection(self, change: dict) -> None:
        labels = change["new"]
        if labels:
            self.viewer.show(labels, box=self._box)
        elif self._box is not None:  # no rows picked: every label in the box, as the button showed them
            self.viewer.show(self._box_labels, box=self._box)
        else:
            self.viewer.clear()
        if self.neuroglancer is not None:
            self.neuroglancer.show(labels)
        self._describe(labels)

    def _on_pick(self, change: dict) -> None:
        picked = change["new"]
        if picked is not None and self.browser.selected_labels != [picked["label"]]:
            self.browser.selected_labels = [picked["label"]]  # the browser's own trait: its table follows

    def _describe(self, labels: list[int]) -> None:
        if not labels:
            self.details.value = "<i>select rows to see their points</i>"
            return
        self.details.value = "".join(self._describe_one(label) for label in labels[:10])

    def _describe_one(self, label: int) -> str:
        summary = self.query.get_label_summary(label)
        blocks = self.query.get_blocks_for_label(label)
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{value:,}</td></tr>"
            if isinstance(value, int)
            else f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{html.escape(str(value))}</td></tr>"
            for name, value in summary.items()
            if name != "label"
        )
        listed = ", ".join(html.escape(str(block)) for block in blocks[:_BLOCKS_LISTED])
        more = f" … and {len(blocks) - _BLOCKS_LISTED:,} more" if len(blocks) > _BLOCKS_LISTED else ""
        # Cards side by side when the pane is wide (wrapped under the view), one under another when it is narrow.
        return (
            "<div class='pocaduck-details' style='display:inline-block;vertical-align:top;line-height:1.4;"
            f"max-width:16em;margin:0 1.5em 1em 0'><b>label <code>{label}</code></b><table>{rows}</table>"
            f"<small>blocks: {listed}{more}</small></div>"
        )
