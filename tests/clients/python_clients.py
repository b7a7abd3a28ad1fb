"""Tally's gateway seen by Python's PostgreSQL clients.

Run by tests/clients.rs against a live gateway: psycopg2 (simple protocol,
named server-side cursor), psycopg 3 (extended protocol, text and binary
results, a server-side cursor, TypeInfo.fetch), SQLAlchemy (dialect
initialisation, table reflection) and pandas.read_sql. Prints one JSON
object of what each client read; the Rust test compares it with the data it
sent.
"""

import json
import sys

host, port, site = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
QUERY = "select path, pageviews from pages_day where site = %s order by path"

import psycopg2  # noqa: E402

conn = psycopg2.connect(host=host, port=port, user="tally", dbname="tally")
cur = conn.cursor()
cur.execute(QUERY, (site,))
out["psycopg2"] = [list(r) for r in cur.fetchall()]
cur.execute("select sum(pageviews) from traffic_hour where site = %s", (site,))
out["psycopg2_sum"] = int(cur.fetchone()[0])
named = conn.cursor(name="pages_cursor")
named.itersize = 1
named.execute(QUERY, (site,))
out["psycopg2_named"] = [list(r) for r in named]
named.close()
conn.rollback()
conn.close()

import psycopg  # noqa: E402
from psycopg.types import TypeInfo  # noqa: E402

with psycopg.connect(host=host, port=port, user="tally", dbname="tally") as conn:
    out["psycopg3"] = [list(r) for r in conn.execute(QUERY, (site,)).fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "select bucket, pageviews from traffic_day where site = %s order by bucket",
            (site,),
        )
        out["psycopg3_binary"] = [[r[0].isoformat(), r[1]] for r in cur.fetchall()]
    with conn.cursor(name="server_side") as cur:
        cur.execute(QUERY, (site,))
        out["psycopg3_server_cursor"] = [list(r) for r in cur.fetchmany(1)] + [
            list(r) for r in cur.fetchall()
        ]
    info = TypeInfo.fetch(conn, "timestamptz")
    out["psycopg3_typeinfo"] = [info.name, info.oid, info.array_oid]

import pandas  # noqa: E402
import sqlalchemy  # noqa: E402

engine = sqlalchemy.create_engine(f"postgresql+psycopg2://tally@{host}:{port}/tally")
insp = sqlalchemy.inspect(engine)
out["sqlalchemy_tables"] = sorted(insp.get_table_names())
out["sqlalchemy_columns"] = [
    [c["name"], str(c["type"]), c["nullable"]] for c in insp.get_columns("pages_day")
]
out["sqlalchemy_pk"] = insp.get_pk_constraint("pages_day")["constrained_columns"]
with engine.connect() as c:
    frame = pandas.read_sql(
        sqlalchemy.text("select path, pageviews from pages_day where site = :s order by path"),
        c,
        params={"s": site},
    )
out["pandas"] = frame.values.tolist()
out["server_version"] = engine.dialect.server_version_info[:1]
print(json.dumps(out))
