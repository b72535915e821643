//! The fuzz targets (`licgate::fuzzing`) over their seed corpus (`fuzz/corpus/`), and
//! over a few thousand deterministic mutations of it: what `make fuzz` explores with
//! libFuzzer, replayed on every `make test` without it.

use licgate::fuzzing::TARGETS;

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to the parsers.
const INTERESTING: &[&[u8]] = &[
    b"/",
    b".",
    b"..",
    b"%",
    b"%2e",
    b"%2F",
    b"%3B",
    b";",
    b"?",
    b"#",
    b"\\",
    b"\r\n",
    b"\n",
    b"\xc3\xa9",
    b"\xff",
    b"\0",
    b"://",
    b"=",
    b"&",
    b"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b"~",
    b" ",
    b",",
    b":",
    b"eyJ",
    b"_method",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            1 if !out.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 if at < out.len() => out[at] = rng.next() as u8,
            _ => {
                let from = rng.below(out.len().max(1));
                let piece: Vec<u8> = out.iter().skip(from).take(8).copied().collect();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

#[test]
fn every_target_holds_on_its_corpus_and_mutations_of_it() {
    let root = crate::common::repo_root().join("fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        seeds.sort();
        assert!(seeds.len() >= 5, "{name}: {} seeds", seeds.len());
        for seed in &seeds {
            target(seed);
        }
        let mut rng = Rng(0x5eed_0000 + name.len() as u64);
        let rounds = if *name == "config" { 300 } else { 3000 };
        for _ in 0..rounds {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed);
            let result = std::panic::catch_unwind(|| target(&input));
            if result.is_err() {
                panic!("{name} failed on {:?}", String::from_utf8_lossy(&input));
            }
        }
    }
}
