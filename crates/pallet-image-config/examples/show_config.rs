//! `cargo run --example show_config -- FILE [INCLUDE_DIR…]`: print the merged configuration
//! as `apko show-config` does, or the error.

fn main() {
    let mut args = std::env::args_os().skip(1).map(std::path::PathBuf::from);
    let Some(file) = args.next() else {
        eprintln!("usage: show_config FILE [INCLUDE_DIR…]");
        std::process::exit(2);
    };
    let include: Vec<_> = args.collect();
    match pallet_image_config::load(&file, &include) {
        Ok(l) => print!("{}", l.config.to_show_config_yaml()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
