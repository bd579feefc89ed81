//! A checkpoint's files found, read and verified: the folder the swap left complete, the
//! lengths and CRC-32s recorded in `state.json`, finite values, shared from rank 0.

use super::*;

/// The three files of a checkpoint, as bytes.
pub(crate) struct Files {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) state: Vec<u8>,
    pub(crate) model: Vec<u8>,
    pub(crate) optimizer: Vec<u8>,
}

/// Reads a checkpoint's files on rank 0 and shares them (or rank 0's error) with every rank.
pub(super) fn read_files(dir: &Path, collective: &dyn Collective) -> Result<Files> {
    let read = || locate(dir);
    if collective.size() == 1 {
        return read();
    }
    // Rank 0's message: a status byte, then the folder and the files (length-prefixed), or
    // the error.
    let mut message = Vec::new();
    if collective.rank() == 0 {
        match read() {
            Ok(f) => {
                message.push(0);
                let folder = f.dir.display().to_string().into_bytes();
                for part in [&folder, &f.state, &f.model, &f.optimizer] {
                    message.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    message.extend_from_slice(part);
                }
            }
            Err(e) => {
                message.push(1);
                message.extend_from_slice(e.to_string().as_bytes());
            }
        }
    }
    let mut all = collective.all_gather_bytes(&message);
    let message = std::mem::take(&mut all[0]);
    match message.split_first() {
        Some((0, mut rest)) => {
            let mut next = || {
                let (len, tail) = rest.split_at(8);
                let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
                let (part, tail) = tail.split_at(len);
                rest = tail;
                part.to_vec()
            };
            let folder = next();
            Ok(Files {
                dir: String::from_utf8_lossy(&folder).into_owned().into(),
                state: next(),
                model: next(),
                optimizer: next(),
            })
        }
        Some((_, text)) => Err(Error::Ranks {
            message: format!(
                "rank 0 could not read the checkpoint: {}",
                String::from_utf8_lossy(text)
            ),
        }),
        None => Err(Error::Ranks {
            message: "rank 0 sent no checkpoint".into(),
        }),
    }
}

/// The folder holding the checkpoint files inside `dir` (the verified `checkpoint/`, or a
/// recovered `checkpoint.tmp/` or `checkpoint.old/` after a crash between renames).
pub fn checkpoint_dir(dir: &Path) -> Result<std::path::PathBuf> {
    Ok(locate(dir)?.dir)
}

/// The verified checkpoint in `dir`: `dir` itself if it holds the files, else the first of
/// `checkpoint/`, `checkpoint.tmp/`, `checkpoint.old/` that is complete and whose files
/// match their checksums (the swap's recovery). The error lists each candidate's problem.
pub(super) fn locate(dir: &Path) -> Result<Files> {
    if dir.join("state.json").is_file() {
        return verified(dir);
    }
    let mut problems = Vec::new();
    for name in CANDIDATES {
        let ck = dir.join(name);
        if !ck.join("state.json").is_file() {
            continue;
        }
        match verified(&ck) {
            Ok(files) => return Ok(files),
            Err(e) => problems.push(e),
        }
    }
    let unfinished: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|name| dir.join(name).is_dir())
        .collect();
    if problems.len() == 1 {
        return Err(problems.remove(0));
    }
    Err(Error::file(
        dir,
        if !problems.is_empty() {
            let problems: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
            format!("no checkpoint can be used: {}", problems.join("; "))
        } else if unfinished.is_empty() {
            "no checkpoint here (expected checkpoint/state.json)".to_string()
        } else {
            format!(
                "no complete checkpoint here: {} without state.json is a save that was \
                 interrupted before the first checkpoint was complete, so nothing can be \
                 resumed; start the run afresh (gradlab train --overwrite)",
                unfinished.join(", ")
            )
        },
    ))
}

/// Reads the checkpoint files in `ck` and checks them: `state.json` parses and has this
/// version, each tensor file has the recorded length and CRC-32, and every value in them is
/// finite.
pub(super) fn verified(ck: &Path) -> Result<Files> {
    let read = |name: &str| {
        let path = ck.join(name);
        std::fs::read(&path).map_err(|e| Error::io(path, e))
    };
    let state_bytes = read("state.json")?;
    let state_path = ck.join("state.json");
    let state = parse_state(&state_bytes, &state_path)?;
    let mut contents = Vec::new();
    for name in TENSOR_FILES {
        let bytes = read(name)?;
        let record = &state["files"][name];
        let (want_len, want_crc) = (record["bytes"].as_u64(), record["crc32"].as_str());
        let (Some(want_len), Some(want_crc)) = (want_len, want_crc) else {
            return Err(Error::file(
                state_path,
                format!("no checksum recorded for {name}"),
            ));
        };
        let got = crc32(&bytes);
        if bytes.len() as u64 != want_len || got != want_crc {
            return Err(Error::file(
                ck.join(name),
                format!(
                    "corrupted: {} bytes with CRC-32 {got}, state.json records {want_len} bytes \
                     with CRC-32 {want_crc}",
                    bytes.len()
                ),
            ));
        }
        check_finite(&bytes, &ck.join(name))?;
        contents.push(bytes);
    }
    let optimizer = contents.pop().expect("two files");
    let model = contents.pop().expect("two files");
    Ok(Files {
        dir: ck.to_path_buf(),
        state: state_bytes,
        model,
        optimizer,
    })
}

/// `state.json`'s content, refused unless it is an object of this checkpoint version.
pub(super) fn parse_state(bytes: &[u8], path: &Path) -> Result<Value> {
    let state: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
    if state["version"].as_u64() != Some(CHECKPOINT_VERSION) {
        return Err(Error::file(
            path,
            format!(
                "checkpoint version {} is not supported (this gradlab reads version \
                 {CHECKPOINT_VERSION})",
                state["version"]
            ),
        ));
    }
    Ok(state)
}

/// An error naming the tensor and element of the first non-finite f32/f64 value in a
/// safetensors file.
pub(super) fn check_finite(bytes: &[u8], path: &Path) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, e.to_string()))?;
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| Error::file(path, e.to_string()))?;
        let data = view.data();
        let values: Box<dyn Iterator<Item = f64>> = match view.dtype() {
            safetensors::Dtype::F32 => Box::new(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64),
            ),
            safetensors::Dtype::F64 => Box::new(
                data.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            ),
            _ => Box::new(std::iter::empty()),
        };
        let bad = values.enumerate().find(|(_, x)| !x.is_finite());
        if let Some((i, x)) = bad {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' holds the non-finite value {x} at element {i}: refusing \
                     to load it"
                ),
            ));
        }
    }
    Ok(())
}

/// Aborts the process at the named point when `GRADLAB_CRASH_AT` names it: the tests'
/// way to simulate a crash at the worst moment.
pub(super) fn crash_point(name: &str) {
    if std::env::var_os("GRADLAB_CRASH_AT").is_some_and(|v| v == name) {
        eprintln!("GRADLAB_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}
