//! Real indexes and installed databases made by others parse completely.

use pallet_test_support::shared;

use pallet_keys::Keyring;

#[test]
fn alpine_316_and_317_indexes() {
    let Some(s) = shared() else { return };
    let up = s.join("fixtures/upstream-testdata");
    let ring = Keyring::from_paths([up.join("keys")]);
    let i16 =
        pallet_index::read_index(&up.join("apko/alpine-316/APKINDEX.tar.gz"), Some(&ring)).unwrap();
    assert!(i16.packages.len() > 4900, "{}", i16.packages.len());
    let i17 = pallet_index::read_index(&up.join("apko/alpine-317/APKINDEX.tar.gz"), None).unwrap();
    assert_eq!(i17.packages.len(), 5004);
    assert_eq!(i17.description.as_deref(), Some("v3.17.3-216-g54a39ace82a"));
    let mandoc = i17
        .packages
        .iter()
        .find(|p| p.name == "mandoc-doc")
        .unwrap();
    assert_eq!(mandoc.provider_priority, Some(100));
    assert_eq!(mandoc.install_if.len(), 2);
    // Writing the records back gives the same records.
    let text = pallet_apk_types::package::write_index(&i17.packages);
    let again = pallet_apk_types::package::parse_index(&text).unwrap();
    assert_eq!(again.len(), 5004);
}

#[test]
fn three_rsa256_signatures_and_the_installed_db() {
    let Some(s) = shared() else { return };
    let up = s.join("fixtures/upstream-testdata");
    let ring = Keyring::from_paths([up.join("apko/rsa256-signed/test-rsa256.rsa.pub")]);
    pallet_index::read_index(&up.join("apko/rsa256-signed/APKINDEX.tar.gz"), Some(&ring)).unwrap();
    let text = std::fs::read_to_string(up.join("apko/root_usr_lib_apk_db/installed")).unwrap();
    let db = pallet_apk_types::installed::parse_installed(&text).unwrap();
    assert!(!db.is_empty());
    assert!(db.iter().any(|p| !p.dirs.is_empty()));
    let again = pallet_apk_types::installed::parse_installed(
        &pallet_apk_types::installed::write_installed(&db),
    )
    .unwrap();
    assert_eq!(again, db);
}

#[test]
fn the_compact_form_of_a_real_index_gives_the_same_records_and_names() {
    let Some(s) = shared() else { return };
    let idx = pallet_index::read_index(
        &s.join("fixtures/upstream-testdata/apko/alpine-316/APKINDEX.tar.gz"),
        None,
    )
    .unwrap();
    let data = pallet_index::compact::encode(
        &idx.packages,
        idx.description.as_deref(),
        &[1; 32],
        pallet_index::MAX_INDEX_SIZE,
    )
    .unwrap();
    let compact = pallet_index::Records::load(data, Some(&[1; 32])).unwrap();
    assert_eq!(compact.to_vec(), idx.packages);
    assert_eq!(compact.description(), idx.description);
    // Every name any record answers to or triggers on, looked up both ways.
    let plain = pallet_index::Records::from(idx.packages.clone());
    let mut names: Vec<&str> = vec!["", "no-such-name"];
    for p in &idx.packages {
        names.push(&p.name);
        names.extend(
            p.provides
                .iter()
                .chain(&p.install_if)
                .map(|d| d.name.as_str()),
        );
    }
    for n in names {
        assert_eq!(compact.providers(n), plain.providers(n), "{n}");
        assert_eq!(compact.triggered_by(n), plain.triggered_by(n), "{n}");
    }
    assert!(compact.triggered_by("docs").len() > 1000);
}
