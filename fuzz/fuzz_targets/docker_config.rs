//! Docker's `config.json` as `lookup_credentials` and `login` read it (`auths` with base64
//! `auth` or username/password, `credHelpers`, `credsStore`), and `HTTP_AUTH` values.
//!
//! The input's first line is the registry to look up (and an `HTTP_AUTH` value); the rest is
//! the `config.json` text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pallet_registry::{Credentials, login, lookup_credentials};

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let d = tempfile::tempdir().expect("temporary folder");
        // SAFETY: set once, before any other thread of this process reads the environment.
        // An empty PATH: a `credHelpers` / `credsStore` name can then start no program, and
        // the working folder is ours so no relative name finds one either.
        unsafe {
            std::env::set_var("DOCKER_CONFIG", d.path());
            std::env::remove_var("HTTP_AUTH");
            std::env::set_var("PATH", "");
        }
        std::env::set_current_dir(d.path()).expect("chdir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir().path();
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (data, &b""[..]),
    };
    let registry = String::from_utf8_lossy(first).into_owned();
    let auth = pallet_repo::Auth::parse(&registry);
    let _ = auth.for_host(&registry);
    let _ = pallet_repo::redact(&registry);
    let path = d.join("config.json");
    std::fs::write(&path, rest).expect("write");
    let _ = lookup_credentials(&registry);
    // `login` keeps everything else in the file and stores the credentials where lookup finds
    // them, unless a credential helper is configured for that registry.
    let creds = Credentials {
        username: "fuzz".into(),
        password: "pass:word".into(),
    };
    login(&registry, &creds).expect("login writes config.json");
    let text = std::fs::read_to_string(&path).expect("login wrote config.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("login writes JSON");
    if let Ok(old) = serde_json::from_slice::<serde_json::Value>(rest)
        && let Some(o) = old.as_object()
    {
        for (k, val) in o {
            if k != "auths" {
                assert_eq!(&v[k.as_str()], val, "login lost {k}");
            }
        }
    }
    if v["credHelpers"][registry.as_str()].as_str().is_none() {
        assert_eq!(lookup_credentials(&registry), Some(creds));
    }
});
