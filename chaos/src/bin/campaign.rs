//! `campaign`: the fault campaign of issue 9 (being built).

fn main() {
    eprintln!("campaign: not implemented yet");
    std::process::exit(2);
}
