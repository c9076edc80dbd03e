#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The engine over real sealed packages: a temporary platform data directory with
//! contributions sealed by `blindwatch_partner::seal` and recorded in the catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use blindwatch_contract::{Contract, ContractSet};
use blindwatch_crypto::manifest::Manifest;
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey};
use blindwatch_engine::{AnalysisError, ColumnUse, Engine, EngineError};
use blindwatch_partner::{Encoding, InputFormat, SealOptions, seal};
use blindwatch_store::{Catalog, DataDir, NewContribution};

const VISITS: &str = r#"
partner = "hospital"
dataset = "visits"
mode = "append"
privacy_unit = { columns = ["person"], max_rows = 10 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", uses = ["join", "aggregate"] },
  { name = "patient_name", type = "utf8", role = "drop" },
  { name = "department", type = "utf8", role = "attribute", uses = ["filter", "group"] },
  { name = "visit_date", type = "date", role = "attribute", uses = ["filter", "aggregate"] },
]
"#;

const WANTED: &str = r#"
partner = "police"
dataset = "wanted"
mode = "replace"
privacy_unit = { columns = ["person"], max_rows = 1 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", uses = ["join", "aggregate"] },
  { name = "name", type = "utf8", role = "drop" },
  { name = "station", type = "utf8", role = "attribute", uses = ["filter", "group", "reveal"] },
  { name = "danger_level", type = "int64", role = "attribute", uses = ["filter", "aggregate"] },
]
"#;

const INCIDENTS: &str = r#"
partner = "police"
dataset = "incidents"
privacy_unit = { columns = ["caller"], max_rows = 10 }
columns = [
  { name = "reported_at", type = "timestamp", role = "attribute", uses = ["filter", "group", "aggregate"] },
  { name = "category", type = "utf8", role = "attribute", uses = ["filter", "group"] },
  { name = "caller_id_number", type = "utf8", role = "identifier", kind = "person", token = "caller", required = false, uses = ["join"] },
  { name = "loss", type = "float64", role = "attribute", required = false, uses = ["aggregate"] },
  { name = "injured", type = "bool", role = "attribute", uses = ["filter"] },
  { name = "officers", type = "int64", role = "attribute", uses = ["aggregate"] },
  { name = "day", type = "date", role = "attribute", uses = ["group"] },
]
"#;

const EMPLOYMENT: &str = r#"
partner = "tax"
dataset = "employment"
mode = "replace"
privacy_unit = { columns = ["person"], max_rows = 3 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", uses = ["join", "aggregate"] },
  { name = "name", type = "utf8", role = "drop" },
  { name = "status", type = "utf8", role = "attribute", uses = ["filter", "group"] },
]
"#;

/// A valid 18-digit ID number (GB 11643 check digit) for person `i`.
fn id_number(i: usize) -> String {
    let first17 = format!("11010119900101{:03}", i);
    let check = blindwatch_common::idcard::check_digit(first17.as_bytes()).unwrap();
    format!("{first17}{}", check as char)
}

const DEPARTMENTS: [&str; 3] = ["psychiatry", "emergency", "dermatology"];
const STATIONS: [&str; 3] = ["east", "west", "north"];

/// Visit rows: (id number, department, date as YYYY-MM-DD).
fn visit_rows(range: std::ops::Range<usize>) -> Vec<(String, &'static str, String)> {
    range
        .map(|i| {
            (
                id_number(i % 10),
                DEPARTMENTS[i % 3],
                format!("2026-10-{:02}", 1 + (i * 7) % 28),
            )
        })
        .collect()
}

fn visits_csv(rows: &[(String, &str, String)]) -> String {
    let mut out = String::from("id_number,patient_name,department,visit_date\n");
    for (id, dept, date) in rows {
        out.push_str(&format!("{id},Someone,{dept},{date}\n"));
    }
    out
}

/// Wanted rows: (id number, station, danger level).
fn wanted_rows(people: &[usize]) -> Vec<(String, &'static str, i64)> {
    people
        .iter()
        .enumerate()
        .map(|(k, p)| (id_number(*p), STATIONS[k % 3], k as i64 + 1))
        .collect()
}

fn wanted_csv(rows: &[(String, &str, i64)]) -> String {
    let mut out = String::from("id_number,name,station,danger_level\n");
    for (id, station, level) in rows {
        out.push_str(&format!("{id},Someone,{station},{level}\n"));
    }
    out
}

struct Platform {
    _tmp: tempfile::TempDir,
    data: DataDir,
    scratch: PathBuf,
    public: PlatformPublicKey,
    partner_key: SigningKey,
    catalog: Catalog,
    contracts: ContractSet,
}

impl Platform {
    async fn new() -> Platform {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::new(tmp.path().join("data"));
        let (private, public) = PlatformPrivateKey::generate();
        private.write(&data.platform_private_key()).unwrap();
        std::fs::create_dir_all(data.contracts_dir()).unwrap();
        let mut contracts = Vec::new();
        for text in [VISITS, WANTED, EMPLOYMENT, INCIDENTS] {
            let contract = Contract::parse(text, Path::new("c.toml")).unwrap();
            std::fs::write(
                data.contracts_dir()
                    .join(format!("{}.toml", contract.table_name())),
                text,
            )
            .unwrap();
            contracts.push(contract);
        }
        let catalog = Catalog::open(&data.catalog_path(), true).await.unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        Platform {
            _tmp: tmp,
            data,
            scratch,
            public,
            partner_key: SigningKey::generate().unwrap(),
            catalog,
            contracts: ContractSet::from_contracts(contracts),
        }
    }

    fn contract(&self, table: &str) -> &Contract {
        self.contracts.get(table).unwrap()
    }

    /// Seals `csv` as contribution `sequence` of `table` and stores it as ingest would.
    async fn contribute(
        &self,
        table: &str,
        csv: &str,
        sequence: u64,
        linkage: &LinkageKey,
    ) -> Manifest {
        let contract = self.contract(table);
        let input = self.scratch.join(format!("{table}.{sequence}.csv"));
        std::fs::write(&input, csv).unwrap();
        let out_dir = self.scratch.join(format!("{table}.{sequence}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let tokenizer = ConsortiumTokenizer::new(linkage);
        let outcome = seal(&SealOptions {
            contract,
            input: &input,
            format: InputFormat::Csv(Encoding::Utf8),
            partner: &contract.partner,
            signing_key: &self.partner_key,
            platform_key: &self.public,
            tokenizer: &tokenizer,
            sequence,
            out_dir: &out_dir,
            batch_rows: 1000,
            token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
            progress: false,
        })
        .unwrap();
        let m = outcome.manifest;
        assert_eq!(
            m.rejected_rows.values().sum::<u64>(),
            0,
            "fixture rows must all be valid"
        );
        let dir = self.data.package_dir(&m.partner, &m.dataset);
        std::fs::create_dir_all(&dir).unwrap();
        let rel = |p: &Path| -> String {
            let name = p.file_name().unwrap();
            std::fs::copy(p, dir.join(name)).unwrap();
            format!(
                "packages/{}/{}/{}",
                m.partner,
                m.dataset,
                name.to_string_lossy()
            )
        };
        let file_path = rel(&outcome.package.parquet);
        let manifest_path = rel(&outcome.package.manifest);
        self.record(&m, &file_path, &manifest_path).await;
        m
    }

    async fn record(&self, m: &Manifest, file_path: &str, manifest_path: &str) {
        self.catalog
            .record_contribution(&NewContribution {
                table: &m.table_name(),
                partner: &m.partner,
                dataset: &m.dataset,
                sequence: m.sequence,
                file_path,
                manifest_path,
                file_sha256: &m.file_sha256,
                file_bytes: m.file_bytes,
                row_count: m.row_count,
                schema_digest: &m.schema_digest,
                token_mode: &m.tokens.mode.to_string(),
                token_key_id: m.tokens.key_id.as_str(),
                created_at: &m.created_at,
            })
            .await
            .unwrap();
    }

    fn stored(&self, m: &Manifest) -> PathBuf {
        self.data
            .package_dir(&m.partner, &m.dataset)
            .join(&m.file_name)
    }

    async fn engine(&self) -> Engine {
        Engine::open(&self.data).await.unwrap()
    }
}

async fn run(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    let plan = engine
        .plan(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    engine
        .execute(&plan)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).unwrap();
    b.column(0).as_primitive::<Int64Type>().value(0)
}

fn day(date: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// Two sealed tables joined on person tokens give the numbers computed straight from the
/// CSV fixtures; the plan releases exactly the columns it reads.
#[tokio::test]
async fn join_over_sealed_tables_matches_the_fixture() {
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let visits = visit_rows(0..60);
    let wanted = wanted_rows(&[0, 2, 4, 6, 8, 11, 12]);
    p.contribute("hospital.visits", &visits_csv(&visits), 1, &linkage)
        .await;
    p.contribute("police.wanted", &wanted_csv(&wanted), 1, &linkage)
        .await;
    let engine = p.engine().await;

    let sql = "SELECT w.station, count(*) AS visits, count(DISTINCT v.person) AS people,
                      max(v.visit_date) AS last_visit, sum(w.danger_level) AS danger
               FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
               WHERE v.department <> 'dermatology'
               GROUP BY w.station ORDER BY w.station";
    let plan = engine.plan(sql).await.unwrap();
    assert_eq!(
        plan.released(),
        &BTreeMap::from([
            (
                "hospital.visits".to_string(),
                BTreeSet::from([
                    "department".to_string(),
                    "person".to_string(),
                    "visit_date".to_string()
                ])
            ),
            (
                "police.wanted".to_string(),
                BTreeSet::from([
                    "danger_level".to_string(),
                    "person".to_string(),
                    "station".to_string()
                ])
            ),
        ])
    );
    assert_eq!(plan.contributions().len(), 2);
    let batches = engine.execute(&plan).await.unwrap();

    // The same numbers straight from the fixture rows.
    let mut expected: BTreeMap<&str, (i64, BTreeSet<String>, i32, i64)> = BTreeMap::new();
    for (wid, station, level) in &wanted {
        for (vid, dept, date) in &visits {
            if vid == wid && *dept != "dermatology" {
                let e = expected
                    .entry(station)
                    .or_insert((0, BTreeSet::new(), i32::MIN, 0));
                e.0 += 1;
                e.1.insert(vid.clone());
                e.2 = e.2.max(day(date));
                e.3 += level;
            }
        }
    }
    let mut got: BTreeMap<String, (i64, i64, i32, i64)> = BTreeMap::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            got.insert(
                b.column(0).as_string::<i32>().value(r).to_owned(),
                (
                    b.column(1).as_primitive::<Int64Type>().value(r),
                    b.column(2).as_primitive::<Int64Type>().value(r),
                    b.column(3).as_primitive::<Date32Type>().value(r),
                    b.column(4).as_primitive::<Int64Type>().value(r),
                ),
            );
        }
    }
    let expected: BTreeMap<String, (i64, i64, i32, i64)> = expected
        .into_iter()
        .map(|(s, (n, people, last, danger))| {
            (s.to_owned(), (n, people.len() as i64, last, danger))
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // Streaming gives the same rows.
    let mut stream = engine.execute_stream(&plan).await.unwrap();
    let mut rows = 0;
    while let Some(b) = futures::StreamExt::next(&mut stream).await {
        rows += b.unwrap().num_rows();
    }
    assert_eq!(rows, got.len());

    // The same query written with a CTE, a subquery and an implicit join.
    let sql = "WITH v AS (SELECT person AS p, visit_date AS d FROM hospital.visits WHERE department <> 'dermatology')
               SELECT w.station, count(*) AS visits, count(DISTINCT v.p) AS people, max(v.d) AS last_visit,
                      sum(w.danger_level) AS danger
               FROM (SELECT * FROM police.wanted) w, v
               WHERE v.p = w.person
               GROUP BY w.station ORDER BY w.station";
    let plan = engine.plan(sql).await.unwrap();
    assert_eq!(
        plan.analysis().uses_of("hospital.visits", "person"),
        BTreeSet::from([
            ColumnUse::Join,
            ColumnUse::Aggregate {
                function: "count".into(),
                distinct: true
            }
        ])
    );
    let again = engine.execute(&plan).await.unwrap();
    let rows: usize = again.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, got.len());
    assert_eq!(rows_as_text(&batches), rows_as_text(&again));
}

/// The rows of a result, as debug strings (for comparing two results; test data only).
fn rows_as_text(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cols: Vec<String> = b
                .columns()
                .iter()
                .map(|c| format!("{:?}", c.slice(r, 1)))
                .collect();
            out.push(cols.join("|"));
        }
    }
    out
}

/// A plan cannot read a column whose key was not released: withholding one column the plan
/// reads makes execution fail with an error naming it, while a plan over other columns of
/// the same file runs (and never has that column's key released).
#[tokio::test]
async fn unreleased_columns_cannot_be_read() {
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let visits = visit_rows(0..30);
    p.contribute("hospital.visits", &visits_csv(&visits), 1, &linkage)
        .await;
    let engine = p.engine().await;

    let plan = engine
        .plan("SELECT department, count(*) AS n FROM hospital.visits GROUP BY department")
        .await
        .unwrap();
    assert_eq!(
        plan.released()["hospital.visits"],
        BTreeSet::from(["department".to_string()])
    );
    let withheld = plan.withhold("hospital.visits", "department");
    let err = engine.execute(&withheld).await.unwrap_err();
    match &err {
        EngineError::NotReleased {
            table,
            column,
            sequence,
            file,
        } => {
            assert_eq!(
                (table.as_str(), column.as_str(), *sequence),
                ("hospital.visits", "department", 1)
            );
            assert!(file.ends_with("hospital.visits.00000001.parquet"), "{file}");
        }
        other => panic!("expected a refused key, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("`department`") && message.contains("not released"),
        "{message}"
    );

    // Other columns of the same file: department, person keys are never released.
    let plan = engine
        .plan("SELECT count(*) AS n, max(visit_date) AS last FROM hospital.visits")
        .await
        .unwrap();
    assert_eq!(
        plan.released()["hospital.visits"],
        BTreeSet::from(["visit_date".to_string()])
    );
    let batches = engine.execute(&plan).await.unwrap();
    assert_eq!(single_i64(&batches), visits.len() as i64);
    let last = batches[0].column(1).as_primitive::<Date32Type>().value(0);
    assert_eq!(last, visits.iter().map(|v| day(&v.2)).max().unwrap());

    // count(*) needs no column key at all.
    let plan = engine
        .plan("SELECT count(*) FROM hospital.visits")
        .await
        .unwrap();
    assert!(plan.released()["hospital.visits"].is_empty());
    assert_eq!(
        single_i64(&engine.execute(&plan).await.unwrap()),
        visits.len() as i64
    );

    // Withholding a column the plan does not read changes nothing.
    let plan = engine
        .plan("SELECT count(*) FROM hospital.visits WHERE department = 'psychiatry'")
        .await
        .unwrap()
        .withhold("hospital.visits", "person");
    let psych = visits.iter().filter(|v| v.1 == "psychiatry").count() as i64;
    assert_eq!(single_i64(&engine.execute(&plan).await.unwrap()), psych);

    // The platform retriever under a release that omits a column refuses exactly that key.
    let key = Arc::new(PlatformPrivateKey::read(&p.data.platform_private_key()).unwrap());
    let retriever = PlatformKeyRetriever::new(
        key,
        Release::Only(BTreeSet::from(["visit_date".to_string()])),
    );
    let file = std::fs::File::open(
        p.data
            .package_dir("hospital", "visits")
            .join("hospital.visits.00000001.parquet"),
    )
    .unwrap();
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
        .with_file_decryption_properties(retriever.decryption_properties().unwrap());
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
            file, options,
        )
        .unwrap();
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["department"]);
    let read: Result<Vec<_>, _> = builder.with_projection(mask).build().unwrap().collect();
    assert!(read.is_err());
    assert!(retriever.refused_columns().contains("department"));
}

/// A flipped byte in a stored file refuses the query before anything is decrypted, naming
/// the dataset and the contribution — even when the query reads none of the damaged column.
#[tokio::test]
async fn tampered_file_is_refused_before_decryption() {
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let m1 = p
        .contribute(
            "hospital.visits",
            &visits_csv(&visit_rows(0..20)),
            1,
            &linkage,
        )
        .await;
    p.contribute(
        "hospital.visits",
        &visits_csv(&visit_rows(20..30)),
        2,
        &linkage,
    )
    .await;
    let engine = p.engine().await;
    let plan = engine
        .plan("SELECT count(*) FROM hospital.visits")
        .await
        .unwrap();
    assert_eq!(single_i64(&engine.execute(&plan).await.unwrap()), 30);

    // File times are as coarse as the kernel's clock tick: let one pass, so the change is
    // visible in the modification time the hash cache is keyed by.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let path = p.stored(&m1);
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    // The same engine notices (the cached hash is tied to the file's size and mtime) and a
    // fresh one too.
    let fresh = p.engine().await;
    for engine in [&engine, &fresh] {
        let plan = engine
            .plan("SELECT count(*) FROM hospital.visits")
            .await
            .unwrap();
        let err = engine.execute(&plan).await.unwrap_err();
        match &err {
            EngineError::Integrity {
                table,
                sequence,
                file,
                what,
            } => {
                assert_eq!((table.as_str(), *sequence), ("hospital.visits", 1));
                assert!(file.ends_with("hospital.visits.00000001.parquet"));
                assert!(what.contains("SHA-256"), "{what}");
            }
            other => panic!("expected an integrity error, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("hospital.visits contribution 1")
                && message.contains("before anything was decrypted"),
            "{message}"
        );
        assert!(matches!(
            engine.verify_table("hospital.visits").await,
            Err(EngineError::Integrity { .. })
        ));
    }
    // Restoring the file restores the query.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(single_i64(&engine.execute(&plan).await.unwrap()), 30);

    // A manifest that no longer matches is refused too.
    let manifest = p
        .data
        .package_dir("hospital", "visits")
        .join("hospital.visits.00000002.manifest.json");
    let mut m = Manifest::peek_unverified(
        &blindwatch_crypto::sign::Envelope::from_json(&std::fs::read(&manifest).unwrap()).unwrap(),
    )
    .unwrap();
    m.file_sha256 = "00".repeat(32);
    std::fs::write(&manifest, m.sign(&p.partner_key).to_json()).unwrap();
    let err = engine.execute(&plan).await.unwrap_err().to_string();
    assert!(
        err.contains("contribution 2") && err.contains("signed manifest"),
        "{err}"
    );
}

/// A package whose hash matches but whose encrypted pages are damaged (sealed damaged) fails
/// with an error naming the dataset and contribution; other columns still read. The engine
/// run with another platform key cannot open any key.
#[tokio::test]
async fn decryption_failures_name_the_contribution() {
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let rows = visit_rows(0..40);
    let m = p
        .contribute(
            "police.wanted",
            &wanted_csv(&wanted_rows(&[1, 2, 3])),
            1,
            &linkage,
        )
        .await;
    // Seal visits outside the data dir, damage the department column's pages, then sign and
    // record the damaged file as if the partner had sealed it so.
    let contract = p.contract("hospital.visits");
    let input = p.scratch.join("damaged.csv");
    std::fs::write(&input, visits_csv(&rows)).unwrap();
    let out_dir = p.scratch.join("damaged");
    std::fs::create_dir_all(&out_dir).unwrap();
    let tokenizer = ConsortiumTokenizer::new(&linkage);
    let outcome = seal(&SealOptions {
        contract,
        input: &input,
        format: InputFormat::Csv(Encoding::Utf8),
        partner: "hospital",
        signing_key: &p.partner_key,
        platform_key: &p.public,
        tokenizer: &tokenizer,
        sequence: 1,
        out_dir: &out_dir,
        batch_rows: 1000,
        token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
        progress: false,
    })
    .unwrap();
    let mut bytes = std::fs::read(&outcome.package.parquet).unwrap();
    let key = Arc::new(PlatformPrivateKey::read(&p.data.platform_private_key()).unwrap());
    let (start, len) = {
        let retriever = PlatformKeyRetriever::new(key.clone(), Release::All);
        let file = std::fs::File::open(&outcome.package.parquet).unwrap();
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_file_decryption_properties(retriever.decryption_properties().unwrap());
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
                file, options,
            )
            .unwrap();
        let rg = builder.metadata().row_group(0);
        let col = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "department")
            .unwrap();
        let (s, l) = col.byte_range();
        (s as usize, l as usize)
    };
    bytes[start + len / 2] ^= 0x01;
    let mut m2 = outcome.manifest.clone();
    m2.file_sha256 = blindwatch_crypto::sha256_hex(&bytes);
    let dir = p.data.package_dir("hospital", "visits");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&m2.file_name), &bytes).unwrap();
    std::fs::write(
        dir.join("hospital.visits.00000001.manifest.json"),
        m2.sign(&p.partner_key).to_json(),
    )
    .unwrap();
    p.record(
        &m2,
        &format!("packages/hospital/visits/{}", m2.file_name),
        "packages/hospital/visits/hospital.visits.00000001.manifest.json",
    )
    .await;

    let engine = p.engine().await;
    let plan = engine
        .plan("SELECT department, count(*) FROM hospital.visits GROUP BY department")
        .await
        .unwrap();
    let err = engine.execute(&plan).await.unwrap_err();
    assert!(matches!(err, EngineError::Decrypt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("hospital.visits contribution 1"),
        "{message}"
    );
    // The undamaged columns of the same file read.
    let n = single_i64(&run(&engine, "SELECT count(visit_date) FROM hospital.visits").await);
    assert_eq!(n, rows.len() as i64);

    // Another platform key opens nothing, and says which contribution.
    let (other, _) = PlatformPrivateKey::generate();
    let wrong = Engine::from_parts(
        &p.data,
        Arc::new(other),
        p.catalog.clone(),
        p.contracts.clone(),
    )
    .await
    .unwrap();
    let plan = wrong
        .plan("SELECT count(*) FROM police.wanted")
        .await
        .unwrap();
    match wrong.execute(&plan).await.unwrap_err() {
        EngineError::Keys {
            table,
            sequence,
            reason,
            ..
        } => {
            assert_eq!((table.as_str(), sequence), ("police.wanted", m.sequence));
            assert!(reason.contains("another platform key"), "{reason}");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
}

/// Append contracts read every contribution, replace contracts only the latest.
#[tokio::test]
async fn append_and_replace() {
    // The engine and its futures can be shared by a multi-threaded server.
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    p.contribute(
        "hospital.visits",
        &visits_csv(&visit_rows(0..12)),
        1,
        &linkage,
    )
    .await;
    p.contribute(
        "police.wanted",
        &wanted_csv(&wanted_rows(&[0, 1, 2, 3, 4, 5])),
        1,
        &linkage,
    )
    .await;
    let mut engine = p.engine().await;
    assert!(
        !engine.refresh_if_changed().await.unwrap(),
        "nothing changed"
    );
    send_sync(&engine);
    let plan = engine.plan("SELECT 1").await.unwrap();
    send_sync(&plan);
    send(&engine.execute(&plan));
    send(&engine.plan("SELECT 1"));
    let count_visits = "SELECT count(*) FROM hospital.visits";
    let count_wanted = "SELECT count(*) FROM police.wanted";
    assert_eq!(single_i64(&run(&engine, count_visits).await), 12);
    assert_eq!(single_i64(&run(&engine, count_wanted).await), 6);
    // Tax has a contract and no data yet: an empty table.
    assert_eq!(
        single_i64(&run(&engine, "SELECT count(*) FROM tax.employment").await),
        0
    );

    p.contribute(
        "hospital.visits",
        &visits_csv(&visit_rows(12..20)),
        2,
        &linkage,
    )
    .await;
    p.contribute(
        "police.wanted",
        &wanted_csv(&wanted_rows(&[7, 8])),
        2,
        &linkage,
    )
    .await;
    let stale = engine.plan(count_visits).await.unwrap();
    let before = engine.clone();
    assert!(
        engine.refresh_if_changed().await.unwrap(),
        "new contributions"
    );
    assert!(!engine.refresh_if_changed().await.unwrap(), "nothing since");
    // A clone taken before keeps its tables; the refreshed engine sees the new ones.
    assert_eq!(single_i64(&run(&before, count_visits).await), 12);
    assert_eq!(single_i64(&run(&engine, count_visits).await), 20);
    assert_eq!(single_i64(&run(&engine, count_wanted).await), 2);
    // A plan keeps reading what it was planned over.
    assert_eq!(single_i64(&engine.execute(&stale).await.unwrap()), 12);

    // A contract file written again counts as a change (contracts are loaded again too).
    let contract = std::fs::read_dir(p.data.contracts_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read(&contract).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&contract, [&text[..], b"\n"].concat()).unwrap();
    assert!(
        engine.refresh_if_changed().await.unwrap(),
        "a contract changed"
    );
    assert_eq!(single_i64(&run(&engine, count_visits).await), 20);

    let tables = engine.tables();
    let visits = tables.iter().find(|t| t.name == "hospital.visits").unwrap();
    assert_eq!(visits.current_sequences, [1, 2]);
    let wanted = tables.iter().find(|t| t.name == "police.wanted").unwrap();
    assert_eq!(wanted.current_sequences, [2]);
    assert_eq!(wanted.columns, ["person", "station", "danger_level"]);
    assert!(wanted.token_domain.as_ref().unwrap().mode == "consortium");

    // The replaced contribution's people are gone from joins.
    let n = single_i64(
        &run(
            &engine,
            "SELECT count(*) FROM police.wanted w JOIN hospital.visits v ON v.person = w.person",
        )
        .await,
    );
    let visits_rows = visit_rows(0..20);
    let expected = wanted_rows(&[7, 8])
        .iter()
        .map(|w| visits_rows.iter().filter(|v| v.0 == w.0).count())
        .sum::<usize>();
    assert_eq!(n, expected as i64);

    // A plan from another engine is refused.
    let other = p.engine().await;
    let foreign = other.plan(count_visits).await.unwrap();
    assert!(matches!(
        engine.execute(&foreign).await,
        Err(EngineError::ForeignPlan)
    ));
    // Unknown tables and statements are refused at plan time.
    assert!(matches!(
        engine.plan("SELECT * FROM visits").await,
        Err(EngineError::UnknownTable(_))
    ));
    assert!(matches!(
        engine.plan("SELECT * FROM hospital.nothing").await,
        Err(EngineError::UnknownTable(_))
    ));
    assert!(matches!(
        engine.plan("CREATE TABLE hospital.x AS SELECT 1").await,
        Err(EngineError::Analysis(AnalysisError::NotAQuery(_)))
    ));
}

/// Tokens made under different keys never join: across tables at plan time, and within one
/// table whose current contributions disagree.
#[tokio::test]
async fn token_key_mismatches_are_refused_at_plan_time() {
    let p = Platform::new().await;
    let key_a = LinkageKey::from_bytes([7; 32]);
    let key_b = LinkageKey::from_bytes([9; 32]);
    p.contribute(
        "police.wanted",
        &wanted_csv(&wanted_rows(&[0, 1, 2])),
        1,
        &key_a,
    )
    .await;
    p.contribute(
        "tax.employment",
        &format!(
            "id_number,name,status\n{},X,employed\n{},Y,unemployed\n",
            id_number(0),
            id_number(1)
        ),
        1,
        &key_b,
    )
    .await;
    p.contribute("hospital.visits", &visits_csv(&visit_rows(0..5)), 1, &key_a)
        .await;
    let engine = p.engine().await;

    // Joining wanted (key A) and employment (key B): refused, naming both columns.
    let sql = "SELECT t.status, count(*) FROM police.wanted w JOIN tax.employment t ON w.person = t.person GROUP BY t.status";
    match engine.plan(sql).await {
        Err(EngineError::Analysis(AnalysisError::MixedTokens(m))) => {
            let tables = BTreeSet::from([m.left.table.clone(), m.right.table.clone()]);
            assert_eq!(
                tables,
                BTreeSet::from(["police.wanted".to_string(), "tax.employment".to_string()])
            );
            assert_ne!(m.left_domain.key_id, m.right_domain.key_id);
        }
        other => panic!("expected a token-key refusal, got {other:?}"),
    }
    // Each table alone, and same-key joins, are fine.
    assert_eq!(
        single_i64(&run(&engine, "SELECT count(*) FROM tax.employment").await),
        2
    );
    run(
        &engine,
        "SELECT count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person",
    )
    .await;

    // Visits move to key B: the catalog accepts them only in a new token generation, and
    // from then on the table is that generation alone (its old rows are not mixed in).
    let key_b_id =
        blindwatch_crypto::token::Tokenizer::key_id(&ConsortiumTokenizer::new(&key_b)).to_string();
    p.catalog
        .start_token_generation("hospital.visits", "consortium", &key_b_id, "platform")
        .await
        .unwrap();
    p.contribute("hospital.visits", &visits_csv(&visit_rows(5..9)), 2, &key_b)
        .await;
    let engine = p.engine().await;
    assert_eq!(
        single_i64(&run(&engine, "SELECT count(*) FROM hospital.visits").await),
        4
    );
    let info = engine
        .tables()
        .into_iter()
        .find(|t| t.name == "hospital.visits")
        .unwrap();
    assert_eq!((info.problem, info.current_sequences), (None, vec![2]));
    assert!(matches!(
        engine
            .plan(
                "SELECT count(*) FROM police.wanted w JOIN hospital.visits v ON w.person = v.person"
            )
            .await,
        Err(EngineError::Analysis(AnalysisError::MixedTokens(_)))
    ));
}

/// The first 17 digits of a valid ID number for person `k` (k < 28 000).
fn person_17(k: usize) -> String {
    format!("11010119900{}{:02}{:03}", 1, 1 + k / 1000, k % 1000)
}

/// Rough timings on a larger fixture: `cargo test -p blindwatch-engine --test engine -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, not a check"]
async fn measure_join_over_sealed_tables() {
    let visits_n: usize = std::env::var("BW_VISITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let mut csv = String::from("id_number,patient_name,department,visit_date\n");
    for i in 0..visits_n {
        let first17 = person_17(i % 5000);
        let check = blindwatch_common::idcard::check_digit(first17.as_bytes()).unwrap() as char;
        csv.push_str(&format!(
            "{first17}{check},X,{},2026-10-{:02}\n",
            DEPARTMENTS[i % 3],
            1 + i % 28
        ));
    }
    let started = std::time::Instant::now();
    let m = p.contribute("hospital.visits", &csv, 1, &linkage).await;
    println!(
        "sealed {visits_n} visits ({} bytes) in {:?}",
        m.file_bytes,
        started.elapsed()
    );
    let mut wanted = String::from("id_number,name,station,danger_level\n");
    for i in (0..5000).step_by(5) {
        let first17 = person_17(i);
        let check = blindwatch_common::idcard::check_digit(first17.as_bytes()).unwrap() as char;
        wanted.push_str(&format!(
            "{first17}{check},X,{},{}\n",
            STATIONS[i % 3],
            i % 5
        ));
    }
    p.contribute("police.wanted", &wanted, 1, &linkage).await;

    let engine = p.engine().await;
    let sql = "SELECT w.station, count(*) AS visits, count(DISTINCT v.person) AS people, max(v.visit_date) AS last
               FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
               WHERE v.department <> 'dermatology' GROUP BY w.station";
    for round in 1..=3 {
        let t = std::time::Instant::now();
        let plan = engine.plan(sql).await.unwrap();
        let planned = t.elapsed();
        let batches = engine.execute(&plan).await.unwrap();
        println!(
            "round {round}: plan {planned:?}, plan+execute {:?} ({} rows){}",
            t.elapsed(),
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            if round == 1 {
                " — includes hashing the files"
            } else {
                ""
            }
        );
    }
    let t = std::time::Instant::now();
    let n = single_i64(&run(&engine, "SELECT count(*) FROM hospital.visits").await);
    println!("count(*) over {n} rows: {:?}", t.elapsed());
}

/// Every attribute type a contract can declare reads back with its contract type.
#[tokio::test]
async fn every_column_type_reads_back() {
    let p = Platform::new().await;
    let linkage = LinkageKey::from_bytes([7; 32]);
    let csv = format!(
        "reported_at,category,caller_id_number,loss,injured,officers,day\n\
         2026-11-03 08:00:01,theft,{},12.5,yes,2,2026-11-03\n\
         2026-11-03 09:30:00,dispute,,0.25,no,1,2026-11-03\n\
         2026-11-04 23:59:59,theft,{},,no,3,2026-11-04\n",
        id_number(1),
        id_number(1)
    );
    p.contribute("police.incidents", &csv, 1, &linkage).await;
    let engine = p.engine().await;
    let batches = run(
        &engine,
        "SELECT day, count(*) AS n, count(DISTINCT caller) AS callers, sum(loss) AS loss, sum(officers) AS officers,
                max(reported_at) AS last, count(*) FILTER (WHERE injured) AS injured
         FROM police.incidents WHERE category = 'theft' OR reported_at < TIMESTAMP '2026-11-03 09:00:00'
         GROUP BY day ORDER BY day",
    )
    .await;
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    assert_eq!(
        b.column(0).as_primitive::<Date32Type>().value(0),
        day("2026-11-03")
    );
    assert_eq!(b.column(1).as_primitive::<Int64Type>().values(), &[1, 1]);
    assert_eq!(b.column(2).as_primitive::<Int64Type>().values(), &[1, 1]);
    let loss = b
        .column(3)
        .as_primitive::<arrow_array::types::Float64Type>();
    assert_eq!((loss.value(0), loss.is_null(1)), (12.5, true));
    assert_eq!(b.column(4).as_primitive::<Int64Type>().values(), &[2, 3]);
    let last = b
        .column(5)
        .as_primitive::<arrow_array::types::TimestampSecondType>();
    let expected =
        chrono::NaiveDateTime::parse_from_str("2026-11-04 23:59:59", "%Y-%m-%d %H:%M:%S").unwrap();
    assert_eq!(last.value(1), expected.and_utc().timestamp());
    assert_eq!(b.column(6).as_primitive::<Int64Type>().values(), &[1, 0]);
}

/// The shipped contracts all give tables (empty before any contribution) that the design's
/// example model plans and runs over.
#[tokio::test]
async fn shipped_contracts_and_the_design_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let (private, _) = PlatformPrivateKey::generate();
    private.write(&data.platform_private_key()).unwrap();
    Catalog::open(&data.catalog_path(), true)
        .await
        .unwrap()
        .close()
        .await;
    std::fs::create_dir_all(data.contracts_dir()).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, data.contracts_dir().join(path.file_name().unwrap())).unwrap();
    }
    let engine = Engine::open(&data).await.unwrap();
    assert!(engine.tables().len() >= 6);
    assert!(
        engine
            .tables()
            .iter()
            .all(|t| t.problem.is_none() && t.current_sequences.is_empty())
    );
    let plan = engine
        .plan(
            "SELECT w.person AS subject, w.station AS station,
                    count(*) AS visits_7d, max(v.visit_date) AS last_visit
             FROM police.wanted w JOIN hospital.visits v ON v.person = w.person
             WHERE v.visit_date >= current_date - INTERVAL '7' DAY
             GROUP BY w.person, w.station",
        )
        .await
        .unwrap();
    let a = plan.analysis();
    assert_eq!(
        a.uses_of("police.wanted", "person"),
        BTreeSet::from([ColumnUse::Join, ColumnUse::Group, ColumnUse::Output])
    );
    assert!(a.outputs[2].aggregated && a.outputs[3].aggregated);
    assert!(
        engine
            .execute(&plan)
            .await
            .unwrap()
            .iter()
            .all(|b| b.num_rows() == 0)
    );
}
