//! `gradlab serve`: the JSON API against `gradlab surface --csv` for every optimizer, clear
//! 400s for bad input, 50 concurrent requests, and a clean stop on Ctrl-C.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `gradlab serve --port 0` and its address.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradlab"))
            .args(["serve", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, address }
    }

    /// `GET path` → (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        get(&self.address, path)
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .ok();
        (status, out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `gradlab surface --csv` rows (step, x, y, loss, lr) for one optimizer.
fn cli_rows(args: &[&str], csv: &std::path::Path) -> Vec<Vec<f64>> {
    let out = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .arg("surface")
        .args(args)
        .arg("--csv")
        .arg(csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|c| {
                    if c == "nan" {
                        f64::NAN
                    } else {
                        c.parse().unwrap()
                    }
                })
                .collect()
        })
        .collect()
}

fn same(a: f64, b: &Value) -> bool {
    match b.as_f64() {
        Some(b) => a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0),
        None => !a.is_finite(),
    }
}

/// The API's paths are the rows `gradlab surface --csv` writes, bit for bit, for every
/// optimizer (with a schedule, a typed surface and gradient noise on the way).
#[test]
fn api_paths_equal_the_cli_for_every_optimizer() {
    let server = Server::start();
    let dir = scratch("paths");
    let optimizers = server.json("/api/optimizers");
    let list = optimizers.as_array().unwrap();
    assert_eq!(
        list.len(),
        gradlab::optim::OPTIMIZERS.len(),
        "an optimizer is missing from /api/optimizers"
    );
    let cases: [(&str, &[&str], &str); 3] = [
        ("function=himmelblau", &["--function", "himmelblau"], ""),
        (
            "expression=(1%20-%20x)%5E2%20%2B%203*(y%20-%20x%5E2)%5E2",
            &["--expression", "(1 - x)^2 + 3*(y - x^2)^2"],
            "",
        ),
        ("function=product", &["--function", "product"], "noise"),
    ];
    for (i, o) in list.iter().enumerate() {
        let spec = o["default"].as_str().unwrap().to_string();
        // Small steps for the default specs (lr=1e-3 barely moves; adagrad's 0.01 is fine).
        let spec = if spec.contains('(') {
            spec
        } else {
            format!("{spec}(lr=0.01)")
        };
        let (query, args, extra) = cases[i % cases.len()];
        let mut api_path = format!(
            "/api/surface?{query}&start=0.5,-1.5&optimizer={}&steps=40",
            encode(&spec)
        );
        let mut cli: Vec<&str> = args.to_vec();
        cli.extend(["--start=0.5,-1.5", "--optimizer", &spec, "--steps", "40"]);
        if extra == "noise" {
            api_path.push_str("&noise=0.3&seed=7");
            cli.extend(["--noise", "0.3", "--seed", "7"]);
        }
        if i % 4 == 1 {
            api_path.push_str("&schedule=cosine(t_max%3D40)");
            cli.extend(["--schedule", "cosine(t_max=40)"]);
        }
        let api = server.json(&api_path);
        let run = &api["runs"][0];
        let rows = cli_rows(&cli, &dir.join(format!("{i}.csv")));
        let points = run["points"].as_array().unwrap();
        assert_eq!(points.len(), rows.len(), "{spec}: rows");
        for (k, (p, r)) in points.iter().zip(&rows).enumerate() {
            for c in 0..3 {
                assert!(
                    same(r[c + 1], &p[c]),
                    "{spec} ({query} {extra}) step {k}: CLI {} vs API {}",
                    r[c + 1],
                    p[c]
                );
            }
            assert!(same(r[4], &run["lr"][k]), "{spec} step {k}: lr");
        }
        let state = &run["state"];
        assert!(state["tensors"].is_object(), "{spec}: no state");
    }
    // State as the lecture draws it: Adam's momentum, σ and η/σ; SWATS's switch; Lookahead's
    // slow weights.
    let adam =
        server.json("/api/surface?function=rosenbrock&start=-1,2&optimizer=adam(lr%3D0.1)&steps=5");
    let st = &adam["runs"][0]["state"];
    let m = st["momentum"][0].as_array().unwrap();
    let s = st["sigma"][0].as_array().unwrap();
    let e = st["effective_lr"][0].as_array().unwrap();
    for c in 0..2 {
        let (m, s, e) = (
            m[c].as_f64().unwrap(),
            s[c].as_f64().unwrap(),
            e[c].as_f64().unwrap(),
        );
        // After one step m = (1 − β₁)g and v = (1 − β₂)g², so σ = √0.001·|g| and m = 0.1·g.
        let g = m / 0.1;
        assert!(
            (s - (0.001f64).sqrt() * g.abs()).abs() < 1e-9 * s,
            "{s} {g}"
        );
        assert!((e - 0.1 / s).abs() < 1e-12 * e);
    }
    let swats = server.json(
        "/api/surface?function=himmelblau&start=1.5,1.7&optimizer=swats(lr%3D0.001)&steps=800",
    );
    let switched = swats["runs"][0]["state"]["scalars"]["switched_at"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        switched.iter().any(|v| v.as_f64().unwrap_or(0.0) > 0.0),
        "SWATS never switched on Himmelblau"
    );
    let look = server.json("/api/surface?function=bowl&start=3,1&optimizer=lookahead(sgd(lr%3D0.05)%2C%20k%3D5)&steps=10");
    let slow = look["runs"][0]["state"]["slow_weights"].as_array().unwrap();
    assert_eq!(slow.len(), 10);
    assert_ne!(
        slow[3], slow[5],
        "the slow weights did not move after k steps"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn other_routes_answer_with_the_library_numbers() {
    let server = Server::start();
    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("gradlab playground") && !page.contains("src=\"http"),
        "the page must work offline"
    );
    let functions = server.json("/api/functions");
    assert_eq!(
        functions.as_array().unwrap().len(),
        gradlab::surface::ALL.len()
    );
    // The saddle of (1 − xy)²: eigenvalues ±2, an escape that lowers the loss.
    let c = server.json("/api/critical?function=product&at=0,0");
    assert_eq!(c["kind"], "saddle");
    let ev: Vec<f64> = c["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        (ev[0] + 2.0).abs() < 1e-12 && (ev[1] - 2.0).abs() < 1e-12,
        "{ev:?}"
    );
    assert!(c["loss_after_escape"].as_f64().unwrap() < 1.0);
    let v = &c["eigenvectors"][0];
    let (a, b) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
    assert!(
        (a.abs() - b.abs()).abs() < 1e-9,
        "the negative direction of xy is the diagonal x = y"
    );
    // A typed surface: the same point of x² − y² is a saddle with eigenvalues ∓2.
    let t = server.json("/api/critical?expression=x%5E2%20-%20y%5E2&at=0,0");
    assert_eq!(t["kind"], "saddle");
    let away = server.json("/api/critical?function=bowl&at=1,1");
    assert_eq!(away["kind"], "not-critical");
    assert_eq!(away["curvature"], "minimum");
    let g = server.json("/api/grid?function=rosenbrock&n=20");
    assert_eq!(g["values"].as_array().unwrap().len(), 400);
    assert_eq!(
        g["values"][0].as_f64().unwrap(),
        2509.0,
        "f(−2, −1) of Rosenbrock"
    );
    assert!(!g["lines"].as_array().unwrap().is_empty());
    // Momentum on a quadratic: Polyak's settings reach (√κ − 1)/(√κ + 1), and the measured
    // rate of each component follows the theory.
    let q = server.json("/api/quadratic?condition=100&lr=0.02&momentum=0.5&steps=400");
    assert!((q["optimal"]["rate"].as_f64().unwrap() - 9.0 / 11.0).abs() < 1e-6);
    for c in q["components"].as_array().unwrap() {
        let (theory, measured) = (
            c["rate_theory"].as_f64().unwrap(),
            c["rate_measured"].as_f64().unwrap(),
        );
        assert!(
            (theory - measured).abs() < 0.01,
            "theory {theory} vs measured {measured}"
        );
    }
}

#[test]
fn bad_input_gets_a_400_with_the_reason() {
    let server = Server::start();
    let long_expression = encode(&"x+".repeat(300));
    let too_long_query = format!("/api/grid?function={}", "a".repeat(17_000));
    let nine = (0..9)
        .map(|_| "optimizer=adam")
        .collect::<Vec<_>>()
        .join("&");
    let cases: Vec<(String, &str)> = vec![
        ("/api/surface?function=rosenbrock&start=1,1&optimizer=adamm".into(), "unknown optimizer 'adamm'"),
        ("/api/surface?function=rosenbrock&start=1,1&optimizer=adam(lr%3D-1)".into(), "lr"),
        ("/api/surface?function=rosenbrok&start=1,1&optimizer=adam".into(), "unknown function 'rosenbrok'"),
        ("/api/surface?expression=x%5E2%20%2B&start=1,1&optimizer=adam".into(), "invalid expression"),
        (format!("/api/surface?expression={long_expression}&start=1,1&optimizer=adam"), "at most 500"),
        ("/api/surface?function=booth&start=1&optimizer=adam".into(), "two numbers"),
        ("/api/surface?function=booth&optimizer=adam".into(), "'start' is missing"),
        ("/api/surface?function=booth&start=1,1".into(), "'optimizer' is missing"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&steps=0".into(), "out of range"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&steps=100001".into(), "out of range"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&steps=ten".into(), "not a whole number"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&steps=5&steps=6".into(), "more than once"),
        (format!("/api/surface?function=booth&start=1,1&{nine}"), "at most 8"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&optimizer=sgd&optimizer=lion&steps=100000".into(), "at most 200000"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&schedule=cosinus".into(), "schedule: unknown schedule"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&noise=-1".into(), "noise"),
        ("/api/surface?function=booth&start=1,1&optimizer=adam&colour=red".into(), "unknown parameter 'colour'"),
        ("/api/surface?function=booth&expression=x&start=1,1&optimizer=adam".into(), "not both"),
        ("/api/critical?function=booth&at=nan,1".into(), "not a finite number"),
        ("/api/grid?function=booth&n=5000".into(), "out of range"),
        ("/api/grid?function=booth&box=1,0,0,1".into(), "XMIN < XMAX"),
        ("/api/grid?expression=ln(-1%20-%20x%5E2)".into(), "no finite value"),
        ("/api/quadratic?condition=0.5".into(), "out of range"),
        ("/api/quadratic?momentum=1".into(), "out of range"),
        (too_long_query, "at most 16384"),
        ("/api/surface?function=booth&start=1,1&optimizer=%FF%FE".into(), "optimizer 1"),
    ];
    for (path, says) in &cases {
        let (status, body) = server.get(path);
        assert_eq!(status, 400, "{path}: {status} {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
    let (status, body) = server.get("/nothing/here");
    assert_eq!(status, 404);
    assert!(body.contains("no such page"), "{body}");
    // A diverging optimizer is not an error: its path stops with the reason.
    let v =
        server.json("/api/surface?function=rosenbrock&start=-1.5,2&optimizer=sgd(lr%3D1)&steps=50");
    assert!(
        v["runs"][0]["stopped"]
            .as_str()
            .unwrap()
            .contains("non-finite"),
        "{}",
        v["runs"][0]["stopped"]
    );
    // The server is still up after all of that, and a bad --host is refused by name.
    assert_eq!(server.get("/api/functions").0, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["serve", "--host", "localhost:80"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}

/// 50 requests at once (500 steps, 4 optimizers each) are all answered, the same request
/// the same way; Ctrl-C then stops the server cleanly. Prints the median latency.
#[test]
fn fifty_concurrent_requests_then_ctrl_c() {
    let server = Server::start();
    let path = "/api/surface?function=rosenbrock&start=-1.5,2&steps=500\
        &optimizer=sgd(lr%3D0.001%2C%20momentum%3D0.9)&optimizer=adam(lr%3D0.1)\
        &optimizer=rmsprop(lr%3D0.01)&optimizer=lion(lr%3D0.01)";
    let single: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(server.get(path).0, 200);
            t.elapsed().as_secs_f64()
        })
        .collect();
    let reference = server.get(path).1;
    let address = server.address.clone();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let address = address.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let p = if i % 2 == 0 {
                    path.to_string()
                } else {
                    "/api/critical?function=himmelblau&at=1,2".to_string()
                };
                let (status, body) = get(&address, &p);
                (i, status, body, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        let (i, status, body, secs) = h.join().unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        if i % 2 == 0 {
            assert_eq!(body, reference, "request {i} differs");
            latencies.push(secs);
        }
    }
    let mut single = single;
    single.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    println!(
        "500 steps x 4 optimizers: median {:.1} ms alone, {:.1} ms among 50 concurrent",
        1e3 * single[2],
        1e3 * latencies[latencies.len() / 2]
    );
    let (status, out) = server.interrupt();
    assert!(status.success(), "exit status {status}");
    assert!(out.contains("stopped"), "{out}");
}
