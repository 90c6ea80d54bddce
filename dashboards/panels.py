"""Panel, variable and query builders shared by the dashboards (grafana-foundation-sdk).

A :class:`Board` is one dashboard being built in one language: it numbers the panels, lays
them out on Grafana's 24-column grid (left to right, wrapping to a new row when a panel does
not fit) and resolves every label with :meth:`Board.t`.

Every query goes to the one provisioned InfluxDB datasource (:data:`DATASOURCE_UID`) in Flux.
The foundation SDK has no InfluxDB query type, so :class:`FluxQuery` is the small variant the
SDK's query slots accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import barchart, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import geomap as geomap_models

from dashboards import flux

Lang = Literal["en", "ko"]
LANGUAGES: tuple[Lang, ...] = ("en", "ko")

DATASOURCE_UID = "citystream-influxdb"
DATASOURCE_TYPE = "influxdb"
DATASOURCE = models.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
GRAFANA_DATASOURCE = models.DataSourceRef(type_val="grafana", uid="-- Grafana --")
"""Grafana's own datasource, used only by the built-in annotation every dashboard has."""
TAG = "citystream"
GRID_COLUMNS = 24
SERIES_NAME = "${__field.labels.series}"

Shape = Literal["timeseries", "stat", "table", "geomap", "barchart"]


def uid_for(base: str, lang: Lang) -> str:
    """Dashboard uid in a language (English keeps the plain uid)."""
    return base if lang == "en" else f"{base}-{lang}"


# -- queries -----------------------------------------------------------------------------------


class FluxQuery(cogvariants.Dataquery):
    """An InfluxDB (Flux) query target."""

    def __init__(self, query: str, ref_id: str = "A") -> None:
        self.query = flux.program(query)
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": DATASOURCE, "query": self.query}


class Flux(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: str, ref_id: str = "A") -> None:
        self._query = FluxQuery(query, ref_id)

    def build(self) -> cogvariants.Dataquery:
        return self._query


class FluxAnnotationTarget(models.AnnotationTarget):
    """The query of an annotation that reads InfluxDB (``_time``, ``text``, ``tags`` columns)."""

    def __init__(self, query: str) -> None:
        super().__init__()
        self.query = flux.program(query)

    def to_json(self) -> dict[str, object]:
        return {"refId": "Anno", "query": self.query}


class FluxAnnotation(cogbuilder.Builder[models.AnnotationTarget]):
    def __init__(self, query: str) -> None:
        self._target = FluxAnnotationTarget(query)

    def build(self) -> models.AnnotationTarget:
        return self._target


# -- the board -----------------------------------------------------------------------------------


@dataclass
class Board:
    """One dashboard under construction, in one language."""

    base_uid: str
    lang: Lang
    buckets: tuple[str, str]
    """Default values of the ``bucket_raw`` and ``bucket_agg`` constants."""
    lookback: str = "7d"
    _next_id: int = 1
    _x: int = 0
    _y: int = 0
    _row_height: int = 0
    _panels: list[cogbuilder.Builder[models.Panel]] = field(default_factory=list)
    _variables: list[cogbuilder.Builder[models.VariableModel]] = field(default_factory=list)
    _annotations: list[cogbuilder.Builder[models.AnnotationQuery]] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return uid_for(self.base_uid, self.lang)

    def t(self, en: str, ko: str) -> str:
        """The label in the board's language."""
        return ko if self.lang == "ko" else en

    def link_to(self, base_uid: str) -> str:
        return f"/d/{uid_for(base_uid, self.lang)}"

    def add(self, panel: Any, w: int, h: int) -> None:
        """Number ``panel`` (an SDK panel builder) and place it on the grid."""
        if not 0 < w <= GRID_COLUMNS:
            raise ValueError(f"panel width {w} is not within the {GRID_COLUMNS}-column grid")
        if self._x + w > GRID_COLUMNS:
            self._x = 0
            self._y += self._row_height
            self._row_height = 0
        panel.id(self._next_id).grid_pos(models.GridPos(h=h, w=w, x=self._x, y=self._y))
        self._next_id += 1
        self._x += w
        self._row_height = max(self._row_height, h)
        self._panels.append(panel)

    # -- variables ---------------------------------------------------------------------------

    def constants(self) -> None:
        """The hidden constants every query uses (bucket names, look-back of state queries)."""
        raw, agg = self.buckets
        for name, value, what in (
            ("bucket_raw", raw, "InfluxDB bucket of raw readings"),
            ("bucket_agg", agg, "InfluxDB bucket of aggregates, alerts, quality and pipeline metrics"),
            ("lookback", self.lookback, "how far back open alerts and device status are looked up"),
        ):
            self._variables.append(builders.ConstantVariable(name).value(value).description(what))

    def custom(self, name: str, label: str, options: Sequence[tuple[str, str]]) -> None:
        """A drop-down of fixed (text, value) options; the first one is selected."""
        query = ",".join(f"{text} : {value}" for text, value in options)
        first_text, first_value = options[0]
        self._variables.append(
            builders.CustomVariable(name)
            .label(label)
            .values(query)
            .current(models.VariableOption(selected=True, text=first_text, value=first_value))
        )

    def query_variable(self, name: str, label: str, query: str) -> None:
        """A drop-down filled by a Flux query (values from its ``_value`` column)."""
        self._variables.append(
            builders.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(flux.program(query))
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
        )

    def annotation(self, name: str, query: str, color: str = "red") -> None:
        self._annotations.append(
            builders.AnnotationQuery()
            .name(name)
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color(color)
            .target(FluxAnnotation(query))
        )

    # -- the result --------------------------------------------------------------------------

    def build(self, title: str, description: str, refresh: str = "30s") -> builders.Dashboard:
        built_in = (
            builders.AnnotationQuery()
            .name(self.t("Annotations & Alerts", "주석 및 경고"))
            .datasource(GRAFANA_DATASOURCE)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        dash = (
            builders.Dashboard(title)
            .uid(self.uid)
            .description(description)
            .tags([TAG, self.lang])
            .time("now-6h", "now")
            .refresh(refresh)
            .timezone("browser")
            .readonly()
            .annotations([built_in, *self._annotations])
            .variables(self._variables)
            .link(
                builders.DashboardLink(self.t("CityStream dashboards", "CityStream 대시보드"))
                .type(models.DashboardLinkType.DASHBOARDS)
                .tags([TAG, self.lang])
                .as_dropdown(True)
                .include_vars(False)
                .keep_time(True)
            )
        )
        for panel in self._panels:
            dash.with_panel(panel)
        return dash


# -- panels ----------------------------------------------------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in steps])
    )


def value_text(mapping: Mapping[str, tuple[str, str | None]]) -> models.ValueMap:
    """Value mapping: raw value -> (display text, colour or None)."""
    return models.ValueMap(
        options={
            raw: models.ValueMappingResult(text=text, color=color, index=i)
            for i, (raw, (text, color)) in enumerate(mapping.items())
        }
    )


def prop(name: str, value: object) -> models.DynamicConfigValue:
    return models.DynamicConfigValue(id_val=name, value=value)


def timeseries_panel(
    title: str,
    query: str,
    *,
    unit: str = "short",
    description: str = "",
    display_name: str = SERIES_NAME,
    interval: str | None = None,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Flux(query))
        .unit(unit)
        .display_name(display_name)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common_models.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if stacked:
        panel.stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if interval:
        panel.interval(interval)
    return panel


def stat_panel(
    title: str,
    query: str,
    *,
    names: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    unit: str = "short",
    description: str = "",
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    decimals: float | None = None,
) -> stat.Panel:
    """A stat showing each numeric column of the (one-row) result; ``names`` relabels columns."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Flux(query))
        .unit(unit)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .text_mode(
            common_models.BigValueTextMode.VALUE_AND_NAME if names else common_models.BigValueTextMode.AUTO
        )
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields(""))
        .thresholds(thresholds(*steps))
    )
    if decimals is not None:
        panel.decimals(decimals)
    for column, name in (names or {}).items():
        properties = [prop("displayName", name)]
        if colors and column in colors:
            properties.append(prop("color", {"mode": "fixed", "fixedColor": colors[column]}))
        panel.override_by_name(column, properties)
    return panel


def organize(columns: Mapping[str, str]) -> models.DataTransformerConfig:
    """Show ``columns`` (name -> header) in this order and nothing else."""
    return models.DataTransformerConfig(
        id_val="organize",
        options={
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": dict(columns),
            "excludeByName": {},
            "includeByName": dict.fromkeys(columns, True),
        },
    )


def table_panel(
    title: str,
    query: str,
    columns: Mapping[str, str],
    *,
    description: str = "",
    sort_by: str | None = None,
    units: Mapping[str, str] | None = None,
) -> table.Panel:
    """A table of ``columns`` (query column -> header), in that order."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Flux(query))
        .with_transformation(organize(columns))
        .cell_height(common_models.TableCellHeight.SM)
        .filterable(True)
    )
    if sort_by:
        panel.sort_by([common_builders.TableSortByFieldState().display_name(columns[sort_by]).desc(True)])
    for column, unit in (units or {}).items():
        panel.override_by_name(column, [prop("unit", unit)])
    return panel


def barchart_panel(title: str, query: str, x_field: str, *, description: str = "") -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Flux(query))
        .x_field(x_field)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .show_value(common_models.VisibilityMode.AUTO)
        .legend(common_builders.VizLegendOptions().show_legend(False))
    )


@dataclass(frozen=True)
class Markers:
    """A geomap marker layer: where the rows are and what colours, sizes and labels them."""

    latitude: str
    longitude: str
    color: str
    size: str
    text: str


def geomap_panel(title: str, query: str, markers: Markers, *, description: str = "") -> geomap.Panel:
    layer = (
        common_builders.MapLayerOptions()
        .type("markers")
        .name(title)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": markers.color, "fixed": "dark-green"},
                    "opacity": 0.8,
                    "size": {"field": markers.size, "fixed": 10, "min": 8, "max": 30},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "text": {"field": markers.text, "fixed": "", "mode": "field"},
                    "textConfig": {
                        "fontSize": 11,
                        "offsetY": -18,
                        "textAlign": "center",
                        "textBaseline": "bottom",
                    },
                },
            }
        )
        .location(
            common_builders.FrameGeometrySource()
            .mode(common_models.FrameGeometrySourceMode.COORDS)
            .latitude(markers.latitude)
            .longitude(markers.longitude)
        )
        .tooltip(True)
    )
    return (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Flux(query))
        .view(geomap.MapViewConfig().id("fit").padding(10).max_zoom(13).all_layers(True))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False).show_attribution(True))
        .basemap(common_builders.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
        .tooltip(geomap.TooltipOptions().mode(geomap_models.TooltipMode.DETAILS))
    )
