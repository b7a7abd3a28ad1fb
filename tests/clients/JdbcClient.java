// Tally's gateway seen by pgJDBC: DatabaseMetaData (getTables, getColumns,
// getPrimaryKeys), a prepared statement with a fetch size (a portal read in
// pages) and binary results. Prints JSON; tests/clients.rs checks it.
// Run as a single-file program: java -cp postgresql.jar JdbcClient.java host port site

import java.sql.*;
import java.util.*;

public class JdbcClient {
    static String q(String s) {
        return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/tally?user=tally&prepareThreshold=1";
        String site = args[2];
        StringBuilder out = new StringBuilder("{");
        try (Connection c = DriverManager.getConnection(url)) {
            DatabaseMetaData md = c.getMetaData();
            out.append("\"product\":").append(q(md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion()));
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(q(rs.getString("TABLE_NAME")));
            }
            out.append(",\"tables\":").append(tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "pages_day", "%")) {
                while (rs.next()) cols.add("[" + q(rs.getString("COLUMN_NAME")) + "," + q(rs.getString("TYPE_NAME")) + "]");
            }
            out.append(",\"columns\":").append(cols);
            List<String> keys = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "pages_day")) {
                while (rs.next()) keys.add(q(rs.getString("COLUMN_NAME")));
            }
            out.append(",\"primary_key\":").append(keys);
            c.setAutoCommit(false);
            List<String> rows = new ArrayList<>();
            for (int run = 0; run < 3; run++) {
                rows.clear();
                try (PreparedStatement ps = c.prepareStatement(
                        "select path, pageviews, bucket from pages_day where site = ? order by path")) {
                    ps.setFetchSize(1);
                    ps.setString(1, site);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows.add("[" + q(rs.getString(1)) + "," + rs.getLong(2) + "," + (rs.getTimestamp(3) != null) + "]");
                        }
                    }
                }
            }
            c.commit();
            out.append(",\"rows\":").append(rows);
        }
        System.out.println(out.append("}"));
    }
}
