//! A checkpoint's model: weights read back into a network (to resume, to fine-tune from, to
//! analyse), the network rebuilt from the stored configuration, metrics cut back to it.

use super::*;
use crate::models::{ModelKind, ModelSpec};

/// Reads a safetensors file.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::file(path, e.to_string()))
}

/// Sets `model`'s parameters and buffers from the checkpoint in `dir` (its model weights
/// only: the start of a fine-tuning run), checking names and shapes; parameters whose name
/// starts with one of `exclude` keep their fresh initialisation (a new output layer).
pub fn init_weights(model: &dyn Network, dir: &Path, exclude: &[String]) -> Result<()> {
    let files = locate(dir)?;
    let source = files.dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
        .map_err(|e| Error::file(&source, e.to_string()))?;
    for prefix in exclude {
        let fresh: Vec<(String, Tensor)> = model
            .params()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix.as_str()))
            .map(|(name, v)| Ok((name.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        if fresh.is_empty() {
            let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::setting(
                "--init-exclude",
                format!(
                    "--init-exclude {prefix}: no parameter's name starts with it; the model's \
                     parameters are {}",
                    names.join(", ")
                ),
            ));
        }
        tensors.extend(fresh);
    }
    restore_model(model, &tensors, &source)
}

/// Sets a model's parameters and buffers from named tensors, checking names and shapes.
pub fn restore_model(
    model: &dyn Network,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    for (name, var) in model.params() {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::file(source, format!("parameter '{name}' is missing")))?;
        if t.dims() != var.dims() {
            return Err(Error::file(
                source,
                format!(
                    "parameter '{name}' has shape {:?}, the model has {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(t)?;
    }
    for (name, _) in model.buffers() {
        let t = tensors
            .get(&name)
            .ok_or_else(|| Error::file(source, format!("buffer '{name}' is missing")))?;
        model.set_buffer(&name, t.clone())?;
    }
    Ok(())
}

/// The model saved in a checkpoint (with its batch-norm statistics) and the training
/// configuration it was trained with.
pub fn load_model(dir: &Path) -> Result<(Model, Value)> {
    let files = locate(dir)?;
    let ck = files.dir.clone();
    let state = parse_state(&files.state, &ck.join("state.json"))?;
    let config = state["config"].clone();
    let spec =
        model_spec(&config).map_err(|e| Error::file(ck.join("state.json"), e.to_string()))?;
    if spec.kind == ModelKind::Custom {
        return Err(Error::file(
            &ck,
            format!(
                "the checkpoint is of a model of a user's own (config.model = custom), which \
                 gradlab cannot rebuild: load {} into that model with \
                 gradlab_candle::checkpoint::load_tensors and restore_model",
                ck.join("model.safetensors").display()
            ),
        ));
    }
    let tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
        .map_err(|e| Error::file(ck.join("model.safetensors"), e.to_string()))?;
    let (rows, cols) = image_size(&state, &spec, &tensors)
        .map_err(|e| Error::file(ck.join("state.json"), e.to_string()))?;
    let model = Model::new(&spec, rows, cols, 0)?;
    restore_model(&model, &tensors, &ck.join("model.safetensors"))?;
    Ok((model, config))
}

/// The model described by a checkpoint's `config` (see [`ModelSpec`]'s JSON form).
fn model_spec(config: &Value) -> std::result::Result<ModelSpec, String> {
    serde_json::from_value(config.clone()).map_err(|e| format!("config: {e}"))
}

/// The images' `[rows, cols]` a checkpoint records; checkpoints written before it did are
/// read by the size of the first layer's inputs (square images: MNIST's formats).
fn image_size(
    state: &Value,
    spec: &ModelSpec,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<(usize, usize), String> {
    if let Some(image) = state.get("image") {
        return serde_json::from_value(image.clone()).map_err(|e| format!("image: {e}"));
    }
    let first = tensors
        .get("fc1.weight")
        .or_else(|| tensors.get("fc.weight"))
        .ok_or("the first layer's weights are missing")?;
    let inputs = first.dims()[1];
    let side = |pixels: usize| {
        let s = (pixels as f64).sqrt().round() as usize;
        (s * s == pixels)
            .then_some(s)
            .ok_or_else(|| format!("cannot tell the image size from {inputs} inputs"))
    };
    let rows = if spec.kind == ModelKind::Cnn {
        (side(inputs / 16)? * 2 + 4) * 2
    } else {
        side(inputs)?
    };
    Ok((rows, rows))
}
