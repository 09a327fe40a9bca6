"""The point cloud viewer: labels' points in WebGL through pythreejs.

Positions are scaled by the store's voxel size and shifted so the view's
origin sits at the middle of the first labels shown, then sent as float32
binary buffers: raw voxel coordinates in the hundred thousands would lose
their last digits in float32. The point budget is split over the labels in
proportion to their point counts (from the index), and each label's share is
fetched with ``get_points(label, sample=share)``: a label of millions of points
is never read whole to draw a thousand of them, and the engine's sample is the
same on every call, so the same selection always shows the same points.
"more points" doubles the budget and fetches the larger samples.

In a kernel, the first frame of a large selection is drawn from
``first_points`` points at most (a 10-million-point label's first frame then
costs a 2.4 MB message and a short upload, not 24 MB); the rest of the budget
follows by itself once the browser says it has painted since (``_PaintSignal``),
so the larger message never delays the first frame. Without a kernel (a
script, a test) the whole budget is drawn at once.

With a box, only the labels' points inside it are shown: those are read with
``get_points_in_box`` (the engine has no sampled box read) and the budget's
share of them is drawn with a seed derived from the label.

Through a mapping (a ``MappedQuery``: labels are bodies) points are read with
their supervoxel, and one body drawn alone in label colours is coloured by
supervoxel instead: one colour says nothing about a single body, its
supervoxels show where a merge joined it or a cleave would split it.

The view explains itself: colouring by label shows a swatch per label in the
legend; a continuous colouring (depth, a float column) shows a colour bar with
the column's name, range and unit instead; the axes carry a tick every round
number of nanometres, said in a line under the canvas. A double-click on a
point sets ``picked`` (its label, voxel coordinates and extra columns): a
double-click, because a single click ends every drag of the orbit controls.
The browser's Picker tests every point of the objects near the ray, so a cloud
of more than 262,144 points is sent as pieces of neighbouring points
(``_pieces``): with 2 M points drawn a pick tests a few pieces, not them all.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anywidget
import ipywidgets as w
import numpy as np
import pythreejs as three
import traitlets as t

from pocaduck import MappedQuery, Reader
from pocaduck.keys import check_label

from ._colors import category_colors, label_color, ramp_colors, ramp_gradient
from ._pieces import piece_count, spatial_order
from ._selection import Selection
from ._source import StoreLike, open_query, voxel_size
from ._wire import LabelList

COLOR_BY_LABEL = "label"
COLOR_BY_DEPTH = "depth"
_AXIS_COLORS = ((0.9, 0.25, 0.25), (0.3, 0.8, 0.3), (0.3, 0.5, 1.0))  # x red, y green, z blue, as three.js draws them


Box = tuple[Sequence[float], Sequence[float]]


@dataclass
class _Shown:
    """One label on screen: how many points it has on show, the ones fetched to draw, and what was sent for it."""

    count: int  # the label's points, or its points inside the box
    in_box: np.ndarray | None = None  # with a box: all the label's points inside it, read once
    in_box_supervoxels: np.ndarray | None = None  # through a mapping: the supervoxel of each of ``in_box``
    points: np.ndarray | None = None  # the drawn share, fetched for the current budget
    supervoxels: np.ndarray | None = None  # through a mapping: the supervoxel of each of ``points``
    cloud: three.Points | three.Group | None = None  # one Points, or a Group of pieces for a large cloud
    pieces: tuple[tuple[three.Points, np.ndarray | None], ...] = ()  # each Points and its rows of ``points``
    positions: np.ndarray | None = None  # the float32 positions sent, in the order of ``points``
    sent: tuple | None = None  # (kept point count, color_by) of the geometry in ``cloud``
    bounds: tuple[np.ndarray, np.ndarray] | None = None  # lowest and highest position in ``cloud``


class PointCloudViewer(w.VBox):
    """Show labels' point clouds in 3D, one stable color per label, with a legend.

    Example::

        viewer = PointCloudViewer(store)
        viewer.show([42, 43])
        viewer.color_by = "depth"
    """

    labels = LabelList(read_only=True, help="labels shown, in the order they were added")
    color_by = t.Unicode(COLOR_BY_LABEL, help="'label', 'depth' or the name of an extra point column")
    point_size = t.Float(2.0, help="point size in screen pixels")
    point_budget = t.Int(1_500_000, help="most points drawn; larger selections are subsampled")
    first_points = t.Int(200_000, help="most points of the first frame; the rest of the budget follows")
    show_box = t.Bool(False, help="draw the bounding box of the visible points")
    show_axes = t.Bool(False, help="draw x (red), y (green), z (blue) axes at the box corner")
    shown_points = t.Int(0, read_only=True, help="points drawn of the visible labels (hidden ones not counted)")
    total_points = t.Int(0, read_only=True, help="points of the visible labels, drawn or not")
    picked = t.Dict(
        default_value=None,
        allow_none=True,
        read_only=True,
        help="the point last double-clicked: label, point, extra columns",
    )

    def __init__(
        self,
        store: StoreLike,
        *,
        point_budget: int = 1_500_000,
        first_points: int = 200_000,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        selection_state: Selection | None = None,
        **kwargs: Any,
    ):
        self.query = open_query(store)
        self.voxel_size = np.array(voxel_size(self.query), np.float64)
        self.seed = seed
        self._shown: dict[int, _Shown] = {}
        self._box: Box | None = None
        self._origin: np.ndarray | None = None
        self._budget = point_budget  # what is drawn now: first_points for a first frame, then point_budget
        self._first_frame = 0  # counts first frames: the browser's answer names the one it painted after
        self._refining = False  # a first frame is shown and the rest of the budget waits for the browser
        self._painted = _PaintSignal(layout=w.Layout(display="none"))
        self._painted.on_msg(self._on_painted)
        self._camera = three.PerspectiveCamera(position=[1, 1, 1], fov=45, aspect=width / height, up=[0, 0, 1])
        self._controls = three.OrbitControls(controlling=self._camera)
        self._cloud_group = three.Group()  # the visible labels' clouds only: hidden ones are neither drawn nor picked
        self._picker = three.Picker(controlling=self._cloud_group, event="dblclick")
        self._picker.observe(self._on_pick, ["object", "index", "point"])
        self._extras = three.Group()
        scene = three.Scene(children=[self._cloud_group, self._extras, self._camera], background="#111418")
        self.renderer = three.Renderer(
            camera=self._camera, scene=scene, controls=[self._controls, self._picker], width=width, height=height
        )
        compact = {"description_width": "initial"}  # the label as wide as its word, not a fixed 80 px
        self._color_menu = w.Dropdown(
            options=self._color_choices(), description="color", style=compact, layout=w.Layout(width="13em")
        )
        self._size_slider = w.FloatSlider(
            min=0.5, max=10, step=0.5, description="size", style=compact, layout=w.Layout(width="13em")
        )
        fit_button = w.Button(description="fit", layout=w.Layout(width="4em"))
        fit_button.on_click(lambda _button: self.fit())
        box_toggle = w.Checkbox(description="box", indent=False, layout=w.Layout(width="auto"))
        axes_toggle = w.Checkbox(description="axes", indent=False, layout=w.Layout(width="auto"))
        self._more_button = w.Button(description="more points", disabled=True, layout=w.Layout(width="auto"))
        self._more_button.on_click(lambda _button: self.more())
        controls = {"color_by": self._color_menu, "point_size": self._size_slider}
        for name, control in {**controls, "show_box": box_toggle, "show_axes": axes_toggle}.items():
            w.link((self, name), (control, "value"))
        self._status = w.HTML()
        self._axes_note = w.HTML(layout=w.Layout(width=f"{width}px"))
        self._axes_note.add_class("pocaduck-axes-note")
        self._pick_note = w.HTML(layout=w.Layout(width=f"{width}px"))
        self._pick_note.add_class("pocaduck-picked")
        # Beside the canvas when there is room, under it when the viewer is narrow (as in the explorer).
        self._legend = w.VBox(layout=w.Layout(max_height=f"{height}px", overflow="auto", flex="1 1 17em"))
        self._toggles: dict[int, w.Checkbox] = {}
        controls = w.HBox(
            [self._color_menu, self._size_slider, fit_button, box_toggle, axes_toggle, self._more_button],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        canvas = w.VBox([self.renderer, self._axes_note, self._pick_note], layout=w.Layout(flex="0 0 auto"))
        view = w.HBox([canvas, self._legend], layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        super().__init__(
            [controls, view, self._status, self._painted],
            point_budget=point_budget,
            first_points=first_points,
            **kwargs,
        )
        self._update_status()
        self._update_pick_note()
        if selection_state is not None:
            self._follow(selection_state)

    # -- public ------------------------------------------------------------

    def show(self, labels: int | Iterable[int], *, box: Box | None = None) -> None:
        """Replace what is shown by these labels and fit the camera to them.

        ``box=(lower, upper)`` shows only their points with ``lower <= p[:3] < upper``,
        here and in later ``add`` calls; a bad box raises ``InvalidBoxError``.

        Example::

            viewer.show(42)
            viewer.show([42, 43], box=((0, 0, 0), (512, 512, 64)))
        """
        previous = self._box
        self._box = box
        try:
            new = self._labels_to_add(labels)
            fetched = self._fetch_counts(new)  # before forgetting: a bad box leaves the view as it was
        except Exception:
            self._box = previous
            raise
        self._forget(list(self._shown))
        self._origin = None
        self._shown.update(fetched)
        self._draw_first_frame()
        self.fit()

    def add(self, labels: int | Iterable[int]) -> None:
        """Show these labels too (labels already shown stay as they are)."""
        new = [label for label in self._labels_to_add(labels) if label not in self._shown]
        if new:
            self._shown.update(self._fetch_counts(new))
            self._draw_first_frame()

    def more(self) -> None:
        """Draw twice as many points: double the point budget and fetch the larger samples."""
        self.point_budget *= 2

    @property
    def box(self) -> Box | None:
        """The (lower, upper) corners the shown points are limited to, or None."""
        return self._box

    def remove(self, labels: int | Iterable[int]) -> None:
        """Stop showing these labels."""
        self._forget(_label_list(labels))
        self._redraw()

    def clear(self) -> None:
        """Show nothing."""
        self._forget(list(self._shown))
        self._origin = None
        self._redraw()

    def use_query(self, query: Reader) -> None:
        """Read from ``query`` from now on (the Explorer's version picker): nothing drawn stays, since an id
        may be another body there; a selection followed draws anew at its next revision."""
        self.query = query
        self.voxel_size = np.array(voxel_size(query), np.float64)
        self.clear()

    def set_visible(self, label: int, visible: bool) -> None:
        """Hide or show one label without removing it (the legend's check box)."""
        self._toggles[check_label(label)].value = visible

    def fit(self) -> None:
        """Aim the camera at the visible points so all of them are in view."""
        low, high = self._visible_bounds()
        center = (low + high) / 2
        radius = max(float(np.linalg.norm(high - low)) / 2, 1e-3)
        distance = radius / np.tan(np.radians(self._camera.fov / 2)) * 1.1
        direction = np.array([1.0, -1.2, 0.8]) / np.linalg.norm([1.0, -1.2, 0.8])
        with self._camera.hold_sync():
            self._camera.near, self._camera.far = distance / 100, distance * 10
            self._camera.position = tuple((center + direction * distance).tolist())
        self._controls.target = tuple(center.tolist())
        self._camera.lookAt(tuple(center.tolist()))
        # Points are hit within a few screen pixels of the ray, measured at the distance of the view's centre.
        pixel = 2 * distance * np.tan(np.radians(self._camera.fov / 2)) / self.renderer.height
        self._picker.pointThreshold = float(pixel * max(4.0, self.point_size))
        self._draw_extras()

    def positions(self, label: int) -> np.ndarray:
        """The float32 positions sent to the browser for ``label``: scaled by voxel size, centered."""
        return self._shown[check_label(label)].positions

    @property
    def color_bar(self) -> dict | None:
        """What the colour bar says under a continuous colouring, else None (by label, or one colour per value).

        ``{"name": "z", "unit": "nm", "low": ..., "high": ...}``: the drawn points' lowest and highest value,
        in nm for depth (voxel z times the voxel size), in the column's own values for an extra column.
        """
        if not self._shown or not self._is_continuous():
            return None
        low, high = self._drawn_range
        if self.color_by == COLOR_BY_DEPTH:
            return {"name": "z", "unit": "nm", "low": low * self.voxel_size[2], "high": high * self.voxel_size[2]}
        return {"name": self.color_by, "unit": "", "low": low, "high": high}

    @property
    def origin(self) -> np.ndarray | None:
        """The voxel coordinates drawn at the view's (0, 0, 0)."""
        return self._origin

    # -- following a selection ----------------------------------------------------

    def _follow(self, selection: Selection) -> None:
        """Draw ``selection.labels_to_draw`` inside its box whenever it changes; a double-click picks a label."""

        def draw(_change: dict | None = None) -> None:
            labels, box = selection.labels_to_draw, selection.box
            if labels and (labels != self.labels or box != self._box):
                self.show(labels, box=box)
            elif not labels and self._shown:
                self.clear()

        def pick(change: dict) -> None:
            if change["new"] is not None:
                selection.update(picked=[change["new"]["label"]])

        selection.observe(draw, "revision")
        self.observe(pick, "picked")
        draw()

    # -- drawing -------------------------------------------------------------

    def _draw_first_frame(self) -> None:
        """Draw at most ``first_points`` now and the whole budget once the browser has painted them."""
        self._first_frame += 1  # an answer about an earlier first frame is now stale
        self._refining = False
        first = min(self.first_points, self.point_budget)
        self._budget = first if _front_end_answers() else self.point_budget
        self._redraw()
        if self._budget < self.point_budget and self.shown_points < self.total_points:
            self._refining = True
            clouds = [shown.cloud.model_id for shown in self._shown.values() if shown.cloud is not None]
            self._painted.send({"first_frame": self._first_frame, "clouds": clouds})
            self._update_status()

    def _on_painted(self, _signal: w.Widget, content: dict, _buffers: list) -> None:
        if self._refining and content.get("painted") == self._first_frame:
            self._refining = False
            self._budget = self.point_budget
            self._redraw()

    def _forget(self, labels: list[int]) -> None:
        for label in labels:
            self._shown.pop(label, None)
            self._toggles.pop(label, None)

    @staticmethod
    def _middle_of(point_sets: list[np.ndarray]) -> np.ndarray:
        non_empty = [_column_bounds(p[:, :3]) for p in point_sets if len(p)]
        if not non_empty:
            return np.zeros(3)
        low = np.min([low for low, _ in non_empty], axis=0).astype(np.float64)
        high = np.max([high for _, high in non_empty], axis=0).astype(np.float64)
        return np.round((low + high) / 2)

    @staticmethod
    def _labels_to_add(labels: int | Iterable[int]) -> list[int]:
        return list(dict.fromkeys(_label_list(labels)))

    def _fetch_counts(self, labels: list[int]) -> dict[int, _Shown]:
        """How many points each label has on show; with a box, its points inside it too."""
        if not labels:
            return {}
        if self._box is not None:
            lower, upper = self._box
            if isinstance(self.query, MappedQuery):
                table = self.query.get_points_in_box(lower, upper, labels=labels, output="arrow")
                owners = table.column("label").to_numpy()
                points, supervoxels = self._split_supervoxels(table)
                return {
                    label: _Shown(int(mine.sum()), in_box=points[mine], in_box_supervoxels=supervoxels[mine])
                    for label in labels
                    for mine in [owners == np.uint64(label)]
                }
            inside = self.query.get_points_in_box(lower, upper, labels=labels, output="numpy")
            return {label: _Shown(len(inside[label]), in_box=inside[label]) for label in labels}
        return {label: _Shown(self.query.get_point_count(label)) for label in labels}

    def _kept_counts(self) -> dict[int, int]:
        sizes = {label: shown.count for label, shown in self._shown.items()}
        total = sum(sizes.values())
        if total <= self._budget:
            return sizes
        return {label: min(size, max(1, size * self._budget // total)) for label, size in sizes.items()}

    def _fetch_share(self, label: int, shown: _Shown, keep: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``keep`` of the label's points, and through a mapping their supervoxels: the engine's sample, or a
        seeded share of the points in the box."""
        mapped = isinstance(self.query, MappedQuery)
        if shown.in_box is None:
            if keep == 0:  # a label the index does not know: nothing to read
                return np.empty((0, len(self.query.schema.columns))), np.empty(0, np.uint64) if mapped else None
            if mapped:
                return self._split_supervoxels(self.query.get_points(label, sample=keep, output="arrow"))
            return self.query.get_points(label, sample=keep), None
        if keep >= len(shown.in_box):
            return shown.in_box, shown.in_box_supervoxels
        rng = np.random.default_rng([self.seed, label])
        rows = np.sort(rng.choice(len(shown.in_box), keep, replace=False))
        return shown.in_box[rows], None if shown.in_box_supervoxels is None else shown.in_box_supervoxels[rows]

    def _split_supervoxels(self, table: Any) -> tuple[np.ndarray, np.ndarray]:
        """A MappedQuery's Arrow points as the (N, D) array ``get_points`` gives, and each point's supervoxel."""
        columns = self.query.schema.columns
        points = np.column_stack([table.column(name).to_numpy() for name in columns]) if table.num_rows else None
        points = np.empty((0, len(columns)), self.query.schema.dtype) if points is None else points
        return points, table.column(self.query.supervoxel_column).to_numpy().astype(np.uint64, copy=False)

    def _by_supervoxel(self) -> bool:
        """True when the one body drawn through a mapping is coloured by supervoxel rather than in one colour."""
        return isinstance(self.query, MappedQuery) and self.color_by == COLOR_BY_LABEL and len(self._shown) == 1

    def _redraw(self) -> None:
        kept = self._kept_counts()
        for label, shown in self._shown.items():
            if shown.points is None or len(shown.points) != kept[label]:
                shown.points, shown.supervoxels = self._fetch_share(label, shown, kept[label])
                shown.sent = None
                if len(shown.points) < kept[label]:
                    # Fewer than asked: the whole label is drawn. The original library's stores count
                    # points before de-duplicating them, so their index count can exceed what a read gives.
                    shown.count = kept[label] = len(shown.points)
        if self._origin is None:
            self._origin = self._middle_of([shown.points for shown in self._shown.values()])
        color_range = self._drawn_range = self._color_range()
        for label, shown in self._shown.items():
            # A ramp's colours depend on the range of every drawn label: a label added can widen it.
            wanted = (
                kept[label],
                self.color_by,
                color_range if self._is_continuous() else None,
                self._by_supervoxel(),
            )
            if shown.sent != wanted:
                self._make_cloud(label, shown, color_range)
                shown.bounds = _column_bounds(shown.positions)
                shown.sent = wanted
        self.set_trait("labels", list(self._shown))
        if self.picked is not None and self.picked["label"] not in self._shown:
            self.set_trait("picked", None)
        self._update_pick_note()
        self._update_visible()
        self._update_legend()
        self._update_status()
        self._draw_extras()

    def _is_visible(self, label: int) -> bool:
        toggle = self._toggles.get(label)
        return toggle is None or toggle.value

    def _update_visible(self) -> None:
        """Draw the visible labels' clouds and count their points: hidden labels are neither drawn nor counted."""
        visible = [shown for label, shown in self._shown.items() if self._is_visible(label)]
        self._cloud_group.children = tuple(shown.cloud for shown in visible if shown.cloud is not None)
        self.set_trait("total_points", sum(shown.count for shown in visible))
        self.set_trait("shown_points", sum(len(shown.points) for shown in visible if shown.points is not None))
        self._more_button.disabled = self.shown_points >= self.total_points

    def _is_continuous(self) -> bool:
        """True when points are coloured along a ramp: by depth, or by an extra column of floats."""
        if self.color_by == COLOR_BY_LABEL:
            return False
        if self.color_by == COLOR_BY_DEPTH:
            return True
        return not np.issubdtype(np.dtype(self.query.schema.dtype), np.integer)

    def _color_range(self) -> tuple[float, float]:
        if self.color_by == COLOR_BY_LABEL:
            return (0.0, 1.0)
        column = 2 if self.color_by == COLOR_BY_DEPTH else self.query.schema.columns.index(self.color_by)
        values = [shown.points[:, column] for shown in self._shown.values() if len(shown.points)]
        if not values:
            return (0.0, 1.0)
        return (float(min(v.min() for v in values)), float(max(v.max() for v in values)))

    def _make_cloud(self, label: int, shown: _Shown, color_range: tuple[float, float]) -> None:
        """Build ``shown``'s cloud from its points: one Points, or for a large cloud a Group of pieces of
        neighbours (``_pieces``), so that a pick raycasts the few pieces near the ray rather than every point."""
        points = shown.points
        positions = ((points[:, :3].astype(np.float64) - self._origin) * self.voxel_size).astype(np.float32)
        material = three.PointsMaterial(size=self.point_size, sizeAttenuation=False, color=label_color(label))
        colors = None
        if self.color_by != COLOR_BY_LABEL or (self._by_supervoxel() and shown.supervoxels is not None):
            colors = self._point_colors(points, color_range, shown.supervoxels)
            material.color, material.vertexColors = "#ffffff", "VertexColors"
        visible = self._toggles[label].value if label in self._toggles else True
        count = piece_count(len(positions))
        if count == 1:
            cloud = _points(positions, colors, material, visible)
            shown.cloud, shown.pieces = cloud, ((cloud, None),)
        else:
            order = spatial_order(positions)
            rows = np.array_split(order, count)
            placed = np.array_split(positions[order], count)  # views of one gathered array: contiguous pieces
            tinted = np.array_split(colors[order], count) if colors is not None else [None] * count
            parts = [_points(*piece, material) for piece in zip(placed, tinted, strict=True)]
            shown.cloud = three.Group(children=tuple(parts), visible=visible)
            shown.pieces = tuple(zip(parts, rows, strict=True))
        shown.positions = positions

    def _point_colors(
        self, points: np.ndarray, color_range: tuple[float, float], supervoxels: np.ndarray | None = None
    ) -> np.ndarray:
        if self.color_by == COLOR_BY_LABEL:  # one body through a mapping: its supervoxels
            return category_colors(supervoxels)
        if self.color_by == COLOR_BY_DEPTH:
            return ramp_colors(points[:, 2], *color_range)
        values = points[:, self.query.schema.columns.index(self.color_by)]
        if np.issubdtype(values.dtype, np.integer):
            return category_colors(values)
        return ramp_colors(values, *color_range)

    def _visible_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        visible = [
            shown.bounds
            for shown in self._shown.values()
            if shown.cloud is not None and shown.cloud.visible and len(shown.points)
        ]
        if not visible:
            return np.full(3, -1.0), np.full(3, 1.0)
        low = np.min([low for low, _ in visible], axis=0).astype(np.float64)
        high = np.max([high for _, high in visible], axis=0).astype(np.float64)
        return low, high

    def _draw_extras(self) -> None:
        low, high = self._visible_bounds()
        extras = []
        if self.show_box:
            box = three.Box3(min=tuple(low.tolist()), max=tuple(high.tolist()))
            extras.append(three.Box3Helper(box=box, color="#cccccc"))
        self._axes_note.value = ""
        if self.show_axes:
            step = _nice_step(float(np.max(high - low)) / 8)  # 4 to 8 ticks along the longest axis
            extras.append(_axes_with_ticks(low, high, step))
            corner = ", ".join(
                _number(value) for value in low + (self._origin if self._origin is not None else 0) * self.voxel_size
            )
            self._axes_note.value = (
                f"<small>axes from ({corner}) nm: <span class='pocaduck-axes-step'>a tick every {_length(step)}</span>"
                " · x red, y green, z blue</small>"
            )
        self._extras.children = tuple(extras)

    def _update_legend(self) -> None:
        by_label = self.color_by == COLOR_BY_LABEL and not self._by_supervoxel()
        rows = [] if by_label or not self._shown else [self._color_key()]
        for label, shown in self._shown.items():
            toggle = self._toggles.get(label)
            if toggle is None:
                toggle = w.Checkbox(value=True, indent=False, layout=w.Layout(width="2em"))
                toggle.observe(lambda change, label=label: self._on_toggle(label, change["new"]), "value")
                self._toggles[label] = toggle
            # A swatch only where it is the colour drawn: under another colouring it would contradict the view.
            swatch = (
                f"<span class='pocaduck-swatch' style='display:inline-block;width:1em;height:1em;"
                f"background:{label_color(label)};vertical-align:middle;margin-right:4px'></span>"
                if by_label
                else ""
            )
            text = f"{swatch}<code style='font-size:11px'>{label}</code> {shown.count:,} pts"
            rows.append(
                w.HBox([toggle, w.HTML(text, layout=w.Layout(width="auto"))], _dom_classes=["pocaduck-legend-row"])
            )
        self._legend.children = tuple(rows)

    def _color_key(self) -> w.HTML:
        """The colour bar of a continuous colouring, or a line saying each value of the column has its colour."""
        bar = self.color_bar
        if self._by_supervoxel():
            (shown,) = self._shown.values()
            drawn = 0 if shown.supervoxels is None else len(np.unique(shown.supervoxels))
            note = f"<small>one body: coloured by supervoxel ({drawn:,} drawn)</small>"
            return w.HTML(note, _dom_classes=["pocaduck-color-note"])
        if bar is None:
            note = f"<small>coloured by {html.escape(self.color_by)}: one colour per value</small>"
            return w.HTML(note, _dom_classes=["pocaduck-color-note"])
        unit = f" ({bar['unit']})" if bar["unit"] else ""
        return w.HTML(
            f"<div style='width:14em;margin:2px 0 6px 0;font-size:11px'>"
            f"<div class='pocaduck-colorbar-name'>{html.escape(bar['name'] + unit)}</div>"
            f"<div style='height:12px;background:{ramp_gradient()};border:1px solid #888'></div>"
            f"<div style='display:flex;justify-content:space-between'>"
            f"<span class='pocaduck-colorbar-low'>{_number(bar['low'])}</span>"
            f"<span class='pocaduck-colorbar-high'>{_number(bar['high'])}</span></div></div>",
            _dom_classes=["pocaduck-colorbar"],
        )

    def _on_toggle(self, label: int, visible: bool) -> None:
        shown = self._shown.get(label)
        if shown is not None and shown.cloud is not None:
            shown.cloud.visible = visible
            self._update_visible()
            self._update_status()
            self._draw_extras()

    def _on_pick(self, _change: dict) -> None:
        found = self._picked_row(self._picker.object, self._picker.index)
        if found is None:
            return  # a miss, or a cloud replaced since: what was picked stays
        label, row_index = found
        row = self._shown[label].points[row_index]
        columns = self.query.schema.columns
        picked = {"label": label, "point": [value.item() for value in row[:3]]}
        picked.update({name: row[column].item() for column, name in enumerate(columns[3:], 3)})
        if self._shown[label].supervoxels is not None:  # named as the query's Arrow output names it
            picked[self.query.supervoxel_column] = int(self._shown[label].supervoxels[row_index])
        self.set_trait("picked", picked)
        self._update_pick_note()

    def _picked_row(self, hit: Any, index: int | None) -> tuple[int, int] | None:
        """(label, row of its ``points``) of the point ``index`` of the Points object ``hit``; None if not shown."""
        if hit is None or index is None:
            return None
        for label, shown in self._shown.items():
            for piece, rows in shown.pieces:
                if piece is hit:
                    rows_in_piece = len(shown.points) if rows is None else len(rows)
                    if not 0 <= index < rows_in_piece:
                        return None
                    return label, index if rows is None else int(rows[index])
        return None

    def _update_pick_note(self) -> None:
        if self.picked is None:
            self._pick_note.value = "<small>double-click a point to see its label</small>" if self._shown else ""
            return
        point = ", ".join(_number(value) for value in self.picked["point"])
        owner = self.query.supervoxel_column if isinstance(self.query, MappedQuery) else None
        extras = "".join(
            f" · {html.escape(name)} {_number(value)}"
            for name, value in self.picked.items()
            if name not in ("label", "point", owner)
        )
        if owner in self.picked:  # an id: exact, as the label is, not a number rounded for reading
            extras += f" · {owner} <code>{self.picked[owner]}</code>"
        self._pick_note.value = (
            f"<small>picked label <code class='pocaduck-picked-label'>{self.picked['label']}</code>"
            f" at voxel ({point}){extras}</small>"
        )

    def _update_status(self) -> None:
        if not self._shown:
            self._status.value = "<i>nothing shown: select labels</i>"
            return
        if self._refining:
            sampled = " (a first sample: the rest of the point budget is on its way)"
        elif self.shown_points < self.total_points:
            sampled = " (sampled to the point budget: more points draws more)"
        else:
            sampled = ""
        inside = " inside the box" if self._box is not None else ""
        hidden = sum(not self._is_visible(label) for label in self._shown)
        hidden_note = f" · {hidden} hidden label{'s' if hidden > 1 else ''} not counted" if hidden else ""
        voxel = " × ".join(f"{v:g}" for v in self.voxel_size)
        self._status.value = html.escape(
            f"showing {self.shown_points:,} of {self.total_points:,} points{inside}{sampled}{hidden_note}"
            f" · voxel {voxel} nm"
        )

    @t.observe("color_by")
    def _on_color_by(self, _change: dict) -> None:
        if self._shown:
            self._redraw()

    @t.observe("point_budget")
    def _on_point_budget(self, _change: dict) -> None:
        self._refining = False  # a budget asked for is drawn now, whole, whether the browser answered or not
        self._budget = self.point_budget
        if self._shown:
            self._redraw()

    @t.observe("point_size")
    def _on_point_size(self, change: dict) -> None:
        for shown in self._shown.values():
            for piece, _rows in shown.pieces:  # the pieces of a large cloud share one material: set once
                piece.material.size = change["new"]

    @t.observe("show_box", "show_axes")
    def _on_extras(self, _change: dict) -> None:
        self._draw_extras()

    @t.validate("color_by")
    def _check_color_by(self, proposal: dict) -> str:
        allowed = self._color_choices()
        if proposal["value"] not in allowed:
            raise t.TraitError(f"color_by must be one of {allowed}, not {proposal['value']!r}")
        return proposal["value"]

    def _color_choices(self) -> list[str]:
        return [COLOR_BY_LABEL, COLOR_BY_DEPTH, *self.query.schema.columns[3:]]


class _PaintSignal(anywidget.AnyWidget):
    """Answers the kernel once the browser holds the first frame's clouds and has painted twice: the viewer refines then.

    Painting alone is not enough: the clouds' models are built asynchronously, and
    an answer sent before them lets the rest of the budget overtake the first frame.
    """

    _esm = """
    export default {
      render({ model }) {
        model.on("msg:custom", async (message) => {
          await Promise.all(message.clouds.map((id) => model.widget_manager.get_model(id)));
          requestAnimationFrame(() => requestAnimationFrame(() => model.send({ painted: message.first_frame })));
        });
      },
    };
    """


def _points(
    positions: np.ndarray, colors: np.ndarray | None, material: three.PointsMaterial, visible: bool = True
) -> three.Points:
    attributes = {"position": three.BufferAttribute(array=positions, normalized=False)}
    if colors is not None:
        attributes["color"] = three.BufferAttribute(array=colors, normalized=False)
    return three.Points(geometry=three.BufferGeometry(attributes=attributes), material=material, visible=visible)


def _axes_with_ticks(low: np.ndarray, high: np.ndarray, step: float) -> three.LineSegments:
    """x, y and z axes along the box's edges from its lowest corner, with a tick every ``step`` nm outward."""
    tick = float(np.max(high - low)) / 50
    ends, colors = [], []
    for axis, color in enumerate(_AXIS_COLORS):
        end = low.copy()
        end[axis] = high[axis]
        ends += [low, end]
        across = 1 if axis == 0 else 0  # x's ticks point along -y, y's and z's along -x: out of the box
        for distance in np.arange(step, high[axis] - low[axis] + step / 1000, step):
            at = low.copy()
            at[axis] += distance
            out = at.copy()
            out[across] -= tick
            ends += [at, out]
        colors += [color] * (len(ends) - len(colors))
    geometry = three.BufferGeometry(
        attributes={
            "position": three.BufferAttribute(array=np.array(ends, np.float32), normalized=False),
            "color": three.BufferAttribute(array=np.array(colors, np.float32), normalized=False),
        }
    )
    return three.LineSegments(geometry=geometry, material=three.LineBasicMaterial(vertexColors="VertexColors"))


def _nice_step(rough: float) -> float:
    """The round number (1, 2 or 5 times a power of ten) at or above ``rough``."""
    if rough <= 0:
        return 1.0
    power = 10 ** np.floor(np.log10(rough))
    return float(next(factor * power for factor in (1, 2, 5, 10) if factor * power >= rough * (1 - 1e-9)))


def _length(nm: float) -> str:
    """A length in nm as people say it: ``200 nm``, ``1 µm``, ``2.5 mm``."""
    for unit, size in (("mm", 1e6), ("µm", 1e3)):
        if abs(nm) >= size:
            return f"{nm / size:g} {unit}"
    return f"{nm:g} nm"


def _number(value: float) -> str:
    """A value for people to read: whole numbers with thousands separators, others to four significant digits."""
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() else f"{value:.4g}"


def _front_end_answers() -> bool:
    """True in a Jupyter kernel, where a browser may answer the viewer's messages."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _column_bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's lowest and highest value; column by column, many times faster than ``min(axis=0)`` on (N, 3)."""
    columns = range(points.shape[1])
    return np.array([points[:, j].min() for j in columns]), np.array([points[:, j].max() for j in columns])


def _label_list(labels: int | Iterable[int]) -> list[int]:
    """One label or many, checked, as a list of Python ints."""
    return [check_label(label) for label in (np.atleast_1d(labels).tolist() if np.ndim(labels) == 0 else labels)]
