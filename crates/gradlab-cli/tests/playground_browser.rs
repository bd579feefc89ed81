//! The playground page in a real browser: headless Chromium driven over the DevTools protocol
//! sets a start point by clicking the map, adds two optimizers from the menu, runs them, and
//! checks that both paths are drawn, the Hessian panel shows the eigenvalues, an invalid spec
//! shows its error beside its field, the quadratic mode draws, and the console stays clean.
//! Saves a screenshot. Skipped with a message where Chromium is not installed.

mod common;
use common::chromium;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Log::LogEntryLevel;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::Runtime::ConsoleAPICalledEventTypeOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Evaluates `js` in the page and returns its value (through JSON, so arrays come back too).
fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    let text = tab
        .evaluate(&format!("JSON.stringify({js})"), false)
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .value
        .unwrap_or(serde_json::Value::Null);
    text.as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until `js` evaluates to true.
fn wait_for(tab: &Tab, js: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while eval(tab, js) != serde_json::Value::Bool(true) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {}; paths: {}",
            eval(tab, "document.getElementById('status').textContent"),
            eval(
                tab,
                "document.querySelectorAll('#overlay polyline.path').length"
            )
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set(tab: &Tab, id: &str, value: &str, event: &str) {
    eval(
        tab,
        &format!(
            "(() => {{ const e = document.getElementById('{id}'); e.value = {value:?}; e.dispatchEvent(new Event('{event}')); return true; }})()"
        ),
    );
}

#[test]
fn the_playground_works_in_a_browser() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED the browser test: no chromium found (install the Debian package 'chromium'; .ci/run does)");
        return;
    };
    let mut server = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();

    let profile = std::env::temp_dir().join(format!("gradlab-playground-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let args: Vec<&OsStr> = common::QUIET_FLAGS.iter().map(OsStr::new).collect();
    let options = LaunchOptions::default_builder()
        .path(Some(chromium.into()))
        .headless(true)
        .sandbox(false)
        .window_size(Some((1500, 950)))
        .user_data_dir(Some(profile.clone()))
        .idle_browser_timeout(Duration::from_secs(180))
        .args(args)
        .build()
        .unwrap();
    let browser = Browser::new(options).unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(60));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = errors.clone();
    tab.add_event_listener(Arc::new(move |event: &Event| {
        let message = match event {
            Event::RuntimeExceptionThrown(e) => {
                Some(format!("exception: {:?}", e.params.exception_details.text))
            }
            Event::RuntimeConsoleAPICalled(e)
                if e.params.Type == ConsoleAPICalledEventTypeOption::Error =>
            {
                Some(format!("console.error: {:?}", e.params.args))
            }
            Event::LogEntryAdded(e) if e.params.entry.level == LogEntryLevel::Error => {
                Some(format!(
                    "log: {} ({})",
                    e.params.entry.text,
                    e.params.entry.url.clone().unwrap_or_default()
                ))
            }
            _ => None,
        };
        if let Some(m) = message {
            sink.lock().unwrap().push(m);
        }
    }))
    .unwrap();
    tab.enable_log().unwrap();
    tab.enable_runtime().unwrap();

    // A page with a surface and no optimizers yet.
    tab.navigate_to(&format!("{url}?function=himmelblau&steps=150"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(&tab, "document.querySelectorAll('#add-name option').length > 20 && document.querySelectorAll('#overlay .contours polyline').length > 10", "the menu and the contours");
    assert_eq!(
        eval(&tab, "document.querySelectorAll('.opt-row').length"),
        0
    );

    // Click the map: the start point moves there and the Hessian panel fills.
    let before = eval(
        &tab,
        "document.getElementById('start-x').value + ',' + document.getElementById('start-y').value",
    );
    tab.find_element("#overlay").unwrap().click().unwrap();
    wait_for(
        &tab,
        "!!document.getElementById('eigenvalues')",
        "the Hessian panel",
    );
    let after = eval(
        &tab,
        "document.getElementById('start-x').value + ',' + document.getElementById('start-y').value",
    );
    assert_ne!(
        before, after,
        "clicking the map did not set the start point"
    );
    let eigen = eval(&tab, "document.getElementById('eigenvalues').textContent");
    assert_eq!(eigen.as_str().unwrap().split(',').count(), 2, "{eigen}");
    assert_eq!(
        eval(
            &tab,
            "document.querySelectorAll('#overlay .eigenvector').length"
        ),
        2
    );

    // Two optimizers from the menu, one with its momentum slider moved.
    set(&tab, "add-name", "adam", "change");
    set(&tab, "slider-lr", "-1", "input");
    tab.find_element("#add-optimizer").unwrap().click().unwrap();
    set(&tab, "add-name", "sgd", "change");
    set(&tab, "slider-lr", "-2.5", "input");
    set(&tab, "slider-momentum", "0.9", "input");
    tab.find_element("#add-optimizer").unwrap().click().unwrap();
    let specs = eval(
        &tab,
        "[...document.querySelectorAll('.opt-row .spec')].map(e => e.value).join(' | ')",
    );
    assert!(specs.as_str().unwrap().contains("momentum=0.9"), "{specs}");
    tab.find_element("#run").unwrap().click().unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('#overlay polyline.path').length === 2",
        "two paths",
    );
    let points = eval(&tab, "[...document.querySelectorAll('#overlay polyline.path')].map(p => p.getAttribute('points').split(' ').length)");
    for n in points.as_array().unwrap() {
        assert!(n.as_u64().unwrap() > 100, "a path has only {n} points");
    }
    let state = eval(&tab, "document.getElementById('state').textContent");
    assert!(
        state.as_str().unwrap().contains("σ = √v")
            && state.as_str().unwrap().contains("momentum m"),
        "{state}"
    );
    assert!(
        eval(&tab, "location.search.includes('optimizer=')")
            .as_bool()
            .unwrap(),
        "the URL does not hold the state"
    );
    // Play back a few frames, then step.
    tab.find_element("#play").unwrap().click().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    tab.find_element("#play").unwrap().click().unwrap();
    tab.find_element("#step-once").unwrap().click().unwrap();

    let shot = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png");
    std::fs::write(&path, &shot).unwrap();
    assert!(
        shot.len() > 20_000,
        "the screenshot is blank ({} bytes)",
        shot.len()
    );
    println!("screenshot: {} ({} bytes)", path.display(), shot.len());

    // The address bar holds the whole state: a reload shows the same paths and Hessian.
    let href = eval(&tab, "location.href");
    let href = href.as_str().unwrap();
    assert!(href.contains("at="), "{href}");
    tab.navigate_to(href)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(&tab, "document.querySelectorAll('#overlay polyline.path').length === 2 && !!document.getElementById('eigenvalues')", "the shared state");
    assert_eq!(
        eval(&tab, "document.getElementById('eigenvalues').textContent"),
        eigen
    );

    let clean = errors.lock().unwrap().clone();
    assert!(clean.is_empty(), "console errors: {clean:#?}");

    // An invalid spec: its error beside its field. (The API answers 400, which the browser
    // logs as a failed resource: the only entries allowed from here on.)
    set(&tab, "schedule", "", "input");
    eval(&tab, "(() => { document.querySelector('.opt-row .spec').value = 'adamm(lr=0.1)'; return true; })()");
    tab.find_element("#run").unwrap().click().unwrap();
    wait_for(&tab, "document.querySelector('.opt-row .spec-error').textContent.includes(\"unknown optimizer 'adamm'\")", "the spec's error");
    // An expression that does not parse shows its error inline.
    set(&tab, "function", "__expression", "change");
    std::thread::sleep(Duration::from_millis(300));
    set(&tab, "expression", "x^2 +", "change");
    wait_for(
        &tab,
        "document.getElementById('expression-error').textContent.includes('invalid expression')",
        "the expression's error",
    );

    // Momentum on a quadratic.
    tab.find_element("#tab-quadratic").unwrap().click().unwrap();
    wait_for(
        &tab,
        "document.getElementById('q-rates').textContent.includes('Optimal')",
        "the quadratic's rates",
    );
    tab.find_element("#q-optimal").unwrap().click().unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('#q-chart polyline').length === 4",
        "the quadratic's chart",
    );

    let errors = errors.lock().unwrap().clone();
    let unexpected: Vec<&String> = errors
        .iter()
        .filter(|e| !(e.contains("status of 400") && e.contains("/api/")))
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:#?}");
    drop(tab);
    drop(browser);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(profile);
}
