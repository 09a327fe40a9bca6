"""The point cloud viewer: labels' points in WebGL through pythreejs.

Positions are scaled by the store's voxel size and shifted so the view's
origin sits at the middle of the first labels shown, then sent as float32
binary buffers: raw voxel coordinates in the hundred thousands would lose
their last digits in float32. Above the point budget each label keeps a
share of its points drawn with a seed derived from the label, so the same
selection always shows the same points.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as w
import numpy as np
import pythreejs as three
import traitlets as t

from pocaduck.keys import check_label

from ._colors import category_colors, label_color, ramp_colors
from ._source import StoreLike, open_query, voxel_size

COLOR_BY_LABEL = "label"
COLOR_BY_DEPTH = "depth"


@dataclass
class _Shown:
    """One label on screen: its full points (kernel side) and what was sent for it."""

    points: np.ndarray
    cloud: three.Points | None = None
    sent: tuple | None = None  # (kept point count, color_by) of the geometry in ``cloud``


class PointCloudViewer(w.VBox):
    """Show labels' point clouds in 3D, one stable color per label, with a legend.

    Example::

        viewer = PointCloudViewer(store)
        viewer.show([42, 43])
        viewer.color_by = "depth"
    """

    labels = t.List(t.Int(), read_only=True, help="labels shown, in the order they were added")
    color_by = t.Unicode(COLOR_BY_LABEL, help="'label', 'depth' or the name of an extra point column")
    point_size = t.Float(2.0, help="point size in screen pixels")
    point_budget = t.Int(1_500_000, help="most points drawn; larger selections are subsampled")
    show_box = t.Bool(False, help="draw the bounding box of the visible points")
    show_axes = t.Bool(False, help="draw x (red), y (green), z (blue) axes at the box corner")
    shown_points = t.Int(0, read_only=True)
    total_points = t.Int(0, read_only=True)

    def __init__(
        self,
        store: StoreLike,
        *,
        point_budget: int = 1_500_000,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        **kwargs: Any,
    ):
        self.query = open_query(store)
        self.voxel_size = np.array(voxel_size(self.query), np.float64)
        self.seed = seed
        self._shown: dict[int, _Shown] = {}
        self._origin: np.ndarray | None = None
        self._camera = three.PerspectiveCamera(position=[1, 1, 1], fov=45, aspect=width / height, up=[0, 0, 1])
        self._controls = three.OrbitControls(controlling=self._camera)
        self._cloud_group = three.Group()
        self._extras = three.Group()
        scene = three.Scene(children=[self._cloud_group, self._extras, self._camera], background="#111418")
        self.renderer = three.Renderer(
            camera=self._camera, scene=scene, controls=[self._controls], width=width, height=height
        )
        compact = {"description_width": "initial"}  # the label as wide as its word, not a fixed 80 px
        self._color_menu = w.Dropdown(
            options=self._color_choices(), description="color", style=compact, layout=w.Layout(width="10em")
        )
        self._size_slider = w.FloatSlider(
            min=0.5, max=10, step=0.5, description="size", style=compact, layout=w.Layout(width="13em")
        )
        fit_button = w.Button(description="fit", layout=w.Layout(width="4em"))
        fit_button.on_click(lambda _button: self.fit())
        box_toggle = w.Checkbox(description="box", indent=False, layout=w.Layout(width="auto"))
        axes_toggle = w.Checkbox(description="axes", indent=False, layout=w.Layout(width="auto"))
        controls = {"color_by": self._color_menu, "point_size": self._size_slider}
        for name, control in {**controls, "show_box": box_toggle, "show_axes": axes_toggle}.items():
            w.link((self, name), (control, "value"))
        self._status = w.HTML()
        # Beside the canvas when there is room, under it when the viewer is narrow (as in the explorer).
        self._legend = w.VBox(layout=w.Layout(max_height=f"{height}px", overflow="auto", flex="1 1 17em"))
        self._toggles: dict[int, w.Checkbox] = {}
        controls = w.HBox(
            [self._color_menu, self._size_slider, fit_button, box_toggle, axes_toggle],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        view = w.HBox([self.renderer, self._legend], layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        super().__init__(
            [controls, view, self._status],
            point_budget=point_budget,
            **kwargs,
        )
        self._update_status()

    # -- public ------------------------------------------------------------

    def show(self, labels: int | Iterable[int]) -> None:
        """Replace what is shown by these labels and fit the camera to them.

        Example::

            viewer.show(42)
        """
        self._forget(list(self._shown))
        self._origin = None
        self.add(labels)
        self.fit()

    def add(self, labels: int | Iterable[int]) -> None:
        """Show these labels too (labels already shown stay as they are)."""
        wanted = _label_list(labels)
        new = [label for label in dict.fromkeys(wanted) if label not in self._shown]
        if not new:
            return
        points = self.query.get_points(new)
        for label in new:
            self._shown[label] = _Shown(points[label])
        if self._origin is None:
            self._origin = self._middle_of([points[label] for label in new])
        self._redraw()

    def remove(self, labels: int | Iterable[int]) -> None:
        """Stop showing these labels."""
        self._forget(_label_list(labels))
        self._redraw()

    def clear(self) -> None:
        """Show nothing."""
        self._forget(list(self._shown))
        self._origin = None
        self._redraw()

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
        self._draw_extras()

    def positions(self, label: int) -> np.ndarray:
        """The float32 positions sent to the browser for ``label``: scaled by voxel size, centered."""
        return self._shown[check_label(label)].cloud.geometry.attributes["position"].array

    @property
    def origin(self) -> np.ndarray | None:
        """The voxel coordinates drawn at the view's (0, 0, 0)."""
        return self._origin

    # -- drawing -------------------------------------------------------------

    def _forget(self, labels: list[int]) -> None:
        for label in labels:
            self._shown.pop(label, None)
            self._toggles.pop(label, None)

    @staticmethod
    def _middle_of(point_sets: list[np.ndarray]) -> np.ndarray:
        non_empty = [p[:, :3] for p in point_sets if len(p)]
        if not non_empty:
            return np.zeros(3)
        low = np.min([p.min(axis=0) for p in non_empty], axis=0).astype(np.float64)
        high = np.max([p.max(axis=0) for p in non_empty], axis=0).astype(np.float64)
        return np.round((low + high) / 2)

    def _kept_counts(self) -> dict[int, int]:
        sizes = {label: len(shown.points) for label, shown in self._shown.items()}
        total = sum(sizes.values())
        if total <= self.point_budget:
            return sizes
        return {label: min(size, max(1, size * self.point_budget // total)) for label, size in sizes.items()}

    def _sample(self, label: int, points: np.ndarray, keep: int) -> np.ndarray:
        if keep >= len(points):
            return points
        rng = np.random.default_rng([self.seed, label])
        return points[np.sort(rng.choice(len(points), keep, replace=False))]

    def _redraw(self) -> None:
        kept = self._kept_counts()
        color_range = self._color_range()
        for label, shown in self._shown.items():
            wanted = (kept[label], self.color_by)
            if shown.sent != wanted:
                sample = self._sample(label, shown.points, kept[label])
                shown.cloud = self._make_cloud(label, sample, color_range)
                shown.sent = wanted
        self._cloud_group.children = tuple(shown.cloud for shown in self._shown.values())
        self.set_trait("labels", list(self._shown))
        self.set_trait("total_points", sum(len(shown.points) for shown in self._shown.values()))
        self.set_trait("shown_points", sum(kept.values()))
        self._update_legend()
        self._update_status()
        self._draw_extras()

    def _color_range(self) -> tuple[float, float]:
        if self.color_by == COLOR_BY_LABEL:
            return (0.0, 1.0)
        column = 2 if self.color_by == COLOR_BY_DEPTH else self.query.schema.columns.index(self.color_by)
        values = [shown.points[:, column] for shown in self._shown.values() if len(shown.points)]
        if not values:
            return (0.0, 1.0)
        return (float(min(v.min() for v in values)), float(max(v.max() for v in values)))

    def _make_cloud(self, label: int, points: np.ndarray, color_range: tuple[float, float]) -> three.Points:
        positions = ((points[:, :3].astype(np.float64) - self._origin) * self.voxel_size).astype(np.float32)
        attributes = {"position": three.BufferAttribute(array=positions, normalized=False)}
        material = three.PointsMaterial(size=self.point_size, sizeAttenuation=False, color=label_color(label))
        if self.color_by != COLOR_BY_LABEL:
            attributes["color"] = three.BufferAttribute(array=self._point_colors(points, color_range), normalized=False)
            material.color, material.vertexColors = "#ffffff", "VertexColors"
        visible = self._toggles[label].value if label in self._toggles else True
        return three.Points(geometry=three.BufferGeometry(attributes=attributes), material=material, visible=visible)

    def _point_colors(self, points: np.ndarray, color_range: tuple[float, float]) -> np.ndarray:
        if self.color_by == COLOR_BY_DEPTH:
            return ramp_colors(points[:, 2], *color_range)
        values = points[:, self.query.schema.columns.index(self.color_by)]
        if np.issubdtype(values.dtype, np.integer):
            return category_colors(values)
        return ramp_colors(values, *color_range)

    def _visible_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        visible = [
            shown.cloud.geometry.attributes["position"].array
            for shown in self._shown.values()
            if shown.cloud is not None and shown.cloud.visible and len(shown.points)
        ]
        if not visible:
            return np.full(3, -1.0), np.full(3, 1.0)
        low = np.min([p.min(axis=0) for p in visible], axis=0).astype(np.float64)
        high = np.max([p.max(axis=0) for p in visible], axis=0).astype(np.float64)
        return low, high

    def _draw_extras(self) -> None:
        low, high = self._visible_bounds()
        extras = []
        if self.show_box:
            box = three.Box3(min=tuple(low.tolist()), max=tuple(high.tolist()))
            extras.append(three.Box3Helper(box=box, color="#cccccc"))
        if self.show_axes:
            size = float(np.max(high - low)) / 4 or 1.0
            extras.append(three.AxesHelper(size=size, position=tuple(low.tolist())))
        self._extras.children = tuple(extras)

    def _update_legend(self) -> None:
        rows = []
        for label, shown in self._shown.items():
            toggle = self._toggles.get(label)
            if toggle is None:
                toggle = w.Checkbox(value=True, indent=False, layout=w.Layout(width="2em"))
                toggle.observe(lambda change, label=label: self._on_toggle(label, change["new"]), "value")
                self._toggles[label] = toggle
            swatch = (
                f"<span style='display:inline-block;width:1em;height:1em;background:{label_color(label)};"
                f"vertical-align:middle;margin-right:4px'></span>"
            )
            text = f"{swatch}<code style='font-size:11px'>{label}</code> {len(shown.points):,} pts"
            rows.append(
                w.HBox([toggle, w.HTML(text, layout=w.Layout(width="auto"))], _dom_classes=["pocaduck-legend-row"])
            )
        self._legend.children = tuple(rows)

    def _on_toggle(self, label: int, visible: bool) -> None:
        shown = self._shown.get(label)
        if shown is not None and shown.cloud is not None:
            shown.cloud.visible = visible
            self._draw_extras()

    def _update_status(self) -> None:
        if not self._shown:
            self._status.value = "<i>nothing shown: select labels</i>"
            return
        sampled = " (subsampled to the point budget)" if self.shown_points < self.total_points else ""
        voxel = " × ".join(f"{v:g}" for v in self.voxel_size)
        self._status.value = html.escape(
            f"showing {self.shown_points:,} of {self.total_points:,} points{sampled} · voxel {voxel}"
        )

    @t.observe("color_by", "point_budget")
    def _on_look_change(self, _change: dict) -> None:
        if self._shown:
            self._redraw()

    @t.observe("point_size")
    def _on_point_size(self, change: dict) -> None:
        for shown in self._shown.values():
            if shown.cloud is not None:
                shown.cloud.material.size = change["new"]

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


def _label_list(labels: int | Iterable[int]) -> list[int]:
    """One label or many, checked, as a list of Python ints."""
    return [check_label(label) for label in (np.atleast_1d(labels).tolist() if np.ndim(labels) == 0 else labels)]
