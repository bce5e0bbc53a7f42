//! The `cdc-bridge` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    cdc_bridge::cli::main()
}
