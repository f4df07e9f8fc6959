//! classify + route per statement, for the statements sysbench sends.

use criterion::{criterion_group, criterion_main, Criterion};
use myquorum::router::{route, ReplicaId, SessionView, ShardId, ShardTopology, Topology};
use myquorum::sql::{classify, ClassifyCache};
use std::hint::black_box;

const STATEMENTS: &[(&str, &str)] = &[
    ("point_select", "SELECT c FROM sbtest1 WHERE id=5023"),
    ("simple_range", "SELECT c FROM sbtest1 WHERE id BETWEEN 5023 AND 5122"),
    ("sum_range", "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 5023 AND 5122"),
    ("order_range", "SELECT c FROM sbtest1 WHERE id BETWEEN 5023 AND 5122 ORDER BY c"),
    ("distinct_range", "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 5023 AND 5122 ORDER BY c"),
    ("index_update", "UPDATE sbtest1 SET k=k+1 WHERE id=5023"),
    ("non_index_update", "UPDATE sbtest1 SET c='43819855382-12368383412-03497483329-72613216452-02498434829-68283212457-72693421453-47342563547-50732128340-34217346234' WHERE id=5023"),
    ("delete", "DELETE FROM sbtest1 WHERE id=5023"),
    ("insert", "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5023, 4993, '43819855382-12368383412-03497483329-72613216452-02498434829-68283212457-72693421453-47342563547-50732128340-34217346234', '23148193235-47838454386-28347583743-98231213354-89823212342')"),
    ("begin", "BEGIN"),
    ("commit", "COMMIT"),
];

fn bench(c: &mut Criterion) {
    let topo = Topology {
        shards: vec![ShardTopology {
            id: ShardId(0),
            primary: ReplicaId(0),
            replicas: vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)],
        }],
    };
    // What the proxy does per statement: digest lookup in the shared cache, then route.
    let cache = ClassifyCache::new(10_000);
    let mut g = c.benchmark_group("cached_classify_route");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let cl = cache.classify(black_box(sql));
                black_box(route(&cl, &topo, SessionView::default()))
            })
        });
    }
    g.finish();
    // A statement seen for the first time: full sqlparser classification.
    let mut g = c.benchmark_group("uncached_classify_route");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let cl = classify(black_box(sql));
                black_box(route(&cl, &topo, SessionView::default()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
