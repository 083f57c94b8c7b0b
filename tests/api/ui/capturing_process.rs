use procpool::Process;

fn main() {
    let offset = 3usize;
    if std::env::args().count() > 1000 {
        let _p = Process::spawn(move |n: usize| n + offset, 1);
    }
}
