#!/usr/bin/env python3
"""Protocol fuzz for a running myquorum proxy (run by hand; not part of `cargo test`).

Logs in as root over TCP, prepares statements (writes with UUID()/USER() among them), then
sends pseudo-random command packets on that authenticated connection: COM_STMT_* for real
and random statement ids, well-formed executes with random typed values (cursor flags
included), random COM_QUERY bytes, other and unknown commands. After each packet it waits
for an answer (1 s); a connection the proxy closes is replaced. At the end: the proxy still
answers, and `PROXY CHECKSUM TABLE fz.t` says every replica has the same rows. Read the
proxy's log for `panicked` too: a panic ends one session's task and nothing else shows it.
It found a lexer panic on an unterminated backquote before a 2-byte character, and a write
routed onto a replica after a read that left warnings.

usage: python3 tests/soak/protocol_fuzz.py PORT [SECONDS] [SEED]   (e.g. a playground's port;
       defaults 60 s, time-based seed; exit 0 = PASS). Needs PyMySQL (pip install pymysql).
"""
import random, socket, struct, sys, time
import pymysql

PORT = int(sys.argv[1])
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
rnd = random.Random(SEED)
STATEMENTS = [
    b"INSERT INTO fz.t VALUES (?, ?, ?, ?)",
    b"SELECT * FROM fz.t WHERE id = ?",
    b"UPDATE fz.t SET v = ? WHERE id = ?",
    b"SELECT UUID(), ?",
    b"INSERT INTO fz.t VALUES (?, UUID(), ?, ?) ON DUPLICATE KEY UPDATE v = UUID()",
    b"UPDATE fz.t SET v = CURRENT_USER() WHERE id > ?",
    b"INSERT INTO fz.t SELECT id + ?, USER(), ?, ? FROM fz.t ORDER BY id LIMIT 1",
]


def connect():
    return pymysql.connect(host="127.0.0.1", port=PORT, user="root", password="",
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
                           autocommit=True)


def send(sock, payload):
    sock.sendall(struct.pack("<I", len(payload))[:3] + b"\0" + payload)


def answer(sock, timeout):
    """What arrives within `timeout` (then 50 ms of quiet), and whether the proxy closed."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, "closed"
            data += chunk
            sock.settimeout(0.05)
    except socket.timeout:
        return data, "open"
    except ConnectionResetError:
        return data, "reset"


def rbytes(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))


def typed_execute(sid):
    n = 4 if rnd.random() < 0.7 else rnd.randint(1, 3)
    nulls, types, values = 0, b"", b""
    for i in range(n):
        kind = rnd.choice(["int", "str", "datetime", "null"])
        if kind == "int":
            types += bytes([8, 0])
            values += struct.pack("<q", rnd.randint(-5, 50))
        elif kind == "str":
            v = rbytes(rnd.randint(0, 30)) if rnd.random() < 0.3 else str(rnd.randint(0, 99)).encode()
            types += bytes([253, 0])
            values += bytes([len(v)]) + v
        elif kind == "datetime":
            types += bytes([12, 0])
            values += bytes([7]) + struct.pack("<HBBBBB", rnd.randint(1000, 2100), rnd.randint(1, 12),
                                               rnd.randint(1, 28), rnd.randint(0, 23),
                                               rnd.randint(0, 59), rnd.randint(0, 59))
        else:
            types += bytes([6, 0])
            nulls |= 1 << i
    flags = rnd.choice([0, 0, 0, 1, 2, 4])
    return (b"\x17" + struct.pack("<I", sid) + bytes([flags]) + struct.pack("<I", 1)
            + bytes([nulls]) + b"\x01" + types + values)


def packet(ids):
    sid = rnd.choice(ids) if ids and rnd.random() < 0.8 else rnd.getrandbits(32)
    r = rnd.random()
    if r < 0.3:
        return bytes([rnd.choice([0x17, 0x18, 0x19, 0x1a, 0x1c, 0xfa])]) + struct.pack("<I", sid) + rbytes(rnd.randint(0, 40))
    if r < 0.45:
        cmd = rnd.choice([0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x0e, 0x11, 0x12, 0x1b, 0x1e])
        return bytes([cmd]) + rbytes(rnd.randint(0, 40))
    if r < 0.6:
        return b"\x03" + rbytes(rnd.randint(0, 60))
    if r < 0.95:
        return typed_execute(sid)
    return bytes([rnd.getrandbits(8)]) + rbytes(rnd.randint(0, 20))


def main():
    print(f"seed {SEED}", flush=True)
    setup = connect().cursor()
    setup.execute("CREATE DATABASE IF NOT EXISTS fz")
    setup.execute("CREATE TABLE IF NOT EXISTS fz.t (id INT PRIMARY KEY, v VARCHAR(20), d DATETIME, b BLOB)")
    end = time.time() + SECONDS
    sent, ended = 0, {}
    while time.time() < end:
        c = connect()
        sock = c._sock
        ids = []
        for sql in STATEMENTS:
            send(sock, b"\x16" + sql)
            data, _ = answer(sock, 2)
            if len(data) > 9 and data[4] == 0:
                ids.append(struct.unpack("<I", data[5:9])[0])
        state = "open"
        for _ in range(rnd.randint(1, 30)):
            send(sock, packet(ids))
            sent += 1
            _, state = answer(sock, 1.0)
            if state != "open":
                break
        ended[state] = ended.get(state, 0) + 1
        sock.close()
    cur = connect().cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,), "the proxy stopped answering"
    time.sleep(2)
    cur.execute("PROXY CHECKSUM TABLE fz.t")
    rows = cur.fetchall()
    print(f"sent {sent} packets on {sum(ended.values())} connections, ended {ended}")
    print("checksums:", rows)
    checksums = {(r[3], r[4]) for r in rows}  # (rows, checksum) per replica
    assert len(checksums) == 1, f"replicas differ: {rows}"
    print("PASS")


main()
