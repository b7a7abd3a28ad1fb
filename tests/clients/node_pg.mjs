// Tally's gateway seen by node-postgres: a parameterised query (extended
// protocol) and a plain one. Prints JSON; tests/clients.rs checks it.
import pg from "pg";

const [host, port, site] = process.argv.slice(2);
const client = new pg.Client({ host, port: Number(port), user: "tally", database: "tally" });
await client.connect();
const params = await client.query(
  "select path, pageviews from pages_day where site = $1 order by path",
  [site],
);
const version = await client.query("select version()");
const total = await client.query(
  "select sum(pageviews)::bigint as total, max(bucket) as last from traffic_day where site = $1",
  [site],
);
await client.end();
console.log(
  JSON.stringify({
    rows: params.rows.map((r) => [r.path, Number(r.pageviews)]),
    fields: params.fields.map((f) => [f.name, f.dataTypeID]),
    version: version.rows[0].version,
    total: total.rows[0].total,
    last_is_date: total.rows[0].last instanceof Date,
  }),
);
