// mysql2 (text and prepared queries, pools, transactions, multiple statements, streaming,
// errors, change user), Sequelize (sync, alter, associations, nested transactions, upsert)
// and Knex (schema builder, row locks) against a MySQL endpoint. Prints a canonical dump
// of everything read, so the caller can compare the proxy with a direct connection.
//
// usage: node orm_roundtrip.js PORT DATABASE [proxy]
// With `proxy`, the proxy's own result sets (SHOW PROXY …) are read too and checked here
// (a direct server has none, so they are not in the dump).
'use strict';
const mysql = require('mysql2/promise');
const { Sequelize, DataTypes, Op, Transaction } = require('sequelize');

const port = Number(process.argv[2]);
const dbname = process.argv[3];
const viaProxy = process.argv[4] === 'proxy';
const out = [];
const dump = (label, value) =>
  out.push(`${label}: ${JSON.stringify(value, (_, v) => {
    if (typeof v === 'bigint') return `${v}n`;
    if (v && v.type === 'Buffer' && Array.isArray(v.data)) return `buf:${Buffer.from(v.data).toString('hex')}`;
    return v;
  })}`);
const fields = (fs) => fs.map((f) => [f.name, f.columnType, f.characterSet, f.flags]);
const fail = (e) => ({ code: e.code, errno: e.errno, sqlState: e.sqlState, message: e.sqlMessage });

async function driver() {
  const c = await mysql.createConnection({
    host: '127.0.0.1', port, user: 'root', multipleStatements: true, dateStrings: false, timezone: 'Z',
  });
  await c.query(`CREATE DATABASE \`${dbname}\``);
  await c.changeUser({ database: dbname });
  await c.query(
    'CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) CHARACTER SET utf8mb4, ' +
      'amount DECIMAL(12,2), at DATETIME(3), doc JSON, b BLOB, flags BIT(5), ok TINYINT(1), big BIGINT UNSIGNED)',
  );
  const [ins] = await c.execute(
    'INSERT INTO t (name, amount, at, doc, b, flags, ok, big) VALUES (?, ?, ?, ?, ?, b\'10101\', ?, ?)',
    ['ann 🐬', 12.5, new Date('2024-02-29T23:59:58.123Z'), JSON.stringify({ k: [1, null, 'x'] }),
      Buffer.from([0, 255, 1]), true, '18446744073709551615'],
  );
  dump('execute insert', [ins.insertId, ins.affectedRows, ins.warningStatus]);
  const [bulk] = await c.query('INSERT INTO t (name, amount) VALUES ?', [[['bob', 1], ['carol', null], ['dave', -3.5]]]);
  dump('bulk insert', [bulk.insertId, bulk.affectedRows, bulk.info]);
  const [rows, fs] = await c.execute('SELECT * FROM t WHERE id >= ? ORDER BY id', [1]);
  dump('prepared rows', rows);
  dump('prepared fields', fields(fs));
  const [trows, tfs] = await c.query('SELECT * FROM t WHERE name = ?', ['ann 🐬']);
  dump('text rows', trows);
  dump('text fields', fields(tfs));
  await c.beginTransaction();
  await c.execute('UPDATE t SET amount = amount + ? WHERE id = ?', [100, 1]);
  await c.rollback();
  await c.beginTransaction();
  const [upd] = await c.execute('UPDATE t SET amount = amount + ? WHERE id = ?', [1, 1]);
  await c.commit();
  dump('update', [upd.affectedRows, upd.changedRows, upd.info]);
  const [multi] = await c.query('SELECT 1 AS one; SELECT name FROM t WHERE id = 2; UPDATE t SET ok = 0 WHERE id > 1');
  dump('multiple statements', multi.map((r) => (Array.isArray(r) ? r : [r.affectedRows, r.info])));
  for (const [what, sql, params] of [
    ['no such table', 'SELECT * FROM nope', []],
    ['duplicate key', 'INSERT INTO t (id) VALUES (?)', [1]],
    ['syntax', 'SELEC 1', []],
    ['out of range', 'INSERT INTO t (id, amount) VALUES (?, ?)', [99, 1e20]],
  ]) {
    try {
      await c.execute(sql, params);
      dump(what, 'no error');
    } catch (e) {
      dump(what, fail(e));
    }
  }
  const [[after]] = await c.query('SELECT COUNT(*) AS n, DATABASE() AS db FROM t');
  dump('usable after errors', after);
  let streamed = 0;
  let sum = 0;
  await new Promise((resolve, reject) =>
    c.connection
      .query('SELECT seq FROM seq_1_to_20000')
      .stream()
      .on('data', (r) => { streamed += 1; sum += r.seq; })
      .on('end', resolve)
      .on('error', reject));
  dump('streamed', [streamed, sum]);
  for (let i = 0; i < 3; i += 1) await c.execute('SELECT ? + ? AS s', [i, 1]);
  c.unprepare('SELECT ? + ? AS s');
  const [[s]] = await c.execute('SELECT ? + ? AS s', [40, 2]);
  dump('prepared again after unprepare', s);
  await c.ping();
  await c.end();

  const pool = mysql.createPool({
    host: '127.0.0.1', port, user: 'root', database: dbname, connectionLimit: 4, namedPlaceholders: true,
  });
  await Promise.all([...Array(24).keys()].map((i) =>
    pool.execute('INSERT INTO t (name, amount) VALUES (:name, :amount)', { name: `p${i}`, amount: i })));
  const [[cnt]] = await pool.query('SELECT COUNT(*) AS n, SUM(amount) AS total FROM t');
  dump('pool writes', cnt);
  const pinned = await pool.getConnection();
  await pinned.query('SET @visits = 41');
  await pinned.query('UPDATE t SET amount = @visits + 1 WHERE name = ?', ['bob']);
  const [[v]] = await pinned.query('SELECT @visits AS visits, amount FROM t WHERE name = ?', ['bob']);
  dump('user variable on a pooled connection', v);
  pinned.release();
  await pool.end();
}

async function orm() {
  const s = new Sequelize(dbname, 'root', '', {
    host: '127.0.0.1', port, dialect: 'mysql', logging: false, timezone: '+00:00',
  });
  await s.authenticate();
  const User = s.define('User', {
    name: { type: DataTypes.STRING, unique: true },
    balance: { type: DataTypes.INTEGER, defaultValue: 100 },
  });
  const Post = s.define('Post', { title: DataTypes.STRING, body: DataTypes.TEXT });
  User.hasMany(Post);
  Post.belongsTo(User);
  await s.sync({ force: true });
  Post.rawAttributes.stars = { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 };
  Post.refreshAttributes();
  await s.sync({ alter: true });
  const ann = await User.create({ name: 'ann' });
  const ben = await User.create({ name: 'ben' });
  await Post.bulkCreate([{ title: 'a', UserId: ann.id }, { title: 'b', UserId: ann.id, stars: 3 }]);
  await s.transaction({ isolationLevel: Transaction.ISOLATION_LEVELS.READ_COMMITTED }, async (t) => {
    await User.decrement('balance', { by: 10, where: { id: ann.id }, transaction: t });
    await User.increment('balance', { by: 10, where: { id: ben.id }, transaction: t });
    await s.transaction({ transaction: t }, async (t2) => {
      await Post.create({ title: 'nested', UserId: ben.id }, { transaction: t2 });
    });
    try {
      await s.transaction({ transaction: t }, async (t3) => {
        await Post.create({ title: 'undone by its savepoint', UserId: ben.id }, { transaction: t3 });
        throw new Error('to the savepoint');
      });
    } catch (e) {
      dump('savepoint rolled back', e.message);
    }
  });
  try {
    await s.transaction(async (t) => {
      await Post.create({ title: 'rolled back', UserId: ben.id }, { transaction: t });
      await User.create({ name: 'ann' }, { transaction: t });
    });
  } catch (e) {
    dump('unique violation', [e.name, e.parent && e.parent.errno]);
  }
  const [carl, created] = await User.findOrCreate({ where: { name: 'carl' }, defaults: { balance: 5 } });
  dump('findOrCreate', [carl.name, carl.balance, created]);
  await User.upsert({ id: carl.id, name: 'carl', balance: 6 });
  await User.update({ name: 'anne' }, { where: { name: { [Op.like]: 'an%' } } });
  await Post.destroy({ where: { title: 'a' } });
  const users = await User.findAll({
    attributes: ['id', 'name', 'balance'],
    include: { model: Post, attributes: ['title', 'stars'] },
    order: [['id', 'ASC'], [Post, 'title', 'ASC']],
  });
  dump('sequelize users', users.map((u) => [u.id, u.name, u.balance, u.Posts.map((p) => [p.title, p.stars])]));
  dump('sequelize count', await Post.count());
  const described = await s.getQueryInterface().describeTable('Posts');
  dump('sequelize describe', Object.entries(described).map(([k, d]) => [k, d.type, d.allowNull, d.primaryKey]));
  await s.close();

  const knex = require('knex')({
    client: 'mysql2', connection: { host: '127.0.0.1', port, user: 'root', database: dbname }, pool: { min: 0, max: 3 },
  });
  await knex.schema.createTable('accounts', (t) => {
    t.increments('id');
    t.string('owner').notNullable().index();
    t.integer('cents').defaultTo(0);
  });
  await knex.schema.alterTable('accounts', (t) => t.string('email').unique());
  await knex('accounts').insert([{ owner: 'x', cents: 5 }, { owner: 'y', cents: 7, email: 'y@example.com' }]);
  await knex.transaction(async (trx) => {
    const row = await trx('accounts').where({ owner: 'x' }).forUpdate().first();
    await trx('accounts').where({ id: row.id }).update({ cents: row.cents + 1 });
  });
  dump('knex rows', await knex('accounts').select('id', 'owner', 'cents', 'email').orderBy('id'));
  dump('knex hasColumn', await knex.schema.hasColumn('accounts', 'email'));
  const [raw] = await knex.raw('SELECT ? AS a, ?? AS b FROM accounts ORDER BY id LIMIT 1', [1, 'owner']);
  dump('knex raw', raw);
  await knex.destroy();
}

// Result sets the proxy builds: utf8mb4 text columns mysql2 decodes, as many rows as replicas.
async function proxyOwn() {
  const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root' });
  for (const [sql, key] of [['SHOW PROXY BACKENDS', 'address'], ['SHOW PROXY STATUS', 'variable']]) {
    const [rows, fs] = await c.query(sql);
    if (!rows.length || typeof rows[0][key] !== 'string' || fs.some((f) => f.characterSet !== 45)) {
      throw new Error(`${sql} read back wrong: ${JSON.stringify([rows[0], fields(fs)])}`);
    }
  }
  // Not in the prepared protocol: MySQL's error for such statements, and the connection goes on.
  try {
    await c.execute('SHOW PROXY BACKENDS');
    throw new Error('prepared SHOW PROXY BACKENDS was not refused');
  } catch (e) {
    if (e.errno !== 1295) throw e;
  }
  const [[one]] = await c.execute('SELECT ? AS one', [1]);
  if (one.one !== 1) throw new Error(`after the refusal: ${JSON.stringify(one)}`);
  await c.end();
}

driver()
  .then(orm)
  .then(() => (viaProxy ? proxyOwn() : null))
  .then(() => {
    console.log(out.join('\n'));
  })
  .catch((e) => {
    console.log(out.join('\n'));
    console.error('FAILED', e);
    process.exit(1);
  });
