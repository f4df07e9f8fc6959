//! WAL append throughput with fsync: N appends in flight at once (as N concurrent commits),
//! each 200 bytes. Group commit makes one sync per batch, so records/s grows with N.
//! Run: `cargo bench --bench wal_append` (prints time per record group; records/s = N / time).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use myquorum::wal::{Wal, WalRecord};

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = rt.block_on(async { Wal::open(dir.path()) }).unwrap();
    let mut ts = 0u64;
    let mut group = c.benchmark_group("wal_append_fsync");
    group.sample_size(20);
    for in_flight in [1usize, 16, 128] {
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(in_flight),
            &in_flight,
            |b, &n| {
                b.iter(|| {
                    let waits: Vec<_> = (0..n)
                        .map(|_| {
                            ts += 2;
                            wal.append_batch(vec![WalRecord {
                                ts,
                                payload: vec![7u8; 200],
                            }])
                        })
                        .collect();
                    rt.block_on(async {
                        for w in waits {
                            w.await.unwrap().unwrap();
                        }
                    });
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
