"""The explorer: label browser, point cloud viewer and details pane side by side; neuroglancer below on request.

The three wrap rather than squeeze: the table takes what the view leaves and
scrolls sideways within its own box, and when the output is too narrow for
all three (a notebook at 1,280 px with its file browser open) the details move
under the other two, then the view under the table; nothing overlaps.

The explorer owns one ``Selection`` (``_selection.py``): the table's WHERE and
SELECT, the histograms' brushes, the box tool's box and the selected rows are
its clauses, and every part is handed it. The table lists its rows; the 3D
view, the details and neuroglancer draw its ``labels_to_draw``: the selected
labels that pass every filter, the same ones; a selected row that a filter
hides stays selected and is counted as hidden ("3 selected (1 hidden by the
filters)"). With nothing selected, a box shows every label in it that passes
the filters, and otherwise nothing is drawn (neuroglancer too).

The box tool above them limits the table to a region: "labels in box" asks the
engine which labels have a point inside it (``get_labels_in_box``), the table
lists only those, and the view shows their points inside the box.

A double-click on a point in the view selects its label's row: the view then
shows that label, and the details pane describes it.

The version picker reads the store through another mapping version (or none):
the table then lists that version's bodies (with their supervoxel counts),
and the selection keeps the labels the version still lists (``use_mapping``).
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from pocaduck import MappedQuery, PocaduckError, Query, Reader, list_mappings

from ._selection import Selection
from ._source import StoreLike, open_query
from .browser import LabelBrowser
from .neuroglancer_view import NeuroglancerView
from .viewer import PointCloudViewer

_BLOCKS_LISTED = 6
_GAP = "0 12px 8px 0"  # right and below each part, so wrapped rows keep apart too
NO_MAPPING = "supervoxels (no mapping)"  # the version picker's entry for the stored labels themselves
# ...and its value: not None, which a Dropdown takes for "nothing chosen" and shows empty; never a version name.
NO_MAPPING_VALUE = ""


class Explorer(w.VBox):
    """Find labels in the table; the selected ones appear in 3D and their details beside.

    ``width`` and ``height`` are the 3D view's canvas in pixels; the table takes the width left beside it.
    The box tool's corners are voxel coordinates, lower inclusive and upper exclusive.
    "open in neuroglancer" exports the store (once; see ``neuroglancer_viewer``) and opens neuroglancer
    below, with the selected labels as its segments; later selections follow there too.

    ``selection`` is the selected labels (the table's ``selected_labels``), ``drawn`` the labels every
    part shows, ``selection_state`` the ``Selection`` every part shares.

    Example::

        explorer = Explorer(store)
        explorer.selection = [42, 43]
        explorer.limit_to_box((0, 0, 0), (512, 512, 64))
        explorer.drawn  # those of 42 and 43 with a point in the box
    """

    def __init__(
        self, store: StoreLike, *, point_budget: int = 1_500_000, width: int = 480, height: int = 400, **kwargs: Any
    ):
        self.query = open_query(store)
        self._owns_query = not isinstance(store, Reader)  # a reader handed in is the caller's to close
        self._listing = False
        self.selection_state = Selection(self.query)
        # flex "grow shrink basis": the table grows most, from a basis that shows five columns (a 20-digit label
        # and four with their histograms); narrower than that beside the view, the view wraps under the table.
        self.browser = LabelBrowser(
            self.query,
            selection_state=self.selection_state,
            layout=w.Layout(flex="3 1 540px", min_width="0", margin=_GAP),
        )
        self.viewer = PointCloudViewer(
            self.query,
            selection_state=self.selection_state,
            point_budget=point_budget,
            width=width,
            height=height,
            layout=w.Layout(flex="0 0 auto", width=f"{width}px", margin=_GAP),  # the canvas's width: legend under it
        )
        self.details = w.HTML(layout=w.Layout(max_height=f"{height + 40}px", overflow="auto", margin="4px 0 0 0"))
        self.neuroglancer: NeuroglancerView | None = None
        self.open_button = w.Button(
            description="open in neuroglancer", icon="external-link", layout=w.Layout(width="max-content")
        )
        self.open_button.on_click(lambda _button: self.open_neuroglancer())
        self.version_menu = w.Dropdown(
            options=self._versions(),
            value=self._menu_value(self.mapping),
            description="version",
            style={"description_width": "initial"},
            layout=w.Layout(width="max-content"),
        )
        self.version_menu.observe(lambda change: self._on_version(change["new"]), "value")
        self.open_button.disabled = self.mapping is not None  # the export holds supervoxels
        side = w.VBox([self.open_button, self.details], layout=w.Layout(flex="1 1 180px", min_width="0"))
        for part, name in ((self.browser, "browser"), (self.viewer, "viewer"), (side, "details")):
            part.add_class(f"pocaduck-explorer-{name}")
        self.selection_state.observe(self._on_selection, "revision")
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
            [self.version_menu, *self._corners.values(), box_button, clear_button, self.box_message],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        box_tool.add_class("pocaduck-explorer-box")
        parts = w.HBox(
            [self.browser, self.viewer, side], layout=w.Layout(flex_flow="row wrap", align_items="flex-start")
        )
        self._below = w.Box(layout=w.Layout(width="100%"))
        super().__init__([box_tool, parts, self._below], **kwargs)
        self._describe([])

    @property
    def drawn(self) -> list[int]:
        """The labels every part draws: the selection's ``labels_to_draw``."""
        return self.selection_state.labels_to_draw

    @property
    def selection(self) -> list[int]:
        """The selected labels, as the table's ``selected_labels``; settable."""
        return self.selection_state.picked

    @selection.setter
    def selection(self, labels: list[int]) -> None:
        self.selection_state.update(picked=labels)

    @property
    def mapping(self) -> str | None:
        """The mapping version read (its labels are bodies), or None for the stored supervoxels."""
        return self.query.mapping.name if isinstance(self.query, MappedQuery) else None

    def use_mapping(self, name: str | None) -> None:
        """Read the store through mapping version ``name`` (None: the stored labels), as the version picker does.

        Every part reads the new version at once; the selection keeps the labels it still lists, its box,
        and its SQL and brushes where the version's tables take them. An unknown version raises
        ``MappingNotFoundError`` and changes nothing.

        Example::

            explorer.use_mapping("v2")  # the table lists v2's bodies; picked ones that v2 lists stay picked
        """
        if name == self.mapping:
            return
        query = Query(self.query.storage_config, mapping=name)
        old, parts = self.query, (self.browser, self.viewer)
        try:
            for part in parts:
                part.use_query(query)
            self.selection_state.use_query(query)  # its revision makes every part show the new version
        except BaseException:
            for part in parts:
                part.use_query(old)
            query.close()
            raise
        self.query = query
        if self._owns_query:
            old.close()
        self._owns_query = True
        if self.neuroglancer is not None:  # it shows the export of the stored labels, and followed the old ids
            self.neuroglancer, self._below.children = None, ()
        self.open_button.disabled = name is not None
        self._listing = True  # new options reset the menu's value: not a choice to act on
        try:
            self.version_menu.options = self._versions()
            self.version_menu.value = self._menu_value(name)
        finally:
            self._listing = False
        self._describe(self.drawn)

    def _versions(self) -> list[tuple[str, str | None]]:
        """The version picker's entries: no mapping, then the store's versions, oldest first."""
        try:
            names = [version.name for version in list_mappings(self.query.storage_config)]
        except PocaduckError:  # a store that cannot hold mappings (the original library's)
            names = []
        return [(NO_MAPPING, NO_MAPPING_VALUE), *((name, name) for name in names)]

    @staticmethod
    def _menu_value(mapping: str | None) -> str:
        return NO_MAPPING_VALUE if mapping is None else mapping

    def _on_version(self, value: str) -> None:
        if self._listing:
            return
        try:
            self.use_mapping(None if value == NO_MAPPING_VALUE else value)
        except PocaduckError as error:
            self.box_message.value = f"<span style='color:#b00020'>{html.escape(str(error))}</span>"

    def limit_to_box(self, lower: tuple[float, float, float], upper: tuple[float, float, float]) -> list[int]:
        """List only the labels with a point in ``lower <= p < upper`` and show their points inside it.

        Returns those labels. The selection stays; a bad box raises ``InvalidBoxError`` and changes nothing.
        """
        self.selection_state.update(box=(lower, upper))
        return self.selection_state.box_labels

    def clear_box(self) -> None:
        """List every label again and show whole labels; the selection stays."""
        self.selection_state.update(box=None)

    def _on_box_button(self) -> None:
        values = [self._corners[name].value for name in self._corners]
        try:
            self.limit_to_box(values[:3], values[3:])
        except PocaduckError as error:  # a bad box, or a SELECT in the table without a label column
            self.box_message.value = f"<span style='color:#b00020'>{html.escape(str(error))}</span>"

    def open_neuroglancer(self) -> NeuroglancerView:
        """Show neuroglancer below, with the labels drawn (the first time, the store is exported first)."""
        if self.neuroglancer is None:
            self.open_button.disabled, self.open_button.description = True, "exporting…"
            try:
                self.neuroglancer = NeuroglancerView(self.query, selection_state=self.selection_state)
            finally:
                self.open_button.disabled, self.open_button.description = False, "open in neuroglancer"
            self._below.children = (self.neuroglancer,)
        return self.neuroglancer

    def _on_selection(self, _change: dict) -> None:
        """The box tool and the details say what the selection holds (the other parts follow it themselves)."""
        box = self.selection_state.box
        if box is None:
            self.box_message.value = ""
        else:
            for name, value in zip(self._corners, [*box[0], *box[1]], strict=True):
                self._corners[name].value = value
            self.box_message.value = html.escape(f"{len(self.selection_state.box_labels):,} labels in the box")
        self._describe(self.drawn)

    def _describe(self, labels: list[int]) -> None:
        if not labels:
            hidden = len(self.selection_state.picked)
            self.details.value = (
                f"<i>the {hidden:,} selected labels are hidden by the table's filters</i>"
                if hidden
                else "<i>select rows to see their points</i>"
            )
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
            f"max-width:16em;margin:0 1.5em 1em 0'><b>{'label' if self.mapping is None else 'body'} <code>{label}</code></b><table>{rows}</table>"
            f"<small>blocks: {listed}{more}</small></div>"
        )
