<?php
// PHP's PDO (emulated and native prepares) and mysqli through the proxy; the test compares
// this script's output with the same script run against a mariadbd directly.
// Usage: php pdo_mysqli.php PORT
$port = (int)($argv[1] ?? 6801);
function run($emulate) {
  $pdo = new PDO('mysql:host=127.0.0.1;port=' . $GLOBALS['port'] . ';charset=utf8mb4', 'root', '', [
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_EMULATE_PREPARES => $emulate,
  ]);
  $db = $emulate ? 'pdo_e' : 'pdo_n';
  $pdo->exec("CREATE DATABASE IF NOT EXISTS $db"); $pdo->exec("USE $db");
  $pdo->exec("CREATE TABLE IF NOT EXISTS users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100) UNIQUE, bio TEXT, avatar MEDIUMBLOB, score DECIMAL(10,2), created DATETIME DEFAULT CURRENT_TIMESTAMP, active TINYINT(1))");
  $st = $pdo->prepare("INSERT INTO users (name, email, bio, avatar, score, active) VALUES (:n, :e, :b, :a, :s, :act)");
  for ($i = 0; $i < 20; $i++) {
    $st->bindValue(':n', "user$i"); $st->bindValue(':e', "u$i@x.io"); $st->bindValue(':b', str_repeat("bio ", $i));
    $st->bindValue(':a', random_bytes(16), PDO::PARAM_LOB); $st->bindValue(':s', $i * 1.5); $st->bindValue(':act', $i % 2, PDO::PARAM_BOOL);
    $st->execute();
    $ids[] = $pdo->lastInsertId();
  }
  echo "$db ids: ", implode(',', array_slice($ids, 0, 5)), "\n";
  $pdo->beginTransaction();
  $pdo->prepare("UPDATE users SET score = score + ? WHERE id = ?")->execute([10, $ids[0]]);
  $pdo->prepare("DELETE FROM users WHERE id = ?")->execute([$ids[1]]);
  $pdo->commit();
  $pdo->beginTransaction();
  $pdo->exec("UPDATE users SET score = 0");
  $pdo->rollBack();
  try { $pdo->prepare("INSERT INTO users (email) VALUES (?)")->execute(["u3@x.io"]); } catch (PDOException $e) { echo "dup: ", $e->errorInfo[1], " ", $e->getCode(), "\n"; }
  $r = $pdo->query("SELECT COUNT(*), SUM(score) FROM users")->fetch(PDO::FETCH_NUM); echo "count/sum: ", implode('/', $r), "\n";
  $st = $pdo->prepare("SELECT id, name, score, active, avatar FROM users WHERE id > ? ORDER BY id LIMIT 3"); $st->execute([0]);
  foreach ($st as $row) { echo json_encode([$row['id'], $row['name'], $row['score'], $row['active'], strlen($row['avatar'])]), "\n"; }
  $n = $pdo->exec("UPDATE users SET active = 1 WHERE active = 0"); echo "exec affected: $n\n";
  $st = $pdo->prepare("INSERT INTO users (name, email) VALUES (?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name)"); $st->execute(['dup', 'u0@x.io']); echo "upsert rowCount: ", $st->rowCount(), "\n";
  // streams (LOB from a stream) -> send_long_data with native prepares
  $fp = fopen('php://memory', 'r+'); fwrite($fp, str_repeat('L', 100000)); rewind($fp);
  $st = $pdo->prepare("INSERT INTO users (name, email, avatar) VALUES (?, ?, ?)"); $st->bindValue(1, 'stream'); $st->bindValue(2, "s$db@x.io"); $st->bindParam(3, $fp, PDO::PARAM_LOB);
  try { $st->execute(); echo "stream insert ok\n"; } catch (PDOException $e) { echo "stream insert: ", $e->getMessage(), "\n"; }
  $pdo->exec("SET sql_mode = ''"); $pdo->exec("INSERT INTO users (name, score) VALUES ('w', 'abc')");
  // With native prepares PDO::query prepares SHOW WARNINGS and executes it.
  $w = $pdo->query("SHOW WARNINGS")->fetchAll(PDO::FETCH_NUM); echo "warnings: ", json_encode($w), "\n";
}
run(true); run(false);
$m = new mysqli('127.0.0.1', 'root', '', 'pdo_e', $GLOBALS['port']);
$m->query("INSERT INTO users (name) VALUES ('mysqli')"); echo "mysqli insert_id: ", $m->insert_id, " affected: ", $m->affected_rows, "\n";
$s = $m->prepare("INSERT INTO users (name, email, avatar) VALUES (?, ?, ?)"); $nm = 'longdata'; $em = 'ld@x.io'; $nul = NULL; $s->bind_param('ssb', $nm, $em, $nul);
foreach ([str_repeat('A', 70000), str_repeat('B', 5)] as $chunk) { $s->send_long_data(2, $chunk); }
echo "send_long_data insert: ", var_export($s->execute(), true), " ", $s->affected_rows, "\n"; $s->close();
echo "long data stored: ", json_encode($m->query("SELECT LENGTH(avatar), RIGHT(avatar, 6) FROM users WHERE name = 'longdata'")->fetch_row()), "\n";
$s = $m->prepare("SELECT name FROM users WHERE id = ?"); $id = 1; $s->bind_param('i', $id); $s->execute(); $s->bind_result($name); $s->fetch(); echo "mysqli prepared: $name\n"; $s->close();
$m->multi_query("SELECT 1; SELECT 2"); do { if ($r = $m->store_result()) { echo json_encode($r->fetch_all()), "\n"; $r->free(); } } while ($m->more_results() && $m->next_result());
$m->real_query("SELECT SLEEP(0)"); $m->use_result()->fetch_all();
echo "ping: ", var_export($m->ping(), true), "\n";
$m->change_user('root', '', 'pdo_n'); echo "change_user db: ", $m->query("SELECT DATABASE()")->fetch_row()[0], "\n";
