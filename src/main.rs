//! The `pullprobe` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    pullprobe::cli::main()
}
