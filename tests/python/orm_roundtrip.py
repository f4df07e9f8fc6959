"""PyMySQL and SQLAlchemy against a MySQL endpoint: binary, bit, decimal, datetime(6) and
JSON columns must come back exactly as written. Prints a canonical dump of what was read so
the caller can compare the proxy with a direct connection.

usage: orm_roundtrip.py PORT DATABASE
"""
import datetime
import decimal
import json
import struct
import sys
import time

import pymysql
import sqlalchemy as sa

port, dbname = int(sys.argv[1]), sys.argv[2]

ROWS = [
    (1, b"\x00\xff\x01binary\x00", b"\x00\x01\xfe", 0b1010000001, decimal.Decimal("12345.678901"),
     datetime.datetime(2024, 2, 29, 23, 59, 58, 123456), {"k": [1, None, "x"], "u": "héllo"}),
    (2, b"", b"", 0, decimal.Decimal("-0.000001"), datetime.datetime(1970, 1, 1, 0, 0, 1, 1), []),
    (3, bytes(range(256)), b"\xff" * 16, 1023, decimal.Decimal("99999999.999999"),
     datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), {"nested": {"a": 1.5}}),
]

dump = []

conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
with conn.cursor() as cur:
    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{dbname}`")
    cur.execute(f"USE `{dbname}`")
    cur.execute(
        "CREATE TABLE blobs (id INT PRIMARY KEY, b BLOB, vb VARBINARY(16), bits BIT(10),"
        " d DECIMAL(20,6), dt DATETIME(6), j JSON)"
    )
    for r in ROWS:
        cur.execute(
            "INSERT INTO blobs VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (r[0], r[1], r[2], r[3], r[4], r[5], json.dumps(r[6])),
        )
    cur.execute("SELECT id, b, vb, bits, d, dt, j FROM blobs ORDER BY id")
    got = cur.fetchall()
    dump.append(("pymysql.description", [d[:2] for d in cur.description]))
    for want, row in zip(ROWS, got):
        assert row[1] == want[1], (row[1], want[1])
        assert row[2] == want[2], (row[2], want[2])
        assert int.from_bytes(row[3], "big") == want[3], (row[3], want[3])
        assert row[4] == want[4] and isinstance(row[4], decimal.Decimal), row[4]
        assert row[5] == want[5], (row[5], want[5])
        assert json.loads(row[6]) == want[6], row[6]
    dump.append(("pymysql.rows", [repr(r) for r in got]))
    # Transactions and rollback.
    conn.begin()
    cur.execute("INSERT INTO blobs (id) VALUES (100)")
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM blobs")
    assert cur.fetchone()[0] == len(ROWS)
    # Server-side errors keep their code.
    try:
        cur.execute("INSERT INTO blobs (id) VALUES (1)")
        raise SystemExit("duplicate key accepted")
    except pymysql.err.IntegrityError as e:
        assert e.args[0] == 1062, e.args
    dump.append(("pymysql.warnings", cur.execute("SELECT CAST('9x' AS SIGNED)") and cur.fetchall()))
conn.close()

engine = sa.create_engine(f"mysql+pymysql://root:@127.0.0.1:{port}/{dbname}")
meta = sa.MetaData()
table = sa.Table("blobs", meta, autoload_with=engine)
with engine.begin() as c:
    c.execute(table.insert().values(id=10, b=b"\x00sa\x00", vb=b"\x01", bits=5,
                                    d=decimal.Decimal("1.000001"),
                                    dt=datetime.datetime(2000, 1, 1, 12, 0, 0, 654321), j=json.dumps({"sa": True})))
with engine.connect() as c:
    rows = c.execute(sa.select(table).order_by(table.c.id)).fetchall()
    r10 = [r for r in rows if r.id == 10][0]
    assert r10.b == b"\x00sa\x00" and r10.vb == b"\x01"
    assert r10.d == decimal.Decimal("1.000001")
    assert r10.dt == datetime.datetime(2000, 1, 1, 12, 0, 0, 654321)
    dump.append(("sqlalchemy.columns", [(col.name, str(col.type)) for col in table.columns]))
    dump.append(("sqlalchemy.rows", [repr(tuple(r)) for r in rows]))
# Ids from a sequence: SQLAlchemy creates it with the table, puts nextval() in the INSERTs
# (several rows in one statement for executemany) and reads the new key back.
seq_meta = sa.MetaData()
items_seq = sa.Sequence("items_seq", start=1, increment=1)
items = sa.Table(
    "items", seq_meta,
    sa.Column("id", sa.BigInteger, items_seq, primary_key=True),
    sa.Column("name", sa.String(20)),
)
seq_meta.create_all(engine)
with engine.begin() as c:
    c.execute(items.insert(), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    key = c.execute(items.insert().values(name="d")).inserted_primary_key
    dump.append(("sqlalchemy.sequence_key", list(key)))
    dump.append(("sqlalchemy.next_value", c.execute(sa.select(items_seq.next_value())).scalar()))
with engine.connect() as c:
    dump.append(("sqlalchemy.sequence_rows",
                 [repr(tuple(r)) for r in c.execute(sa.select(items).order_by(items.c.id))]))
# SHOW PROCESSLIST's Id is an int, and mysql_kill() (COM_PROCESS_KILL, PyMySQL 0.9's kill())
# ends that connection (PyMySQL's own test_issue_36).
victim = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
with conn.cursor() as cur:
    cur.execute("SHOW PROCESSLIST")
    dump.append(("processlist.lists_thread_id", victim.thread_id() in [r[0] for r in cur.fetchall()]))
# PyMySQL 1.x sends KILL as a query; older versions and mysql_kill() send the command.
conn._execute_command(pymysql.constants.COMMAND.COM_PROCESS_KILL, struct.pack("<I", victim.thread_id()))
conn._read_ok_packet()
time.sleep(0.3)
try:
    with victim.cursor() as cur:
        cur.execute("SELECT 1")
    dump.append(("kill.ended_the_connection", False))
except pymysql.err.OperationalError:
    dump.append(("kill.ended_the_connection", True))
print(json.dumps(dump, sort_keys=True))
