//! MB/s of the layer gzip at levels 1 and 6 on 1 and 2 threads:
//! `cargo bench -p pallet-oci --bench gzip`.

use std::time::Instant;

fn main() {
    let mut x: u32 = 1;
    let data: Vec<u8> = (0..64usize << 20)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (i / 4096) % 3 != 0 {
                b"usr/lib/libfoo.so.1 hello world\n"[i % 32]
            } else {
                (x >> 16) as u8
            }
        })
        .collect();
    for level in [1, 6] {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let t = Instant::now();
            let (gz, _) = pool.install(|| pallet_oci::gzip::compress(&data, level).unwrap());
            let s = t.elapsed().as_secs_f64();
            println!(
                "level {level} threads {threads}: {:.1} MB/s ratio {:.3}",
                data.len() as f64 / s / 1e6,
                gz.len() as f64 / data.len() as f64
            );
        }
    }
}
