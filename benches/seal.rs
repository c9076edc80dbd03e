//! Partner-side throughput: normalise + tokenise, and whole-file sealing (rows/s, MB/s).
//! `cargo bench -p blindwatch-bench --bench seal`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;

use blindwatch_common::{IdentifierKind, idcard, normalise};
use blindwatch_contract::Contract;
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_partner::{InputFormat, SealOptions, seal};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

pub fn id_number(i: u64) -> String {
    let (year, month, day) = (1950 + i % 50, 1 + i / 50 % 12, 1 + i / 600 % 28);
    let first17 = format!("110105{year:04}{month:02}{day:02}{:03}", i / 16_800 % 1000);
    let check = idcard::check_digit(first17.as_bytes()).unwrap() as char;
    format!("{first17}{check}")
}

pub fn write_visits_csv(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "visit_id,id_number,patient_name,phone,hospital,department,diagnosis_group,visit_date"
    )
    .unwrap();
    for i in 0..rows {
        writeln!(
            f,
            "V{i:010},{},张三,1380000{:04},临江区人民医院,emergency,injury,2026-{:02}-{:02}",
            id_number(i % (rows / 3 + 1)),
            i % 10_000,
            1 + i % 12,
            1 + i % 28
        )
        .unwrap();
    }
}

pub fn contract() -> Contract {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets/hospital.visits.toml");
    Contract::load(&path).unwrap()
}

fn bench(c: &mut Criterion) {
    let tokenizer = ConsortiumTokenizer::new(&LinkageKey::from_bytes([7; 32]));
    let ids: Vec<String> = (0..10_000).map(|i| format!(" {} ", id_number(i))).collect();
    let mut g = c.benchmark_group("normalise_tokenise");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("id_number", |b| {
        b.iter(|| {
            for id in &ids {
                let raw = normalise(IdentifierKind::Person, id).unwrap();
                criterion::black_box(tokenizer.tokenize_one(&raw));
            }
        })
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("visits.csv");
    let rows = 100_000;
    write_visits_csv(&input, rows);
    let bytes = std::fs::metadata(&input).unwrap().len();
    let contract = contract();
    let key = SigningKey::generate().unwrap();
    let (_, platform) = PlatformPrivateKey::generate();
    let mut seq = 0;
    // Criterion reports MB/s; rows/s = rows / time.
    println!("seal input: {rows} rows, {bytes} bytes of CSV");
    let mut g = c.benchmark_group("seal_100k_rows");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("csv", |b| {
        b.iter(|| {
            seq += 1;
            let out = dir.path().join(format!("out{seq}"));
            seal_once(&contract, &input, &key, &platform, &tokenizer, seq, &out);
            std::fs::remove_dir_all(out).unwrap();
        })
    });
    g.finish();
}

/// Seals `input` as the hospital with consortium tokens.
pub fn seal_once(
    contract: &Contract,
    input: &Path,
    key: &SigningKey,
    platform: &PlatformPublicKey,
    tokenizer: &ConsortiumTokenizer,
    sequence: u64,
    out: &Path,
) -> blindwatch_partner::SealOutcome {
    seal(&SealOptions {
        contract,
        input,
        format: InputFormat::Auto,
        partner: "hospital",
        signing_key: key,
        platform_key: platform,
        tokenizer,
        sequence,
        out_dir: out,
        batch_rows: 65_536,
        token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
        progress: false,
    })
    .unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
