use procpool::ProcessPoolExecutor;

fn double(x: u32) -> u32 {
    x * 2
}

fn submit_some(pool: &ProcessPoolExecutor) {
    let _a = pool.submit(double, 1);
    let _b = pool.submit(|x: u32| x + 1, 1);
}

fn main() {
    if std::env::args().count() > 1000 {
        submit_some(&ProcessPoolExecutor::new().unwrap());
    }
}
