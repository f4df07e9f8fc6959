// What a Go application sees through database/sql and go-sql-driver/mysql (Debian's
// golang-github-go-sql-driver-mysql-dev): inserts with binary parameters, duplicate and
// foreign errors, committed, rolled-back and read-only transactions, column types, reused
// prepared statements, errors that keep the pool usable, a context timeout, multi-statement
// results, a pinned conn's user variable and LAST_INSERT_ID. tests/go_ruby_clients.rs runs it
// against the proxy and against one server direct and compares the transcripts.
//
// usage: roundtrip DSN
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	_ "github.com/go-sql-driver/mysql"
)

func must(err error, what string) {
	if err != nil {
		fmt.Printf("ERR %s: %v\n", what, err)
	}
}

func dump(db *sql.DB, q string, args ...interface{}) {
	rows, err := db.Query(q, args...)
	if err != nil {
		fmt.Printf("ERR %s: %v\n", q, err)
		return
	}
	defer rows.Close()
	cts, _ := rows.ColumnTypes()
	for _, ct := range cts {
		n, ok := ct.Nullable()
		l, lok := ct.Length()
		p, s, dok := ct.DecimalSize()
		fmt.Printf("  col %s %s null=%v/%v len=%d/%v dec=%d,%d/%v scan=%v\n", ct.Name(), ct.DatabaseTypeName(), n, ok, l, lok, p, s, dok, ct.ScanType())
	}
	vals := make([]interface{}, len(cts))
	ptrs := make([]interface{}, len(cts))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		must(rows.Scan(ptrs...), "scan")
		out := ""
		for _, v := range vals {
			switch t := v.(type) {
			case []byte:
				out += fmt.Sprintf("%q ", string(t))
			default:
				out += fmt.Sprintf("%T:%v ", v, v)
			}
		}
		fmt.Println("  row", out)
	}
	must(rows.Err(), "rows")
}

func run(dsn string) {
	db, err := sql.Open("mysql", dsn)
	must(err, "open")
	db.SetMaxOpenConns(4)
	must(db.Ping(), "ping")
	_, err = db.Exec("DROP DATABASE IF EXISTS go_app")
	must(err, "drop")
	_, err = db.Exec("CREATE DATABASE go_app")
	must(err, "create db")
	_, err = db.Exec("CREATE TABLE go_app.t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32) NOT NULL, amount DECIMAL(10,2), at DATETIME(3), data BLOB, j JSON, f DOUBLE, b BIT(3), e ENUM('x','y'), UNIQUE KEY (name))")
	must(err, "create table")
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123000000, time.UTC)
	for i := 0; i < 3; i++ {
		res, err := db.Exec("INSERT INTO go_app.t (name, amount, at, data, j, f, b, e) VALUES (?, ?, ?, ?, ?, ?, b'101', 'y')", fmt.Sprintf("n%d", i), 12.5+float64(i), ts, []byte{0, 1, 2, byte(i)}, `{"k": [1, 2]}`, 1.0/3.0)
		must(err, "insert")
		if err == nil {
			id, _ := res.LastInsertId()
			n, _ := res.RowsAffected()
			fmt.Println("insert id", id, "affected", n)
		}
	}
	_, err = db.Exec("INSERT INTO go_app.t (name) VALUES (?)", "n0")
	fmt.Println("duplicate:", err)
	// A transaction committed and one rolled back.
	tx, err := db.Begin()
	must(err, "begin")
	_, err = tx.Exec("UPDATE go_app.t SET amount = amount * 2 WHERE id = ?", 1)
	must(err, "tx update")
	var amt string
	must(tx.QueryRow("SELECT amount FROM go_app.t WHERE id = 1").Scan(&amt), "tx read")
	fmt.Println("in tx amount", amt)
	must(tx.Commit(), "commit")
	tx, _ = db.Begin()
	_, err = tx.Exec("DELETE FROM go_app.t")
	must(err, "tx delete")
	must(tx.Rollback(), "rollback")
	ctx := context.Background()
	rtx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	must(err, "begin ro")
	if err == nil {
		var n int
		must(rtx.QueryRow("SELECT COUNT(*) FROM go_app.t").Scan(&n), "ro count")
		fmt.Println("ro count", n)
		_, err = rtx.Exec("DELETE FROM go_app.t")
		fmt.Println("write in ro tx:", err)
		must(rtx.Rollback(), "ro rollback")
	}
	// A READ COMMITTED transaction (SET TRANSACTION … in front of its START TRANSACTION)
	// sees another connection's commit between its reads.
	rc, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	must(err, "begin rc")
	if err == nil {
		var before, after int
		must(rc.QueryRow("SELECT COUNT(*) FROM go_app.t").Scan(&before), "rc first read")
		_, err = db.Exec("INSERT INTO go_app.t (name, amount) VALUES (?, ?)", "rc-other", 1)
		must(err, "insert beside the rc tx")
		must(rc.QueryRow("SELECT COUNT(*) FROM go_app.t").Scan(&after), "rc second read")
		fmt.Println("read committed tx saw the other commit:", after-before)
		must(rc.Commit(), "rc commit")
	}
	dump(db, "SELECT * FROM go_app.t ORDER BY id")
	dump(db, "SELECT id, name FROM go_app.t WHERE amount > ? ORDER BY id", 13)
	// Prepared statement reused.
	st, err := db.Prepare("SELECT name FROM go_app.t WHERE id = ?")
	must(err, "prepare")
	if err == nil {
		for _, id := range []int{1, 2, 99} {
			var name string
			err := st.QueryRow(id).Scan(&name)
			fmt.Println("stmt", id, name, err)
		}
		st.Close()
	}
	// Errors keep the connection usable.
	_, err = db.Exec("SELECT * FROM go_app.nope")
	fmt.Println("missing table:", err)
	_, err = db.Exec("SELEC 1")
	fmt.Println("syntax:", err)
	var one int
	must(db.QueryRow("SELECT 1").Scan(&one), "after errors")
	// Context timeout on a long query.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = db.ExecContext(cctx, "SELECT SLEEP(1)")
	cancel()
	fmt.Println("timeout:", err)
	must(db.QueryRow("SELECT 2").Scan(&one), "after timeout")
	fmt.Println("after timeout", one)
	// Multi statements.
	rows, err := db.Query("SELECT 1; SELECT 'two'")
	must(err, "multi")
	if err == nil {
		set := 0
		for {
			for rows.Next() {
				var v string
				rows.Scan(&v)
				fmt.Println("  set", set, v)
			}
			set++
			if !rows.NextResultSet() {
				break
			}
		}
		rows.Close()
	}
	// A conn-scoped session variable and LAST_INSERT_ID on the same connection.
	conn, err := db.Conn(ctx)
	must(err, "conn")
	if err == nil {
		_, err = conn.ExecContext(ctx, "SET @v = 41")
		must(err, "set var")
		var v int
		must(conn.QueryRowContext(ctx, "SELECT @v + 1").Scan(&v), "read var")
		fmt.Println("user var", v)
		_, err = conn.ExecContext(ctx, "INSERT INTO go_app.t (name) VALUES ('last')")
		must(err, "insert last")
		var lid int
		must(conn.QueryRowContext(ctx, "SELECT LAST_INSERT_ID()").Scan(&lid), "lid")
		fmt.Println("last insert id", lid)
		conn.Close()
	}
	dump(db, "SELECT COUNT(*), SUM(amount), MAX(at) FROM go_app.t")
	db.Close()
}

func main() {
	run(os.Args[1])
}
