#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use blindwatch_common::{IdentifierKind, normalise};
use blindwatch_contract::Contract;
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::Tokenizer;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_partner::{
    DEFAULT_TOKEN_CACHE_LIMIT, Encoding, InputFormat, SealOptions, SealOutcome, seal,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use proptest::prelude::*;

const HEADER: &str =
    "visit_id,id_number,patient_name,phone,hospital,department,diagnosis_group,visit_date";
const ROWS: &[&str] = &[
    "V1,11010519491231002X,张三,13812345678,临江区人民医院,emergency,injury,2026-11-01",
    "V2, 110105491231002 ,张三,+86 138-1234-5678,临江区人民医院,psychiatry,psychiatric,2026/11/02",
    "V3,110105194912310021,李四,,临江区人民医院,surgery,injury,2026-11-03",
    "V4,,王五,,临江区人民医院,surgery,injury,2026-11-03",
    "V5,４４０５２４１８８００１０１００１４,赵六,13900000000,临江区人民医院,internal,other,2026-11-04",
    "V6,440524188001010014,赵六,12345,临江区人民医院,internal,other,not-a-date",
];

struct Keys {
    signing: SigningKey,
    private: Arc<PlatformPrivateKey>,
    public: PlatformPublicKey,
    tokenizer: ConsortiumTokenizer,
}

fn keys() -> Keys {
    let (private, public) = PlatformPrivateKey::generate();
    Keys {
        signing: SigningKey::generate().unwrap(),
        private: Arc::new(private),
        public,
        tokenizer: ConsortiumTokenizer::new(&LinkageKey::from_bytes([3; 32])),
    }
}

fn contract() -> Contract {
    Contract::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets/hospital.visits.toml"),
    )
    .unwrap()
}

fn run(k: &Keys, input: &Path, format: InputFormat, out: &Path, seq: u64) -> SealOutcome {
    run_with(k, input, format, out, seq, 2, DEFAULT_TOKEN_CACHE_LIMIT)
}

fn run_with(
    k: &Keys,
    input: &Path,
    format: InputFormat,
    out: &Path,
    seq: u64,
    batch_rows: usize,
    token_cache_limit: usize,
) -> SealOutcome {
    seal(&SealOptions {
        contract: &contract(),
        input,
        format,
        partner: "hospital",
        signing_key: &k.signing,
        platform_key: &k.public,
        tokenizer: &k.tokenizer,
        sequence: seq,
        out_dir: out,
        batch_rows,
        token_cache_limit,
        progress: false,
    })
    .unwrap()
}

fn decrypt(k: &Keys, path: &Path) -> Vec<RecordBatch> {
    let retriever = PlatformKeyRetriever::new(k.private.clone(), Release::All);
    let options = ArrowReaderOptions::new()
        .with_file_decryption_properties(retriever.decryption_properties().unwrap());
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        std::fs::File::open(path).unwrap(),
        options,
    )
    .unwrap()
    .build()
    .unwrap()
    .map(|b| b.unwrap())
    .collect()
}

fn csv_text() -> String {
    let mut s = format!("{HEADER}\n");
    for r in ROWS {
        s.push_str(r);
        s.push('\n');
    }
    s
}

#[test]
fn utf8_gbk_and_parquet_exports_seal_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let utf8 = dir.path().join("v.csv");
    std::fs::write(&utf8, csv_text()).unwrap();
    let gbk = dir.path().join("v-gbk.csv");
    std::fs::write(&gbk, encoding_rs::GBK.encode(&csv_text()).0).unwrap();
    let parquet = dir.path().join("v.parquet");
    {
        let cols: Vec<&str> = HEADER.split(',').collect();
        let fields: Vec<arrow_schema::Field> = cols
            .iter()
            .map(|c| arrow_schema::Field::new(*c, arrow_schema::DataType::Utf8, true))
            .collect();
        let arrays: Vec<ArrayRef> = (0..cols.len())
            .map(|i| {
                Arc::new(StringArray::from(
                    ROWS.iter().map(|r| r.split(',').nth(i)).collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        let batch =
            RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), arrays).unwrap();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&parquet).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    let a = run(&k, &utf8, InputFormat::Auto, &dir.path().join("a"), 1);
    let b = run(&k, &gbk, InputFormat::Auto, &dir.path().join("b"), 1);
    let c = run(
        &k,
        &gbk,
        InputFormat::Csv(Encoding::Gbk),
        &dir.path().join("c"),
        1,
    );
    let d = run(&k, &parquet, InputFormat::Auto, &dir.path().join("d"), 1);

    // V3 (check digit), V4 (blank id), V6 (bad date) are rejected; V6's bad phone alone would only null it.
    assert_eq!(a.manifest.input_rows, 6);
    assert_eq!(a.manifest.row_count, 3);
    let reasons: Vec<_> = a
        .manifest
        .rejected_rows
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    assert_eq!(
        reasons,
        [
            "id_number:blank=1",
            "id_number:id_check_digit=1",
            "visit_date:bad_date=1"
        ]
    );
    // The outbox holds only what is sent; the report stays beside it.
    let outbox = a.package.parquet.parent().unwrap();
    let mut sent: Vec<_> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sent.sort();
    let mut package = vec![a.package.parquet.clone(), a.package.manifest.clone()];
    package.sort();
    assert_eq!(sent, package);
    assert!(!a.rejects_report.starts_with(outbox));
    let report = std::fs::read_to_string(&a.rejects_report).unwrap();
    assert_eq!(
        report,
        "row,reason\n3,id_number:id_check_digit\n4,id_number:blank\n6,visit_date:bad_date\n"
    );
    // Two spellings of one person and one of another: 2 distinct persons, 2 distinct phones.
    assert_eq!(a.distinct_tokenised, 4);

    let rows = |o: &SealOutcome| {
        decrypt(&k, &o.package.parquet)
            .iter()
            .map(|b| {
                arrow_cast::pretty::pretty_format_batches(std::slice::from_ref(b))
                    .unwrap()
                    .to_string()
            })
            .collect::<String>()
    };
    let expected = rows(&a);
    assert!(expected.contains("2026-11-02"), "{expected}");
    for other in [&b, &c, &d] {
        assert_eq!(other.manifest.row_count, 3);
        assert_eq!(rows(other), expected);
    }
    // No raw identifier in the sealed schema.
    let schema: Vec<_> = a.manifest.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        schema,
        [
            "visit_id",
            "person",
            "phone",
            "hospital",
            "department",
            "diagnosis_group",
            "visit_date"
        ]
    );
}

#[test]
fn a_wrong_header_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let input = dir.path().join("v.csv");
    std::fs::write(&input, csv_text().replace("patient_name", "name")).unwrap();
    let out = dir.path().join("out");
    let err = seal(&SealOptions {
        contract: &contract(),
        input: &input,
        format: InputFormat::Auto,
        partner: "hospital",
        signing_key: &k.signing,
        platform_key: &k.public,
        tokenizer: &k.tokenizer,
        sequence: 1,
        out_dir: &out,
        batch_rows: 1024,
        token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
        progress: false,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unexpected column `name`") && err.contains("missing column `patient_name`"),
        "{err}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

/// An 18-digit ID number with a valid GB 11643 check digit, one per `n`.
fn id_number(n: u32) -> String {
    let body = format!(
        "1101051980{:02}{:02}{:03}",
        1 + n / 900 % 12,
        1 + n / 30 % 28,
        n % 1000
    );
    let check = blindwatch_common::idcard::check_digit(body.as_bytes()).unwrap();
    format!("{body}{}", check as char)
}

/// An export whose persons (drawn from `people`) and phones repeat across batches, with
/// some blank optional phones; `picks` chooses each row's person and phone.
fn repeating_export(picks: &[(u32, u32)], people: u32) -> String {
    let mut s = format!("{HEADER}\n");
    for (i, (p, ph)) in picks.iter().enumerate() {
        let person = id_number(p % people);
        let phone = if ph % 5 == 0 {
            String::new()
        } else {
            format!("1380000{:04}", ph % 40)
        };
        s.push_str(&format!(
            "V{i},{person},name,{phone},h,emergency,injury,2026-11-01\n"
        ));
    }
    s
}

/// Seals `csv` with the given batch size and cache limit and checks that every row's token
/// equals a direct tokenisation of its raw value, and that the manifest counts them.
fn every_token_is_its_own_values(csv: &str, batch_rows: usize, limit: usize) {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let input = dir.path().join("v.csv");
    std::fs::write(&input, csv).unwrap();
    let outcome = run_with(
        &k,
        &input,
        InputFormat::Auto,
        &dir.path().join("out"),
        1,
        batch_rows,
        limit,
    );
    let raw: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].to_owned(), f[3].to_owned())
        })
        .collect();
    assert_eq!(outcome.manifest.row_count as usize, raw.len());
    let direct = |kind: IdentifierKind, value: &str| -> Option<[u8; 16]> {
        if value.is_empty() {
            return None;
        }
        let id = normalise(kind, value).unwrap();
        Some(*k.tokenizer.tokenize(&[&id]).unwrap()[0].as_bytes())
    };
    let mut row = 0;
    let (mut persons, mut phones) = (0u64, 0u64);
    for batch in decrypt(&k, &outcome.package.parquet) {
        let person = batch
            .column_by_name("person")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::FixedSizeBinaryArray>()
            .unwrap();
        let phone = batch
            .column_by_name("phone")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::FixedSizeBinaryArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            let (raw_person, raw_phone) = &raw[row];
            let got = |a: &arrow_array::FixedSizeBinaryArray| -> Option<[u8; 16]> {
                use arrow_array::Array;
                (!a.is_null(i)).then(|| a.value(i).try_into().unwrap())
            };
            assert_eq!(
                got(person),
                direct(IdentifierKind::Person, raw_person),
                "row {row}: person token (batch {batch_rows}, limit {limit})"
            );
            assert_eq!(
                got(phone),
                direct(IdentifierKind::Phone, raw_phone),
                "row {row}: phone token (batch {batch_rows}, limit {limit})"
            );
            persons += 1;
            phones += u64::from(!raw_phone.is_empty());
            row += 1;
        }
    }
    assert_eq!(row, raw.len());
    assert_eq!(
        outcome.manifest.token_counts,
        std::collections::BTreeMap::from([
            ("person".to_owned(), persons),
            ("phone".to_owned(), phones)
        ])
    );
}

/// The bug this guards against: the in-memory cache was emptied after a batch's new values
/// were tokenised, and every row whose value had been cached earlier became a null.
#[test]
fn a_tiny_token_cache_never_turns_a_valid_identifier_into_a_null() {
    // Thirteen people and seventeen phones, over and over: every batch repeats values the
    // batches before it have cached, and the cache starts over every few batches.
    let picks: Vec<(u32, u32)> = (0..600u32).map(|i| (i % 13, i % 17 + 1)).collect();
    let csv = repeating_export(&picks, 13);
    for (batch_rows, limit) in [(16, 7), (16, 30), (5, 9), (1, 1), (600, 7)] {
        every_token_is_its_own_values(&csv, batch_rows, limit);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tokens_are_right_whatever_the_batch_size_and_cache_limit(
        picks in proptest::collection::vec((0u32..1000, 0u32..1000), 1..300),
        people in 1u32..80,
        batch_rows in 1usize..64,
        limit in 0usize..40,
    ) {
        every_token_is_its_own_values(&repeating_export(&picks, people), batch_rows, limit);
    }
}
