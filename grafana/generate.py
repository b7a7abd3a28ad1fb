"""Generates Tally's Grafana dashboards (grafana/dashboards/*.json).

Run `python3 grafana/generate.py` after changing a panel here; the JSON
files are what Grafana loads and what tests/grafana_dashboards.rs checks
(it expands every panel's SQL as Grafana does and runs it on a gateway).

Every panel uses Grafana's macros ($__timeFilter, $__timeGroupAlias,
$__timeFrom, ...) and reads the table grain suited to the range through the
hidden `grain` variable (minute up to 6 hours, hour up to 14 days, then day).
"""

import json
import pathlib

OUT = pathlib.Path(__file__).parent / "dashboards"
DS = {"type": "grafana-postgresql-datasource", "uid": "tally"}

RANGE = "$__timeFilter(bucket) AND site = '$site'"


def variables():
    return {
        "list": [
            {
                "name": "site",
                "label": "Site",
                "type": "query",
                "datasource": DS,
                "query": "SELECT site FROM sites ORDER BY site",
                "definition": "SELECT site FROM sites ORDER BY site",
                "refresh": 1,
                "current": {},
                "options": [],
            },
            {
                "name": "grain",
                "label": "Grain",
                "type": "query",
                "hide": 2,
                "datasource": DS,
                "query": (
                    "SELECT CASE WHEN $__unixEpochTo() - $__unixEpochFrom() <= 21600 THEN 'minute' "
                    "WHEN $__unixEpochTo() - $__unixEpochFrom() <= 1209600 THEN 'hour' ELSE 'day' END AS grain"
                ),
                "definition": "minute up to 6 h, hour up to 14 days, else day",
                "refresh": 2,
                "current": {},
                "options": [],
            },
        ]
    }


class Layout:
    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def panel(layout, kind, title, sql, fmt="table", w=6, h=4, unit=None, description=None, extra_targets=()):
    targets = [{"refId": "A", "datasource": DS, "editorMode": "code", "format": fmt, "rawQuery": True, "rawSql": sql}]
    for i, (extra_sql, extra_fmt) in enumerate(extra_targets):
        targets.append(
            {
                "refId": chr(ord("B") + i),
                "datasource": DS,
                "editorMode": "code",
                "format": extra_fmt,
                "rawQuery": True,
                "rawSql": extra_sql,
            }
        )
    p = {
        "id": layout.next_id,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if description:
        p["description"] = description
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"}
    layout.next_id += 1
    return p


def dashboard(uid, title, panels, refresh="30s", time_from="now-24h"):
    return {
        "uid": uid,
        "title": title,
        "tags": ["tally"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": variables(),
        "panels": panels,
        "annotations": {"list": []},
    }


def previous_period(expr, alias):
    """Current and previous period of the same length, one row."""
    return (
        f"SELECT {expr} AS {alias}, "
        f"(SELECT {expr} FROM traffic_${{grain}} WHERE site = '$site' "
        f"AND bucket >= $__timeFrom()::timestamptz - ($__timeTo()::timestamptz - $__timeFrom()::timestamptz) "
        f"AND bucket < $__timeFrom()::timestamptz) AS previous "
        f"FROM traffic_${{grain}} WHERE {RANGE}"
    )


def overview():
    l = Layout()
    stats = [
        panel(
            l,
            "stat",
            "Unique visitors",
            "SELECT visitors, (SELECT visitors FROM unique_visitors('$site', "
            "$__timeFrom()::timestamptz - ($__timeTo()::timestamptz - $__timeFrom()::timestamptz), "
            "$__timeFrom()::timestamptz)) AS previous "
            "FROM unique_visitors('$site', $__timeFrom()::timestamptz, $__timeTo()::timestamptz)",
            w=4,
            description="HyperLogLog union over the range (never a sum of buckets); previous = the period before",
        ),
        panel(l, "stat", "Visits", previous_period("coalesce(sum(visits), 0)", "visits"), w=4),
        panel(l, "stat", "Pageviews", previous_period("coalesce(sum(pageviews), 0)", "pageviews"), w=4),
        panel(
            l,
            "stat",
            "Views per visit",
            previous_period("round(sum(pageviews)::float8 / nullif(sum(visits), 0), 2)", "views_per_visit"),
            w=4,
        ),
        panel(
            l,
            "stat",
            "Bounce rate",
            previous_period("round(100.0 * sum(bounces) / nullif(sum(visits), 0), 1)", "bounce_rate"),
            w=4,
            unit="percent",
        ),
        panel(
            l,
            "stat",
            "Visit duration",
            previous_period("round(sum(visit_duration)::float8 / nullif(sum(visits), 0), 0)", "visit_duration"),
            w=4,
            unit="s",
        ),
    ]
    series = [
        panel(
            l,
            "timeseries",
            "Visitors and pageviews",
            "SELECT $__time(bucket), visitors, pageviews, visits FROM traffic_${grain} "
            f"WHERE {RANGE} ORDER BY 1",
            fmt="time_series",
            w=18,
            h=9,
            description="per bucket of the grain suited to the range",
        ),
        panel(
            l,
            "stat",
            "Realtime visitors",
            "SELECT visitors, pageviews FROM realtime WHERE site = '$site'",
            w=6,
            h=9,
            description="last 5 minutes",
        ),
        panel(
            l,
            "timeseries",
            "Unique visitors per ${grain}",
            "SELECT \"from\" AS \"time\", visitors FROM unique_visitors('$site', "
            "$__timeFrom()::timestamptz, $__timeTo()::timestamptz, '1 ${grain}') ORDER BY 1",
            fmt="time_series",
            w=12,
            h=8,
            description="each step a HyperLogLog union (unique_visitors' grouped form)",
        ),
        panel(
            l,
            "timeseries",
            "Pageviews per hour",
            "SELECT $__timeGroupAlias(bucket, '1h'), sum(pageviews) AS pageviews FROM traffic_${grain} "
            f"WHERE {RANGE} GROUP BY 1 ORDER BY 1",
            fmt="time_series",
            w=12,
            h=8,
        ),
    ]
    return dashboard("tally-overview", "Tally / Overview", stats + series, refresh="30s")


def top(l, title, table, dims, measure, label_w=8, where="", limit=20):
    cols = ", ".join(dims)
    return panel(
        l,
        "table",
        title,
        f"SELECT {cols}, sum({measure}) AS {measure} FROM {table}_${{grain}} WHERE {RANGE}{where} "
        f"GROUP BY {cols} ORDER BY {measure} DESC, {cols} LIMIT {limit}",
        w=label_w,
        h=9,
    )


def content():
    l = Layout()
    panels = [
        top(l, "Top pages", "pages", ["path"], "pageviews"),
        top(l, "Entry pages", "pages", ["path"], "entries", where=" AND entries > 0"),
        top(l, "Exit pages", "pages", ["path"], "exits", where=" AND exits > 0"),
        top(l, "Sources", "sources", ["source"], "visits"),
        top(l, "Referrers", "sources", ["referrer_host"], "visits", where=" AND referrer_host <> ''"),
        top(l, "UTM campaigns", "sources", ["utm_source", "utm_medium", "utm_campaign"], "visits"),
        top(l, "Channels", "sources", ["channel"], "visits"),
        top(l, "Devices", "devices", ["device_type"], "visits"),
        top(l, "Browsers", "devices", ["browser"], "visits"),
        top(l, "Operating systems", "devices", ["os"], "visits"),
        top(l, "Countries", "locations", ["country"], "visits", label_w=16),
    ]
    return dashboard("tally-content", "Tally / Content and acquisition", panels, refresh="1m")


def conversions():
    l = Layout()
    events_range = "$__timeFilter(ts) AND site = '$site'"
    panels = [
        panel(
            l,
            "table",
            "Custom events",
            f"SELECT name, sum(events) AS events, sum(revenue) AS revenue, max(currency) AS currency "
            f"FROM conversions_${{grain}} WHERE {RANGE} GROUP BY name ORDER BY events DESC, name LIMIT 50",
            w=12,
            h=9,
        ),
        panel(
            l,
            "table",
            "Event properties",
            f"SELECT name, property, value, sum(events) AS events FROM event_props_${{grain}} "
            f"WHERE {RANGE} GROUP BY name, property, value ORDER BY events DESC, name, property, value LIMIT 50",
            w=12,
            h=9,
        ),
        panel(
            l,
            "timeseries",
            "Revenue",
            f"SELECT $__timeGroupAlias(bucket, $__interval), sum(revenue) AS revenue FROM conversions_${{grain}} "
            f"WHERE {RANGE} AND revenue > 0 GROUP BY 1 ORDER BY 1",
            fmt="time_series",
            w=24,
            h=8,
            unit="currencyEUR",
        ),
        panel(
            l,
            "bargauge",
            "Funnel: pageview -> add_to_cart -> purchase (sessions)",
            "SELECT count(DISTINCT CASE WHEN name = 'pageview' THEN session_id END) AS pageview, "
            "count(DISTINCT CASE WHEN name = 'add_to_cart' THEN session_id END) AS add_to_cart, "
            "count(DISTINCT CASE WHEN name = 'purchase' THEN session_id END) AS purchase "
            f"FROM events WHERE {events_range}",
            w=12,
            h=9,
            description="computed on the fly from the raw events",
        ),
        panel(
            l,
            "table",
            "Abandoned carts",
            "SELECT session_id, min(ts) AS first_seen, max(ts) AS last_seen, "
            "count(*) FILTER (WHERE name = 'add_to_cart') AS carts "
            f"FROM events WHERE {events_range} AND session_id IS NOT NULL "
            "GROUP BY session_id "
            "HAVING count(*) FILTER (WHERE name = 'add_to_cart') > 0 "
            "AND count(*) FILTER (WHERE name = 'purchase') = 0 "
            "ORDER BY last_seen DESC LIMIT 50",
            w=12,
            h=9,
            description="sessions with add_to_cart and no purchase, from the raw events",
        ),
    ]
    return dashboard("tally-conversions", "Tally / Conversions and e-commerce", panels, refresh="1m")


def main():
    OUT.mkdir(exist_ok=True)
    for name, d in [("overview", overview()), ("content", content()), ("conversions", conversions())]:
        (OUT / f"{name}.json").write_text(json.dumps(d, indent=2) + "\n")


if __name__ == "__main__":
    main()
