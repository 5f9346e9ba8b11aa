//! Reading a JUnit report as the recorder does (`parse`), and writing a
//! submission's report (`write`), for pytest-style reports of 1,000 and
//! 100,000 (the cap) cases, one in ten failing with a message and a trace.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hwsched_junit::{parse, write, Case, Suite};

fn report(cases: usize) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites><testsuite name=\"pytest\">");
    for i in 0..cases {
        xml.push_str(&format!(
            "<testcase classname=\"tests.test_mod{}\" name=\"test_case[{i}]\" time=\"0.{i:03}\">",
            i % 50
        ));
        if i % 10 == 0 {
            xml.push_str("<failure message=\"assert 1 == 2\">def test():\n&gt;   assert 1 == 2\nE   assert 1 == 2\n\ntests/test_mod.py:9: AssertionError</failure>");
        }
        xml.push_str("</testcase>");
    }
    xml.push_str("</testsuite></testsuites>");
    xml
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("junit");
    g.sample_size(10);
    for cases in [1_000, 100_000] {
        let xml = report(cases);
        g.throughput(Throughput::Bytes(xml.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse", cases), &xml, |b, xml| b.iter(|| parse(xml.as_bytes())));
        let parsed = parse(xml.as_bytes()).expect("parses");
        let suites = [Suite {
            name: "task".into(),
            properties: vec![("worker".into(), "w1".into())],
            cases: parsed.into_iter().map(|case| Case { case, ..Case::default() }).collect(),
        }];
        g.bench_with_input(BenchmarkId::new("write", cases), &suites, |b, s| b.iter(|| write("hwsched", s)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
