//! Shared memory across processes: arrays written by children, raw bytes, atomics.

use procpool::{Array, Process, RawArray, RawValue, SharedMemory, Value};

fn square((a, i): (Array<u64>, usize)) {
    a.set(i, (i * i) as u64);
}

#[tokio::test]
async fn an_array_written_by_children_is_read_by_the_parent() {
    let a = Array::zeroed(8).unwrap();
    let ps: Vec<_> = (0..8)
        .map(|i| Process::spawn(square, (a.clone(), i)).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(a.to_vec(), [0, 1, 4, 9, 16, 25, 36, 49]);
    {
        let mut all = a.lock().await.unwrap();
        all.reverse();
    }
    assert_eq!(a.get(0), 49);
    assert_eq!(a.len(), 8);
}

fn bump_all(a: Array<i32>) {
    for _ in 0..1000 {
        let mut g = a.blocking_lock().unwrap();
        for x in g.iter_mut() {
            *x += 1;
        }
    }
}

#[tokio::test]
async fn the_array_guard_makes_whole_array_updates_atomic() {
    let a = Array::from_slice(&[0i32; 16]).unwrap();
    let ps: Vec<_> = (0..3)
        .map(|_| Process::spawn(bump_all, a.clone()).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(a.to_vec(), vec![3000; 16]);
}

fn atomics(v: RawValue<u64>) {
    for _ in 0..10_000 {
        v.fetch_add(1);
    }
}

#[tokio::test]
async fn raw_value_atomics_across_processes() {
    let v = RawValue::new(0u64).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(atomics, v.clone()).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(v.load_atomic(), 40_000);
    assert_eq!(v.compare_exchange(40_000, 1), Ok(40_000));
    assert_eq!(v.compare_exchange(5, 6), Err(1));
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

fn shift(v: Value<Point>) {
    v.update(|p| {
        p.x += 1.0;
        p.y -= 1.0;
    });
}

#[tokio::test]
async fn a_repr_c_struct_value_and_raw_bytes() {
    let v = Value::new(Point { x: 0.0, y: 0.0 }).unwrap();
    let mut p = Process::spawn(shift, v.clone()).unwrap();
    p.join().await.unwrap();
    assert_eq!(v.load(), Point { x: 1.0, y: -1.0 });

    let shm = SharedMemory::new(5).unwrap();
    let mut p = Process::spawn(|m: SharedMemory| m.write(0, b"hello"), shm.clone()).unwrap();
    p.join().await.unwrap();
    assert_eq!(shm.to_vec(), b"hello");
    let mut buf = [0u8; 3];
    shm.read(1, &mut buf);
    assert_eq!(&buf, b"ell");

    let raw = RawArray::from_slice(&[1u8, 2, 3]).unwrap();
    raw.set(2, 9);
    assert_eq!(raw.to_vec(), [1, 2, 9]);
}

#[test]
#[should_panic(expected = "outside shared memory")]
fn out_of_bounds_writes_panic_instead_of_corrupting() {
    SharedMemory::new(4).unwrap().write(2, b"abc");
}

#[test]
fn serialising_a_value_outside_procpool_is_an_error() {
    // Values only travel through procpool; outside it, serialising is an error.
    let v = Value::new(1u32).unwrap();
    assert!(postcard::to_allocvec(&v).is_err());
}

/// Tries to truncate every procpool memory file this process holds (found through
/// `/proc/self/fd`, as a hostile or buggy task would): (refused with EPERM, allowed).
#[allow(unsafe_code)]
fn truncate_every_memfd(_: (SharedMemory, Value<u64>, procpool::Queue<u64>)) -> (u32, u32) {
    let (mut refused, mut allowed) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("/memfd:procpool-") {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: ftruncate takes a descriptor and a length by value; the descriptor
        // is one of ours, open for the call.
        let rc = unsafe { libc::ftruncate(fd, 0) };
        if rc == 0 {
            allowed += 1;
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            refused += 1;
        }
    }
    (refused, allowed)
}

#[tokio::test]
async fn a_child_cannot_truncate_shared_memory_under_the_others() {
    let shm = SharedMemory::new(8192).unwrap();
    shm.write(8000, b"still here");
    let value = Value::new(7u64).unwrap();
    let queue = procpool::Queue::unbounded().unwrap();
    queue.put(1u64).await.unwrap();
    let mut p = Process::spawn(
        truncate_every_memfd,
        (shm.clone(), value.clone(), queue.clone()),
    )
    .unwrap();
    let (refused, allowed) = p.join().await.unwrap();
    assert_eq!(allowed, 0, "a memory file could be truncated");
    assert!(refused >= 3, "only {refused} memory files found");
    // The parent's mappings are whole: no SIGBUS, nothing lost.
    let mut tail = [0u8; 10];
    shm.read(8000, &mut tail);
    assert_eq!(&tail, b"still here");
    assert_eq!(value.load(), 7);
    queue.put(2).await.unwrap();
    assert_eq!(queue.get().await.unwrap(), 1);
    assert_eq!(queue.get().await.unwrap(), 2);
}

/// The `shm_attach` example, built beside this test by `cargo test`.
fn shm_attach_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("shm_attach"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --example shm_attach` (cargo test builds it)",
        path.display()
    );
    path
}

#[tokio::test]
async fn a_named_segment_is_shared_with_another_program_until_unlinked() {
    let example = shm_attach_example();
    let name = format!("procpool-test-named-{}", std::process::id());
    let mem = SharedMemory::create(&name, 4096).unwrap();
    // Unlinked however the test ends.
    let _unlink = Unlink(name.clone());
    assert_eq!(mem.name(), Some(name.as_str()));
    mem.write(0, b"hello");
    // Taken: a second create fails, as Python's create=True does.
    let again = SharedMemory::create(&name, 16).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);

    let out = tokio::process::Command::new(example)
        .args([name.as_str(), "5", "world"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "found hello");
    assert_eq!(
        &mem.to_vec()[..10],
        b"helloworld",
        "the other program wrote here"
    );

    // A named segment passed as a handle keeps its name.
    let mut p = Process::spawn(name_of, mem.clone()).unwrap();
    assert_eq!(p.join().await.unwrap(), Some(name.clone()));

    SharedMemory::unlink(&name).unwrap();
    let gone = SharedMemory::open(&name).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
    // The memory itself lives on while mapped.
    assert_eq!(&mem.to_vec()[..10], b"helloworld");
    assert_eq!(
        SharedMemory::unlink(&name).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

/// Unlinks a named segment when dropped, if it is still there.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = SharedMemory::unlink(&self.0);
    }
}

fn name_of(mem: SharedMemory) -> Option<String> {
    mem.name().map(str::to_owned)
}

#[test]
fn bad_names_and_sizes_are_refused() {
    for bad in ["", "a/b", "nul\0", &"x".repeat(256)] {
        assert_eq!(
            SharedMemory::create(bad, 8).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput,
            "{bad:?}"
        );
        assert_eq!(
            SharedMemory::open(bad).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
    let name = format!("procpool-test-zero-{}", std::process::id());
    assert_eq!(
        SharedMemory::create(&name, 0).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(SharedMemory::new(8).unwrap().name(), None);
}

/// A child's edits to a shareable list: every type, in place.
fn edit_list(list: procpool::ShareableList) -> usize {
    use procpool::shm::Item;
    list.set(0, Item::Int(-7)).unwrap();
    list.set(1, Item::Str("changed".into())).unwrap();
    list.set(2, Item::Bytes(vec![1, 2, 3])).unwrap();
    list.set(3, Item::Float(0.5)).unwrap();
    list.set(4, Item::None).unwrap();
    list.len()
}

#[tokio::test]
async fn a_shareable_list_is_edited_by_a_child_and_refuses_what_does_not_fit() {
    use procpool::shm::{Item, ListError};
    use procpool::ShareableList;

    let list = ShareableList::new([
        Item::Int(1),
        Item::Str("hello".into()),
        Item::Bool(true),
        Item::None,
        Item::Float(3.25),
    ])
    .unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list.get(1).unwrap(), Item::Str("hello".into()));
    assert_eq!(
        list.capacity(1).unwrap(),
        8,
        "rounded up to 8, as Python does"
    );
    let mut child = Process::spawn(edit_list, list.clone()).unwrap();
    assert_eq!(child.join().await.unwrap(), 5);
    assert_eq!(
        list.to_vec().unwrap(),
        [
            Item::Int(-7),
            Item::Str("changed".into()),
            Item::Bytes(vec![1, 2, 3]),
            Item::Float(0.5),
            Item::None,
        ]
    );
    // Oversize: refused, and the slot keeps what it had.
    match list.set(1, Item::Str("nine byte".into())) {
        Err(ListError::TooLong {
            index: 1,
            len: 9,
            capacity: 8,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(list.get(1).unwrap(), Item::Str("changed".into()));
    assert!(matches!(
        list.get(5),
        Err(ListError::IndexOutOfRange { index: 5, len: 5 })
    ));
    // Room to grow, when asked for.
    let roomy = ShareableList::with_text_capacity([Item::Str(String::new())], 64).unwrap();
    roomy.set(0, Item::Str("x".repeat(64))).unwrap();
    assert!(roomy.set(0, Item::Str("x".repeat(65))).is_err());
    // A slot over 4 GiB, or a size that overflows, is refused by name, not a panic.
    for huge in [1usize << 33, usize::MAX] {
        let e = ShareableList::with_text_capacity([Item::None], huge).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
