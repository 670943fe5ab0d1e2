//! The store candidates side by side, on what linechat asks of a store: append one chat record
//! (~110 bytes) so that it survives a crash of the process *before* the message is delivered,
//! one at a time (S1: messages arrive slower than a write takes) and in groups of 64 (S2:
//! group commit), then the bytes on disk per record and the time to read everything back
//! (a restart). `cargo run --release -- [records] [dir]` (default 200 000 in a temporary
//! directory under target/). Medians of 3 runs of each.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const GROUP: usize = 64;

fn record(i: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(128);
    r.extend_from_slice(&i.to_le_bytes());
    r.extend_from_slice(&(1_796_000_000_000_000u64 + i).to_le_bytes());
    r.extend_from_slice(b"\x00\x05lobby\x05alice\x05alice\x09127.0.0.1");
    r.extend_from_slice(
        format!("message number {i:08} with some words of chat in it, typed").as_bytes(),
    );
    r
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

trait Candidate {
    fn name(&self) -> &'static str;
    /// Appends `records`, one commit that survives a process crash for the whole group.
    fn append(&mut self, first: u64, records: &[Vec<u8>]);
    fn close(self: Box<Self>);
    /// Reads every record back, returns how many.
    fn read_all(dir: &Path) -> usize
    where
        Self: Sized;
}

struct Log(File, Vec<u8>);
impl Candidate for Log {
    fn name(&self) -> &'static str {
        "own log (write(2) + CRC32)"
    }
    fn append(&mut self, _: u64, records: &[Vec<u8>]) {
        self.1.clear();
        for r in records {
            self.1.extend_from_slice(&(r.len() as u32).to_le_bytes());
            self.1.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            self.1.extend_from_slice(r);
        }
        self.0.write_all(&self.1).unwrap();
    }
    fn close(self: Box<Self>) {}
    fn read_all(dir: &Path) -> usize {
        let mut buf = Vec::new();
        File::open(dir.join("log"))
            .unwrap()
            .read_to_end(&mut buf)
            .unwrap();
        let (mut at, mut n) = (0, 0);
        while at + 8 <= buf.len() {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap());
            assert_eq!(crc32fast::hash(&buf[at + 8..at + 8 + len]), crc);
            at += 8 + len;
            n += 1;
        }
        n
    }
}

struct Fjall(fjall::Keyspace, fjall::PartitionHandle);
impl Candidate for Fjall {
    fn name(&self) -> &'static str {
        "fjall 2 (LSM; persist(Buffer))"
    }
    fn append(&mut self, first: u64, records: &[Vec<u8>]) {
        let mut batch = self.0.batch();
        for (i, r) in records.iter().enumerate() {
            batch.insert(&self.1, (first + i as u64).to_be_bytes(), r.as_slice());
        }
        batch.commit().unwrap();
        self.0.persist(fjall::PersistMode::Buffer).unwrap();
    }
    fn close(self: Box<Self>) {}
    fn read_all(dir: &Path) -> usize {
        let ks = fjall::Config::new(dir).open().unwrap();
        let p = ks.open_partition("h", Default::default()).unwrap();
        p.iter()
            .map(|kv| kv.unwrap().1.len())
            .filter(|&l| l > 0)
            .count()
    }
}

struct Redb(redb::Database, redb::Durability, &'static str);
const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("h");
impl Candidate for Redb {
    fn name(&self) -> &'static str {
        self.2
    }
    fn append(&mut self, first: u64, records: &[Vec<u8>]) {
        let mut tx = self.0.begin_write().unwrap();
        tx.set_durability(self.1);
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (i, r) in records.iter().enumerate() {
                t.insert(first + i as u64, r.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn close(self: Box<Self>) {}
    fn read_all(dir: &Path) -> usize {
        use redb::ReadableTable;
        let db = redb::Database::create(dir.join("db")).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.iter().unwrap().count()
    }
}

struct Sqlite(rusqlite::Connection);
impl Candidate for Sqlite {
    fn name(&self) -> &'static str {
        "rusqlite (SQLite WAL, synchronous=NORMAL)"
    }
    fn append(&mut self, first: u64, records: &[Vec<u8>]) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO h (id, r) VALUES (?1, ?2)")
                .unwrap();
            for (i, r) in records.iter().enumerate() {
                st.execute(rusqlite::params![(first + i as u64) as i64, r])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn close(self: Box<Self>) {}
    fn read_all(dir: &Path) -> usize {
        let c = rusqlite::Connection::open(dir.join("db")).unwrap();
        let mut st = c.prepare("SELECT r FROM h ORDER BY id").unwrap();
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        rows.count()
    }
}

fn open(which: usize, dir: &Path) -> Box<dyn Candidate> {
    match which {
        0 => Box::new(Log(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))
                .unwrap(),
            Vec::new(),
        )),
        1 => {
            let ks = fjall::Config::new(dir).open().unwrap();
            let p = ks.open_partition("h", Default::default()).unwrap();
            Box::new(Fjall(ks, p))
        }
        2 => Box::new(Redb(
            redb::Database::create(dir.join("db")).unwrap(),
            redb::Durability::None,
            "redb 2, Durability::None (lost by a process crash)",
        )),
        3 => Box::new(Redb(
            redb::Database::create(dir.join("db")).unwrap(),
            redb::Durability::Eventual,
            "redb 2, Durability::Eventual (fdatasync per commit on Linux)",
        )),
        _ => {
            let c = rusqlite::Connection::open(dir.join("db")).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
                 CREATE TABLE IF NOT EXISTS h (id INTEGER PRIMARY KEY, r BLOB NOT NULL);",
            )
            .unwrap();
            Box::new(Sqlite(c))
        }
    }
}

fn read_all(which: usize, dir: &Path) -> usize {
    match which {
        0 => Log::read_all(dir),
        1 => Fjall::read_all(dir),
        2 | 3 => Redb::read_all(dir),
        _ => Sqlite::read_all(dir),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(200_000, |a| a.parse().unwrap());
    let base = PathBuf::from(args.get(2).map_or("target/store-choice", String::as_str));
    let records: Vec<Vec<u8>> = (0..n as u64).map(record).collect();
    let raw: usize = records.iter().map(Vec::len).sum();
    println!(
        "{n} records, {:.0} bytes each on average\n",
        raw as f64 / n as f64
    );
    println!("| store | µs per record, one commit each | µs per record, groups of {GROUP} | bytes on disk per record | reading all back (s) |");
    println!("|---|---|---|---|---|");
    for which in 0..5 {
        let (mut one, mut group, mut size, mut read) = (vec![], vec![], vec![], vec![]);
        let mut name = "";
        for rep in 0..3 {
            for (grouped, out) in [(false, &mut one), (true, &mut group)] {
                let dir = base.join(format!("{which}-{rep}-{grouped}"));
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).unwrap();
                // redb fsyncing every commit would take minutes at full size.
                let count = if which == 3 && !grouped { n / 50 } else { n };
                let mut c = open(which, &dir);
                name = c.name();
                let start = Instant::now();
                let step = if grouped { GROUP } else { 1 };
                for (i, chunk) in records[..count].chunks(step).enumerate() {
                    c.append((i * step) as u64, chunk);
                }
                out.push(start.elapsed().as_secs_f64() * 1e6 / count as f64);
                c.close();
                if grouped {
                    size.push(dir_bytes(&dir) as f64 / count as f64);
                    let start = Instant::now();
                    let got = read_all(which, &dir);
                    read.push(start.elapsed().as_secs_f64());
                    assert_eq!(got, count, "{name} read back");
                }
                let _ = fs::remove_dir_all(&dir);
            }
        }
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.3} |",
            median(one),
            median(group),
            median(size),
            median(read)
        );
    }
}
