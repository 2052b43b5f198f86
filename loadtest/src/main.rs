fn main() {
    eprintln!("loadtest: not built yet");
    std::process::exit(1);
}
