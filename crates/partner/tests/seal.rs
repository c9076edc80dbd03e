#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use blindwatch_contract::Contract;
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_partner::{Encoding, InputFormat, SealOptions, SealOutcome, seal};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

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
        batch_rows: 2,
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
