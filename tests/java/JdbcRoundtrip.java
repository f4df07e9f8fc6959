// What a Java application sees through MariaDB Connector/J (Debian's libmariadb-java, the
// JDBC driver Spring and Hibernate load for jdbc:mariadb URLs), printed as a transcript that
// must be the same through the proxy as from one server direct.
//
// usage: java -cp mariadb-java-client.jar:. JdbcRoundtrip <port> <useServerPrepStmts>
import java.math.BigDecimal;
import java.security.MessageDigest;
import java.sql.*;

public class JdbcRoundtrip {
    static void out(String s) {
        System.out.println(s);
    }

    static String hex(byte[] b) {
        if (b == null) return "NULL";
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }

    static String sha(byte[] b) throws Exception {
        return hex(MessageDigest.getInstance("SHA-256").digest(b)).substring(0, 16);
    }

    static void rows(Connection c, String sql, Object... params) throws Exception {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
            try (ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                while (rs.next()) {
                    StringBuilder line = new StringBuilder("  row");
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        Object v = rs.getObject(i);
                        String shown = v instanceof byte[] ? hex((byte[]) v) : String.valueOf(v);
                        line.append(' ').append(md.getColumnLabel(i)).append('=').append(shown)
                            .append(':').append(v == null ? "null" : v.getClass().getSimpleName());
                    }
                    out(line.toString());
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0] + "/?user=root&useServerPrepStmts=" + args[1];
        try (Connection c = DriverManager.getConnection(url)) {
            out("product contains MariaDB: " + c.getMetaData().getDatabaseProductVersion().contains("MariaDB"));
            try (Statement s = c.createStatement()) {
                s.execute("CREATE DATABASE IF NOT EXISTS java_app");
                s.execute("DROP TABLE IF EXISTS java_app.t");
                s.execute("DROP PROCEDURE IF EXISTS java_app.bump");
                s.execute("CREATE TABLE java_app.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    + "name VARCHAR(40) NOT NULL UNIQUE, amount DECIMAL(12,2), made DATETIME(6), "
                    + "data MEDIUMBLOB, flag BOOLEAN, ratio DOUBLE)");
                s.execute("CREATE PROCEDURE java_app.bump(IN who VARCHAR(40), OUT total DECIMAL(12,2)) "
                    + "BEGIN UPDATE java_app.t SET amount = amount + 1 WHERE name = who; "
                    + "SELECT SUM(amount) INTO total FROM java_app.t; END");
            }
            c.setCatalog("java_app");
            out("catalog: " + c.getCatalog());

            // A single insert with its generated key.
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO t (name, amount, made, data, flag, ratio) VALUES (?, ?, ?, ?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                ps.setString(1, "alice");
                ps.setBigDecimal(2, new BigDecimal("12.50"));
                ps.setTimestamp(3, Timestamp.valueOf("2024-02-29 13:14:15.123456"));
                ps.setBytes(4, new byte[] {0, (byte) 0xff, 0x10});
                ps.setBoolean(5, true);
                ps.setDouble(6, 0.1);
                out("insert count " + ps.executeUpdate());
                try (ResultSet k = ps.getGeneratedKeys()) {
                    while (k.next()) out("generated key " + k.getLong(1));
                }
            }

            // A batch, with NULLs.
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO t (name, amount, made, data, flag, ratio) VALUES (?, ?, ?, ?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                for (int i = 0; i < 5; i++) {
                    ps.setString(1, "batch" + i);
                    ps.setBigDecimal(2, new BigDecimal(i + ".25"));
                    if (i % 2 == 0) ps.setNull(3, Types.TIMESTAMP);
                    else ps.setTimestamp(3, Timestamp.valueOf("2001-01-0" + i + " 00:00:00"));
                    ps.setNull(4, Types.BLOB);
                    ps.setBoolean(5, i % 2 == 0);
                    ps.setDouble(6, i / 3.0);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                StringBuilder s = new StringBuilder("batch counts");
                for (int n : counts) s.append(' ').append(n);
                out(s.toString());
                StringBuilder keys = new StringBuilder("batch keys");
                try (ResultSet k = ps.getGeneratedKeys()) {
                    while (k.next()) keys.append(' ').append(k.getLong(1));
                }
                out(keys.toString());
            }

            // A duplicate key: the right error, and the connection goes on.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO t (name) VALUES (?)")) {
                ps.setString(1, "alice");
                ps.executeUpdate();
                out("duplicate accepted?!");
            } catch (SQLException e) {
                out("duplicate: " + e.getClass().getSimpleName() + " state " + e.getSQLState()
                    + " code " + e.getErrorCode());
            }
            out("valid after error: " + c.isValid(2));

            // A transaction with a savepoint rolled back, then committed.
            c.setAutoCommit(false);
            try (PreparedStatement up = c.prepareStatement("UPDATE t SET amount = amount * 2 WHERE name LIKE ?")) {
                up.setString(1, "batch%");
                out("tx update count " + up.executeUpdate());
                Savepoint sp = c.setSavepoint("before_extra");
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO t (name, amount) VALUES (?, ?)")) {
                    ins.setString(1, "rolled_back");
                    ins.setBigDecimal(2, BigDecimal.ONE);
                    ins.executeUpdate();
                }
                c.rollback(sp);
                c.commit();
            }
            // A whole transaction rolled back.
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO t (name, amount) VALUES ('never', 1)");
                c.rollback();
            }
            c.setAutoCommit(true);
            rows(c, "SELECT COUNT(*) AS n FROM t WHERE name IN (?, ?)", "rolled_back", "never");

            // A stored procedure with an OUT parameter.
            try (CallableStatement cs = c.prepareCall("{call bump(?, ?)}")) {
                cs.setString(1, "alice");
                cs.registerOutParameter(2, Types.DECIMAL);
                cs.execute();
                out("procedure out " + cs.getBigDecimal(2));
            }

            // A 1 MiB blob there and back.
            byte[] big = new byte[1 << 20];
            for (int i = 0; i < big.length; i++) big[i] = (byte) (i * 31 + 7);
            try (PreparedStatement ps = c.prepareStatement("UPDATE t SET data = ? WHERE name = ?")) {
                ps.setBytes(1, big);
                ps.setString(2, "batch3");
                out("blob update count " + ps.executeUpdate());
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT data FROM t WHERE name = ?")) {
                ps.setString(1, "batch3");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    byte[] got = rs.getBytes(1);
                    out("blob back " + got.length + " bytes, sha " + sha(got) + " same " + (sha(got).equals(sha(big))));
                }
            }

            // Typed rows, then a streamed read.
            rows(c, "SELECT id, name, amount, made, flag, ratio FROM t WHERE amount > ? ORDER BY id",
                new BigDecimal("0.5"));
            try (Statement s = c.createStatement()) {
                s.setFetchSize(2);
                int n = 0;
                try (ResultSet rs = s.executeQuery("SELECT name FROM t ORDER BY id")) {
                    while (rs.next()) n++;
                }
                out("streamed rows " + n);
            }

            // What ORMs ask the metadata for.
            try (ResultSet t = c.getMetaData().getTables("java_app", null, "%", new String[] {"TABLE"})) {
                while (t.next()) out("table " + t.getString("TABLE_NAME"));
            }
            try (ResultSet col = c.getMetaData().getColumns("java_app", null, "t", "%")) {
                StringBuilder s = new StringBuilder("columns");
                while (col.next()) s.append(' ').append(col.getString("COLUMN_NAME")).append(':')
                    .append(col.getString("TYPE_NAME"));
                out(s.toString());
            }
            out("isolation " + c.getTransactionIsolation());
            // Read back after setting it (the driver asks the server: SELECT @@tx_isolation).
            c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
            out("isolation set " + c.getTransactionIsolation());
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            out("isolation reset " + c.getTransactionIsolation());

            // Ids from a sequence, as Hibernate's sequence generator takes them on MariaDB:
            // 50 at a time, then inserted explicitly; and the sequence in the INSERT itself.
            try (Statement s = c.createStatement()) {
                s.execute("DROP SEQUENCE IF EXISTS t_seq");
                s.execute("CREATE SEQUENCE t_seq START WITH 1 INCREMENT BY 50");
            }
            rows(c, "select nextval(t_seq)");
            rows(c, "select next value for t_seq");
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO t (id, name) VALUES (NEXTVAL(t_seq), ?)")) {
                ps.setString(1, "from_sequence");
                out("sequence insert count " + ps.executeUpdate());
            }
            rows(c, "SELECT id, name FROM t WHERE name = ?", "from_sequence");
            rows(c, "SELECT LASTVAL(t_seq), PREVIOUS VALUE FOR t_seq");
            rows(c, "SELECT NEXTVAL(t_seq) AS next_id");
        }
        out("done");
    }
}
