//! `gradlab lab --quick`: every section with real figures, a self-contained page, and (where
//! Chromium is installed) a clean load in a headless browser with a screenshot.

mod common;
use common::chromium;
use std::path::Path;
use std::process::Command;

fn check_page(html: &str) {
    for id in [
        "optimizers",
        "schedules",
        "batch-size",
        "stuck",
        "surfaces",
        "saddle",
        "warmup",
        "helps",
        "error-surface",
        "adam-vs-sgdm",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id} is missing"
        );
    }
    assert!(
        !html.contains("<script"),
        "the report must not need scripts"
    );
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"),
        "the report must be self-contained"
    );
    let figures: Vec<&str> = html
        .split("<figure>")
        .skip(1)
        .map(|f| f.split("</figure>").next().unwrap())
        .collect();
    assert!(figures.len() >= 12, "only {} figures", figures.len());
    for (i, f) in figures.iter().enumerate() {
        assert!(f.contains("<svg"), "figure {i} has no SVG");
        let marks = ["<polyline", "<polygon", "<circle", "<path"]
            .iter()
            .map(|m| f.matches(m).count())
            .sum::<usize>();
        assert!(
            marks >= 2,
            "figure {i} has no visible content: {}",
            &f[..f.len().min(300)]
        );
    }
}

#[test]
fn the_quick_lab_writes_a_complete_report() {
    let out = std::env::temp_dir().join(format!("gradlab-lab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["lab", "--quick", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    check_page(&html);
    // SAM's flatter minimum is measured against its base optimizer, with numbers.
    let flat = html
        .split("Flatness after training")
        .nth(1)
        .expect("the optimizer comparison measures SAM's flatness");
    assert!(
        flat.contains("sam(sgd(lr=0.05, momentum=0.9), rho=0.05)") && flat.contains("ε-sharpness"),
        "{}",
        &flat[..flat.len().min(400)]
    );
    for data in [
        "data/optimizers.csv",
        "data/schedules.csv",
        "data/batch_size.csv",
        "data/stuck_hessian.json",
        "data/surface_himmelblau.csv",
        "data/saddle.csv",
        "data/saddle.json",
        "data/warmup_loss.csv",
        "data/warmup_adaptive_step.csv",
        "data/helps.csv",
        "data/error_surface_slices.csv",
        "data/error_surface_range_test.csv",
        "data/adam_vs_sgdm_grid.csv",
        "data/adam_vs_sgdm_vision.csv",
        "data/adam_vs_sgdm_text.csv",
    ] {
        assert!(out.join(data).is_file(), "{data} is missing");
        assert!(
            html.contains(&format!("href=\"{data}\"")),
            "{data} is not linked"
        );
    }
    // The saddle study's data shows a run that converges to the saddle and runs that escape
    // it, the closer start lingering longer, and the text says what the data say.
    let saddle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data/saddle.json")).unwrap())
            .unwrap();
    let runs = saddle["runs"].as_array().unwrap();
    assert!(
        runs[0]["converged_to_saddle"].as_bool().unwrap(),
        "{}",
        runs[0]
    );
    assert!((runs[0]["final_loss"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    let escapes: Vec<u64> = runs[1..4]
        .iter()
        .map(|r| r["escaped_at"].as_u64().expect("escaped"))
        .collect();
    assert!(escapes.windows(2).all(|w| w[1] > w[0]), "{escapes:?}");
    assert!(
        runs[5]["escaped_at"].as_u64().is_some(),
        "noise did not escape: {}",
        runs[5]
    );
    let section = html.split("<section id=\"saddle\">").nth(1).unwrap();
    assert!(section.contains("converged to the saddle") && section.contains("escaped at step"));
    assert!(
        !html.contains("lingers where the gradient is tiny before it escapes"),
        "the old, wrong caption"
    );
    // ... and the same diagnosis on the network where SGD stalled.
    let network: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("data/saddle_network.json")).unwrap(),
    )
    .unwrap();
    assert!(
        network["bottom_eigenvalue"].as_f64().unwrap()
            < network["top_eigenvalue"].as_f64().unwrap()
    );
    assert_eq!(network["steps"].as_array().unwrap().len(), 4);
    assert!(section.contains("The same diagnosis on the network"));
    // Warm-up scales Adam's first adaptive step by its start factor (1%): same weights and
    // batch at step 1, so the same v̂.
    let trace = std::fs::read_to_string(out.join("data/warmup_adaptive_step.csv")).unwrap();
    let first_p99 = |warm: bool| -> f64 {
        trace
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f[1] == "1" && f[0].contains("warm-up") == warm)
            .map(|f| f[4].parse().unwrap())
            .unwrap()
    };
    let ratio = first_p99(true) / first_p99(false);
    assert!((ratio - 0.01).abs() < 1e-6, "{ratio}");
    // Every ablation ran with three seeds, and the table says whether each effect is beyond
    // the seed noise.
    let helps = std::fs::read_to_string(out.join("data/helps.csv")).unwrap();
    for technique in [
        "baseline",
        "shuffling",
        "dropout",
        "gradient noise",
        "warm-up",
        "curriculum learning",
        "normalization",
        "weight decay",
        "fine-tuning",
    ] {
        let seeds = helps
            .lines()
            .filter(|l| l.starts_with(&format!("{technique},")))
            .count();
        assert_eq!(seeds, 3, "{technique}");
    }
    let section = html.split("<section id=\"helps\">").nth(1).unwrap();
    assert!(section.contains("(yes)") || section.contains("(no)"));
    // Adam vs SGDM: each optimizer's rate is the grid's best on validation (accuracy on
    // images, loss on text), and that is the rate the report names.
    let grid = std::fs::read_to_string(out.join("data/adam_vs_sgdm_grid.csv")).unwrap();
    let section = html.split("<section id=\"adam-vs-sgdm\">").nth(1).unwrap();
    for (task, word) in [("vision", "Images"), ("text", "Text")] {
        for (family, name) in [("adam", "Adam"), ("sgdm", "SGDM")] {
            let rows: Vec<Vec<f64>> = grid
                .lines()
                .filter(|l| l.starts_with(&format!("{task},{family},")))
                .map(|l| {
                    l.split(',')
                        .skip(2)
                        .map(|v| v.parse().unwrap_or(f64::NAN))
                        .collect()
                })
                .collect();
            assert_eq!(rows.len(), 3, "{task} {family}: {grid}");
            let score = |r: &Vec<f64>| if task == "vision" { r[2] } else { -r[1] };
            let best = rows
                .iter()
                .filter(|r| score(r).is_finite())
                .max_by(|a, b| score(a).total_cmp(&score(b)))
                .unwrap();
            let lr = gradlab::spec::format_number(best[0]);
            let said = format!("{name} chose lr {lr} ");
            let text = section.split(&format!("{word}: ")).nth(1).unwrap();
            assert!(
                text.contains(&said),
                "{task}: expected '{said}' in {}",
                &text[..300.min(text.len())]
            );
        }
    }
    // The report opens with the verdicts: every claim with its figure, verdict and section.
    assert!(
        html.find("<section id=\"verdicts\">").unwrap()
            < html.find("<section id=\"optimizers\">").unwrap(),
        "the verdicts do not open the report"
    );
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data/claims.json")).unwrap())
            .unwrap();
    let claims = claims.as_array().unwrap();
    assert!(claims.len() >= 12, "only {} claims", claims.len());
    for c in claims {
        let verdict = c["verdict"].as_str().unwrap();
        assert!(
            ["holds", "does not hold", "inconclusive"].contains(&verdict),
            "{c}"
        );
        let id = c["section"].as_str().unwrap();
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{c}");
        let measured = c["measured"].as_str().unwrap();
        assert!(
            measured.chars().any(|ch| ch.is_ascii_digit()),
            "no number behind {c}"
        );
    }
    browser_check(&out);
    std::fs::remove_dir_all(&out).unwrap();
}

fn browser_check(out: &Path) {
    let Some(chromium) = chromium() else {
        println!("SKIPPED the browser check: no chromium found (install the Debian package 'chromium'; .ci/run does)");
        return;
    };
    let shot = out.join("screenshot.png");
    let profile = out.join("chromium-profile");
    let result = Command::new(&chromium)
        .args(common::QUIET_FLAGS)
        .args([
            "--headless",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.join("index.html").display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "chromium failed: {log}");
    for line in log.lines() {
        let console_error =
            line.contains("CONSOLE") && (line.contains("Error") || line.contains("Uncaught"));
        assert!(
            !console_error && !line.contains("Failed to load resource"),
            "console error: {line}"
        );
    }
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 50_000,
        "the screenshot is blank or missing ({size} bytes)"
    );
    println!("screenshot: {} ({size} bytes)", shot.display());
    // The new studies' figures render on their own: each drawn by the browser into a
    // screenshot with real content (a blank one compresses to a few kilobytes).
    for figure in [
        "warmup_adaptive_step",
        "helps_loss",
        "helps_finetune",
        "error_surface_2d",
        "error_surface_1d",
        "adam_vs_sgdm_grid",
        "adam_vs_sgdm_vision",
        "adam_vs_sgdm_text",
        "optimizers_loss",
    ] {
        let png = out.join(format!("{figure}.png"));
        let result = Command::new(&chromium)
            .args(common::QUIET_FLAGS)
            .args(["--headless", "--no-sandbox", "--window-size=1300,1100"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!(
                "file://{}",
                out.join("data").join(format!("{figure}.svg")).display()
            ))
            .output()
            .unwrap();
        assert!(
            result.status.success(),
            "{figure}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 15_000,
            "{figure}: the rendered figure is blank ({size} bytes)"
        );
    }
}

/// Writes `set` as a pair of standard MNIST IDX files (`prefix`-images/labels-idx?-ubyte).
fn write_idx(dir: &Path, prefix: &str, set: &gradlab_candle::data::Dataset) {
    let n = set.len() as u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, set.rows as u32, set.cols as u32] {
        images.extend(d.to_be_bytes());
    }
    images.extend(set.images.iter().map(|p| {
        ((p * gradlab_candle::data::MNIST_STD + gradlab_candle::data::MNIST_MEAN) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(n.to_be_bytes());
    labels.extend(&set.labels);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

#[test]
fn the_lab_runs_on_a_folder_of_full_mnist_files() {
    let root = std::env::temp_dir().join(format!("gradlab-lab-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let bundled = gradlab_candle::data::bundled().unwrap();
    write_idx(&data, "train", &bundled.train.slice(0..3000));
    write_idx(&data, "t10k", &bundled.test.slice(0..500));
    let out = root.join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["lab", "--quick", "--only", "stuck,warmup", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("(800 training / 500 test examples)"),
        "the intro names the data"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/stuck/summary.json")).unwrap(),
    )
    .unwrap();
    assert!(
        summary["data"]
            .as_str()
            .unwrap()
            .contains("3000 train / 500 test"),
        "{}",
        summary["data"]
    );
    // A folder without the files is named before any study runs.
    let bad = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["lab", "--quick", "--data"])
        .arg(root.join("nowhere"))
        .arg("--out")
        .arg(root.join("bad"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--data") && err.contains("nowhere"),
        "{err}"
    );
    assert!(!err.contains("[1/"), "a study ran: {err}");
    std::fs::remove_dir_all(&root).unwrap();
}
