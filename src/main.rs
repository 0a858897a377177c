//! The `resilite` binary; see `resilite --help`.

fn main() -> std::process::ExitCode {
    resilite::cli::main()
}
