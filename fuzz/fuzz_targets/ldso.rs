//! What the ld.so.cache writer reads from packages: ELF headers and dynamic sections
//! (`ldso::read_elf`, 32/64-bit, either byte order), `ld.so.conf` text, include globs, library
//! file names, and the loader's name order the cache is sorted by.
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use pallet_fs::ldso::{
    CacheEntry, cache_flags, encode_cache, glob_match, libcmp, parse_conf, parse_lib_filename,
    read_elf, sort_entries,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = read_elf(data) {
        let _ = cache_flags(&e);
        for s in &e.sonames {
            let _ = parse_lib_filename(s);
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_conf(&text);
    let lines: Vec<&str> = text.lines().take(32).collect();
    for (i, a) in lines.iter().enumerate() {
        let _ = parse_lib_filename(a);
        assert_eq!(libcmp(a, a), Ordering::Equal);
        for b in &lines[i..] {
            let _ = glob_match(a, b);
            assert_eq!(libcmp(a, b), libcmp(b, a).reverse(), "{a:?} vs {b:?}");
        }
    }
    let mut entries: Vec<CacheEntry> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| CacheEntry {
            flags: (i % 3) as u32,
            key: l.to_string(),
            value: format!("/lib/{l}"),
            hwcap: 0,
        })
        .collect();
    sort_entries(&mut entries);
    for w in entries.windows(2) {
        assert_ne!(
            libcmp(&w[0].key, &w[1].key),
            Ordering::Less,
            "cache out of order"
        );
    }
    let _ = encode_cache(&entries, false);
    let _ = encode_cache(&entries, true);
});
