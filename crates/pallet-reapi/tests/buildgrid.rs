//! Against a real BuildGrid (0.2.53 from PyPI) on 127.0.0.1: the CAS (batches, ByteStream,
//! digests checked on the way back), the ActionCache, an input root and back, and an Execute
//! round trip served by a bot written with this crate's Bots API; and the same server over
//! TLS with a token check.

use std::time::Duration;

use pallet_reapi::proto::{ActionResult, OutputFile};
use pallet_reapi::tree::{Blobs, InputTree};
use pallet_reapi::{Client, ConnectOptions, Error, Headers, action, bots, digest};
use pallet_test_support::buildgrid::{BuildGrid, Security};

#[test]
fn cas_action_cache_trees_and_execute_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start(&d.path().join("bgd"), 10) else {
        return;
    };
    let c = Client::connect(&bg.url(), "").unwrap();
    let caps = c.capabilities().cache_capabilities.clone().unwrap();
    assert_eq!(caps.max_batch_total_size_bytes, 4_193_280);

    // Blobs around and over the batch limit: two small ones in one batch, 5 MiB and 9 MiB
    // through ByteStream (several chunks each).
    let big: Vec<u8> = (0..9 << 20).map(|i: u32| (i % 251) as u8).collect();
    let big_file = d.path().join("big");
    std::fs::write(&big_file, &big).unwrap();
    let mut blobs = Blobs::new();
    let small = blobs.add_bytes(b"small".to_vec());
    let five = blobs.add_bytes(big[..5 << 20].to_vec());
    let nine = blobs.add_file(&big_file).unwrap();
    let small2 = blobs.add_bytes(b"other".to_vec());
    assert_eq!(c.find_missing(&blobs.digests()).unwrap().len(), 4);
    let (n, bytes) = c.upload(&blobs).unwrap();
    assert_eq!((n, bytes), (4, 10 + (5 << 20) + (9 << 20)));
    assert!(c.find_missing(&blobs.digests()).unwrap().is_empty());
    // A second upload sends nothing.
    assert_eq!(c.upload(&blobs).unwrap(), (0, 0));
    let got = c
        .read_blobs(&[small.clone(), small2, five.clone()])
        .unwrap();
    assert_eq!(got[&small.hash], b"small");
    assert_eq!(got[&five.hash], big[..5 << 20]);
    let out = d.path().join("nine");
    c.download(&nine, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), big);
    // A digest that lies about its size is not taken for the blob.
    let mut liar = small.clone();
    liar.size_bytes = 4;
    assert!(c.read_blob(&liar).is_err());

    // An input root, checked out again elsewhere.
    let mut t = InputTree::new();
    t.add_bytes("a/b/c.txt", b"deep".to_vec(), false).unwrap();
    t.add_bytes("run.sh", b"#!/bin/sh\n".to_vec(), true)
        .unwrap();
    t.add_file("data/big", &big_file).unwrap();
    t.add_dir("empty").unwrap();
    let (root, tree_blobs) = t.build();
    c.upload(&tree_blobs).unwrap();
    let co = d.path().join("checkout");
    std::fs::create_dir(&co).unwrap();
    pallet_reapi::tree::checkout(&c, &root, &co).unwrap();
    assert_eq!(std::fs::read(co.join("a/b/c.txt")).unwrap(), b"deep");
    assert_eq!(std::fs::read(co.join("data/big")).unwrap(), big);
    assert!(co.join("empty").is_dir());
    // Through a local blob cache: the second checkout downloads no file.
    let cache = d.path().join("blob-cache");
    let down = || {
        c.stats()
            .downloaded_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for (k, want_files) in [(1, true), (2, false)] {
        let co2 = d.path().join(format!("cached-{k}"));
        std::fs::create_dir(&co2).unwrap();
        let before = down();
        pallet_reapi::tree::checkout_with_cache(&c, &root, &co2, Some(&cache)).unwrap();
        let moved = down() - before;
        // Folders always come from the CAS; files only the first time.
        assert_eq!(moved > 9 << 20, want_files, "checkout {k}: {moved} bytes");
        assert_eq!(std::fs::read(co2.join("data/big")).unwrap(), big);
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(co.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // An action: its result through the ActionCache, then through Execute and a bot.
    let mut ablobs = Blobs::new();
    let (act, _, _) = action::encode(
        &action::Spec {
            arguments: vec!["echo".into()],
            outputs: vec!["out".into()],
            input_root: root.clone(),
            salt: b"test".to_vec(),
            ..Default::default()
        },
        &mut ablobs,
    );
    c.upload(&ablobs).unwrap();
    assert!(c.get_action_result(&act).unwrap().is_none());
    let result = ActionResult {
        output_files: vec![OutputFile {
            path: "out".into(),
            digest: Some(small.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.update_action_result(&act, &result).unwrap();
    assert_eq!(
        c.get_action_result(&act).unwrap().unwrap().output_files[0].digest,
        Some(small.clone())
    );

    let mut ablobs = Blobs::new();
    let (act2, _, _) = action::encode(
        &action::Spec {
            arguments: vec!["run".into()],
            input_root: root,
            salt: b"executed".to_vec(),
            ..Default::default()
        },
        &mut ablobs,
    );
    c.upload(&ablobs).unwrap();
    let bot_client = c.clone();
    let want = act2.clone();
    let bot = std::thread::spawn(move || {
        let mut b = bots::Bots::new(&bot_client);
        let mut s = b
            .create("test-bot", &[], 1, Duration::from_secs(10))
            .unwrap();
        for _ in 0..30 {
            let mut done = false;
            for l in &mut s.leases {
                if l.state == bots::LeaseState::Active as i32 {
                    let a: pallet_reapi::proto::Action =
                        prost::Message::decode(l.payload.as_ref().unwrap().value.as_slice())
                            .unwrap();
                    assert_eq!(digest::of_message(&a).0, want);
                    let r = ActionResult {
                        exit_code: 3,
                        ..Default::default()
                    };
                    l.result = Some(pallet_reapi::any(
                        "build.bazel.remote.execution.v2.ActionResult",
                        &r,
                    ));
                    l.status = Some(Default::default());
                    l.state = bots::LeaseState::Completed as i32;
                    done = true;
                }
            }
            s = b.update(&s, Duration::from_secs(5), None).unwrap();
            if done {
                return;
            }
        }
        panic!("no lease came");
    });
    let stages = std::sync::Mutex::new(vec![]);
    let r = c
        .execute(&act2, false, &|s, _| stages.lock().unwrap().push(s))
        .unwrap();
    bot.join().unwrap();
    assert_eq!(r.result.unwrap().exit_code, 3);
    // The stream reported the action queued before it completed (4).
    let stages = stages.into_inner().unwrap();
    assert!(
        stages.contains(&2) && stages.last() == Some(&4),
        "{stages:?}"
    );
    assert_eq!(r.status.map_or(0, |s| s.code), 0);
    assert!(
        c.stats()
            .uploaded_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 14 << 20
    );
}

/// BuildGrid serving TLS only, with a certificate for 127.0.0.1 signed by the test's own CA,
/// and refusing calls without a JWT: each missing piece gives an error naming the server and
/// the flag to check; with both, the CAS and the Bots API work.
#[test]
fn grpcs_with_a_private_ca_and_a_bearer_token() {
    let d = tempfile::tempdir().unwrap();
    let Some(bg) = BuildGrid::start_secured(&d.path().join("bgd"), 10, Security::TLS_AND_JWT)
    else {
        return;
    };
    let url = bg.url();
    assert!(url.starts_with("grpcs://127.0.0.1:"), "{url}");
    let token = bg.bearer();
    let headers = Headers::parse(&[format!("authorization={token}")]).unwrap();
    let good = ConnectOptions {
        tls_ca: bg.ca.clone(),
        headers: headers.clone(),
    };

    // The system's roots alone do not trust the test's CA.
    let e = Client::connect_with(
        &url,
        "",
        &ConnectOptions {
            tls_ca: None,
            headers: headers.clone(),
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Tls { .. }), "{msg}");
    assert!(
        msg.contains(&url) && msg.contains("--remote-tls-ca"),
        "{msg}"
    );
    assert!(!e.is_transient(), "{msg}");
    assert!(!msg.contains(&token), "{msg}");

    // Plaintext to a TLS server does not get through either.
    let plain = url.replacen("grpcs://", "grpc://", 1);
    let e = Client::connect_with(&plain, "", &good).unwrap_err();
    assert!(e.to_string().contains("grpcs://"), "{e}");

    // TLS works, but without a token the server refuses the first call.
    let e = Client::connect_with(
        &url,
        "",
        &ConnectOptions {
            tls_ca: bg.ca.clone(),
            headers: Headers::default(),
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{msg}");
    assert!(
        msg.contains(&url) && msg.contains("--remote-header"),
        "{msg}"
    );

    // A token signed with another secret is refused the same way, and not repeated.
    let forged = "authorization=Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2lnbmF0dXJl";
    let e = Client::connect_with(
        &url,
        "",
        &ConnectOptions {
            tls_ca: bg.ca.clone(),
            headers: Headers::parse(&[forged]).unwrap(),
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    assert!(!e.to_string().contains("c2lnbmF0dXJl"), "{e}");

    // Both: the CAS, the ActionCache and the Bots API, every call with the token.
    let c = Client::connect_with(&url, "", &good).unwrap();
    let mut blobs = Blobs::new();
    let small = blobs.add_bytes(b"over tls".to_vec());
    let big = blobs.add_bytes((0..5 << 20).map(|i: u32| (i % 253) as u8).collect());
    c.upload(&blobs).unwrap();
    assert!(c.find_missing(&blobs.digests()).unwrap().is_empty());
    assert_eq!(c.read_blob(&small).unwrap(), b"over tls");
    assert_eq!(c.read_blob(&big).unwrap().len(), 5 << 20);
    assert!(c.get_action_result(&small).unwrap().is_none());
    let mut b = bots::Bots::new(&c);
    let s = b.create("tls-bot", &[], 1, Duration::from_secs(5)).unwrap();
    assert!(!s.name.is_empty());
}
