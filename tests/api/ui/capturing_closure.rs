use procpool::ProcessPoolExecutor;

fn submit_capturing(pool: &ProcessPoolExecutor) {
    let offset = 10u32;
    let _h = pool.submit(move |x: u32| x + offset, 1);
}

fn main() {
    if std::env::args().count() > 1000 {
        submit_capturing(&ProcessPoolExecutor::new().unwrap());
    }
}
