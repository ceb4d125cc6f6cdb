//! The `ember` command; the front end is [`ember::cli`].

fn main() -> std::process::ExitCode {
    ember::cli::main()
}
