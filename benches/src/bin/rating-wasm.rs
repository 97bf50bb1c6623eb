//! rating-wasm: the pure rating kernel (`bss_domain::rating`) natively and inside WebAssembly in
//! one run, on the same workload (`bss_rating_loop::workload`). Native: the `rating-loop` command
//! built for this machine with the same profile as the wasm one (`release-lto`, as the components
//! are), so both sides get the same cross-crate optimisation. Wasm: the `rating-loop` WASI
//! command (built for `wasm32-wasip2`) runs on wasmtime with bss-host's engine settings
//! (`bss_host::runtime::engine`: cranelift at its default speed optimisation, pooling allocator,
//! epoch interruption with the epoch ticking) and WASIp2 linked with
//! `wasmtime_wasi::p2::add_to_linker_sync`; its timing happens inside the guest, so
//! compilation and instantiation are not counted. Rounds alternate native and wasm so that load
//! from other processes hits both alike. Prints records/s (one thread, so per core) and the
//! native/wasm ratio of the medians, of the fastest passes, and paired: the median over rounds of
//! the ratio of the two fastest passes of each round (the last two move less when other
//! processes share the cores; the paired one also when the machine's speed drifts). A third
//! engine, `wasm, no epoch checks`, is the same but with epoch interruption off: not a setting
//! bss-host can run with (the checks are what stops a runaway guest), but the measure of what
//! those checks cost.
//!
//! Usage: `rating-wasm [--wasm PATH] [--native PATH] [records=10000] [passes=15] [rounds=2]`,
//! where the paths default to `target/wasm32-wasip2/release-lto/rating-loop.wasm` and
//! `target/release-lto/rating-loop`; `benches/rating.sh` builds all three and runs it.

use anyhow::{Context, anyhow, bail};
use bss_bench::thousands;
use bss_host::runtime::{EngineOptions, engine, start_epoch_ticker};
use bss_rating_loop::Summary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// One run of the wasm command: its summary lines.
fn run_wasm(
    engine: &Engine,
    component: &Component,
    linker: &Linker<Guest>,
    records: usize,
    passes: usize,
) -> anyhow::Result<Vec<Summary>> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let wasi = WasiCtxBuilder::new()
        .args(&["rating-loop".to_string(), records.to_string(), passes.to_string()])
        .stdout(stdout.clone())
        .inherit_stderr()
        .build();
    let mut store = Store::new(engine, Guest { wasi, table: ResourceTable::new() });
    // As in bss-host: the guest checks the epoch; here a tick never stops it.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1)));
    let command = Command::instantiate(&mut store, component, linker).map_err(|e| anyhow!("instantiating: {e:?}"))?;
    command
        .wasi_cli_run()
        .call_run(&mut store)
        .map_err(|e| anyhow!("running: {e:?}"))?
        .map_err(|()| anyhow!("rating-loop.wasm exited with an error"))?;
    drop(store);
    summaries(stdout.contents().to_vec(), "guest output")
}

/// The summary lines `rating-loop` printed (`what` names the output in errors).
fn summaries(stdout: Vec<u8>, what: &str) -> anyhow::Result<Vec<Summary>> {
    let out = String::from_utf8(stdout).with_context(|| what.to_string())?;
    out.lines().map(|l| Summary::from_json_line(l).map_err(|e| anyhow!(e))).collect()
}

/// One run of the native command (the same crate built with the same profile as the wasm one):
/// its summary lines.
fn run_native(native: &Path, records: usize, passes: usize) -> anyhow::Result<Vec<Summary>> {
    let out = std::process::Command::new(native)
        .args([records.to_string(), passes.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", native.display()))?;
    if !out.status.success() {
        bail!("{} exited with {}", native.display(), out.status);
    }
    summaries(out.stdout, "native output")
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut wasm = PathBuf::from("target/wasm32-wasip2/release-lto/rating-loop.wasm");
    let mut native = PathBuf::from("target/release-lto/rating-loop");
    while let Some(flag) = args.first().filter(|a| a.starts_with("--")).cloned() {
        let path = args.get(1).map(PathBuf::from).with_context(|| format!("{flag} needs a path"))?;
        match flag.as_str() {
            "--wasm" => wasm = path,
            "--native" => native = path,
            _ => bail!("unknown option {flag}"),
        }
        args.drain(..2);
    }
    let (records, passes) = bss_rating_loop::parse_args(&[
        args.first().cloned().unwrap_or_else(|| bss_rating_loop::workload::RECORDS.to_string()),
        args.get(1).cloned().unwrap_or_else(|| "15".into()),
    ])
    .map_err(|e| {
        anyhow!("{e}\nusage: rating-wasm [--wasm PATH] [--native PATH] [records=10000] [passes=15] [rounds=2]")
    })?;
    let rounds: usize = args.get(2).map_or(Ok(2), |a| a.parse()).context("rounds")?;

    // bss-host's settings, then the same without epoch checks (what those checks cost).
    let mut engines = Vec::new();
    for (name, interruptible) in [(WASM, true), (WASM_NO_EPOCH, false)] {
        let engine = engine(&EngineOptions { interruptible, ..EngineOptions::default() }, false)?;
        if interruptible {
            start_epoch_ticker(&engine);
        }
        let compiling = Instant::now();
        let component =
            Component::from_file(&engine, &wasm).map_err(|e| anyhow!("loading {}: {e:?}", wasm.display()))?;
        eprintln!("{name}: compiled {} in {:.1} s", wasm.display(), compiling.elapsed().as_secs_f64());
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow!("linking WASI: {e:?}"))?;
        engines.push((name, engine, component, linker));
    }

    // (workload, engine) -> every pass of every round, and the fastest pass of each round.
    let mut all: BTreeMap<(String, &str), Summary> = BTreeMap::new();
    let mut round_best: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    let mut add = |kind: &'static str, summaries: Vec<Summary>| {
        for s in summaries {
            round_best.entry((s.workload.clone(), kind)).or_default().push(s.max());
            let entry = all.entry((s.workload.clone(), kind)).or_insert_with(|| Summary {
                workload: s.workload.clone(),
                records: s.records,
                rates: vec![],
            });
            entry.rates.extend(s.rates);
        }
    };
    for round in 0..rounds {
        eprintln!("round {}/{rounds}: native, {WASM}, {WASM_NO_EPOCH}", round + 1);
        add(NATIVE, run_native(&native, records, passes)?);
        for (name, engine, component, linker) in &engines {
            add(name, run_wasm(engine, component, linker, records, passes)?);
        }
    }

    println!(
        "rating kernel, records/s on one core: {records} records per pass, {rounds} round(s) x {passes} passes per engine"
    );
    println!(
        "| workload  | engine                 |    median | min-max                 | native/this median | native/this best | native/this paired |"
    );
    println!(
        "|-----------|------------------------|----------:|-------------------------|-------------------:|-----------------:|-------------------:|"
    );
    let workloads: Vec<String> =
        all.keys().map(|(w, _)| w.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for w in workloads {
        let Some(n) = all.get(&(w.clone(), NATIVE)) else { bail!("missing native results for {w}") };
        for kind in [NATIVE, WASM, WASM_NO_EPOCH] {
            let Some(m) = all.get(&(w.clone(), kind)) else { bail!("missing {kind} results for {w}") };
            let paired = paired_ratio(&round_best[&(w.clone(), NATIVE)], &round_best[&(w.clone(), kind)]);
            println!(
                "| {:<9} | {:<22} | {:>9} | {:>23} | {:>17.2}x | {:>15.2}x | {:>17.2}x |",
                w,
                kind,
                thousands(m.median()),
                format!("{}-{}", thousands(m.min()), thousands(m.max())),
                n.median() / m.median(),
                n.max() / m.max(),
                paired
            );
        }
    }
    Ok(())
}

/// The median over rounds of native's fastest pass over this engine's fastest pass in the same
/// round: each ratio compares runs a second apart, so a slow minute of the machine (other
/// processes, a neighbour on the host) weighs on both sides of it instead of on one.
fn paired_ratio(native: &[f64], this: &[f64]) -> f64 {
    let ratios: Vec<f64> = native.iter().zip(this).map(|(n, t)| n / t).collect();
    bss_rating_loop::median(&ratios)
}

const NATIVE: &str = "native";
/// The guest on bss-host's engine settings.
const WASM: &str = "wasm";
/// The same without epoch interruption: the checks' cost, not a setting bss-host runs with.
const WASM_NO_EPOCH: &str = "wasm, no epoch checks";
