//! A character-level language model: a text cut into windows of characters whose next
//! character is the class to predict, and a small causal Transformer (Vaswani et al. 2017,
//! pre-layer-norm as in GPT-2, GELU in its tanh form) from candle-nn's building blocks that
//! predicts it. It trains
//! with [`crate::train::Trainer`] like any user model: its inputs are `(N, 1, context)`
//! character ids, its logits `(N, vocabulary)`; the test loss is the cross-entropy in nats
//! per character, `exp` of it the perplexity.
//!
//! Layer normalisation and softmax are built from candle's differentiable ops: candle-nn's
//! `LayerNorm` takes a fused path without a backward pass on contiguous inputs (its
//! parameters and inputs get no gradient), and `softmax_last_dim` has none either.

use crate::{Error, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};

mod corpus;
pub use corpus::CharCorpus;

/// The shape of a [`CharTransformer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharTransformerConfig {
    /// Characters in the vocabulary (the logits' width).
    pub vocabulary: usize,
    /// Characters of context.
    pub context: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Attention heads (dividing `width`).
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
}

/// Layer normalisation over the last dimension from differentiable ops (PyTorch's
/// `nn.LayerNorm`, eps 1e-5, biased variance).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(width, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(width, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// One pre-norm block: x + attention(LN(x)), then x + MLP(LN(x)).
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    up: Linear,
    down: Linear,
    heads: usize,
}

impl Block {
    fn new(width: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            ln1: LayerNorm::new(width, vb.pp("ln1"))?,
            qkv: candle_nn::linear(width, 3 * width, vb.pp("qkv"))?,
            proj: candle_nn::linear(width, width, vb.pp("proj"))?,
            ln2: LayerNorm::new(width, vb.pp("ln2"))?,
            up: candle_nn::linear(width, 4 * width, vb.pp("up"))?,
            down: candle_nn::linear(4 * width, width, vb.pp("down"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (n, t, c) = x.dims3()?;
        let h = self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        // (n, t, 3, h, c/h) -> three (n, h, t, c/h)
        let qkv = qkv.reshape((n, t, 3, h, c / h))?.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let scores =
            (q.matmul(&k.t()?.contiguous()?)? / ((c / h) as f64).sqrt())?.broadcast_add(mask)?;
        let attention = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let mixed = attention
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, t, c))?;
        let x = (x + self.proj.forward(&mixed)?)?;
        let hidden = self.up.forward(&self.ln2.forward(&x)?)?.gelu()?;
        x + self.down.forward(&hidden)?
    }
}

/// A small causal Transformer over characters that predicts the character after its
/// context: token and learned position embeddings, `layers` pre-norm blocks, a final layer
/// norm and a linear read-out of the last position.
pub struct CharTransformer {
    config: CharTransformerConfig,
    tokens: Embedding,
    positions: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    mask: Tensor,
}

impl CharTransformer {
    /// The model, its parameters created in `vb` (initialised by candle-nn's defaults:
    /// embeddings N(0, 1), linear layers U(±1/√fan_in), position embeddings N(0, 0.02²)).
    pub fn new(config: CharTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        if c.width == 0 || c.heads == 0 || !c.width.is_multiple_of(c.heads) {
            return Err(Error::Model {
                message: format!(
                    "width {} must be a positive multiple of the {} heads",
                    c.width, c.heads
                ),
            });
        }
        if c.vocabulary == 0 || c.context == 0 || c.layers == 0 {
            return Err(Error::Model {
                message: "vocabulary, context and layers must each be at least 1".into(),
            });
        }
        let blocks = (0..c.layers)
            .map(|i| Block::new(c.width, c.heads, vb.pp(format!("block{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let mut mask = vec![0f32; c.context * c.context];
        for i in 0..c.context {
            for j in i + 1..c.context {
                mask[i * c.context + j] = f32::NEG_INFINITY;
            }
        }
        Ok(CharTransformer {
            config,
            tokens: candle_nn::embedding(c.vocabulary, c.width, vb.pp("tokens"))?,
            positions: vb.get_with_hints(
                (c.context, c.width),
                "positions",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            blocks,
            ln_f: LayerNorm::new(c.width, vb.pp("ln_f"))?,
            head: candle_nn::linear(c.width, c.vocabulary, vb.pp("head"))?,
            mask: Tensor::from_vec(mask, (c.context, c.context), &Device::Cpu)?
                .to_dtype(vb.dtype())?,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> CharTransformerConfig {
        self.config
    }

    /// Draws the parameters in `varmap` (those [`CharTransformer::new`] created there) again
    /// from `seed`, with the same distributions: candle's CPU random numbers cannot be seeded,
    /// so a run is reproducible only this way. Token embeddings N(0, 1), position embeddings
    /// N(0, 0.02²), linear weights and biases U(±1/√fan_in), layer norms 1 and 0.
    pub fn seed_parameters(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
        let data = varmap.data().lock().expect("the VarMap's lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut rng = gradlab::landscape::Rng::new(seed);
        for name in names {
            let var = &data[name];
            let n = var.elem_count();
            let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
            let values: Vec<f64> = if name == "tokens.weight" {
                (0..n).map(|_| rng.normal()).collect()
            } else if name == "positions" {
                (0..n).map(|_| 0.02 * rng.normal()).collect()
            } else if prefix.ends_with("ln1") || prefix.ends_with("ln2") || prefix == "ln_f" {
                vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
            } else {
                let weight = data
                    .get(&format!("{prefix}.weight"))
                    .ok_or_else(|| Error::Model {
                        message: format!("'{name}' is not a parameter of a CharTransformer"),
                    })?;
                let bound = 1.0 / (weight.dims()[1] as f64).sqrt();
                (0..n)
                    .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
                    .collect()
            };
            let t = Tensor::from_vec(values, var.shape(), &Device::Cpu)?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }
}

impl ModuleT for CharTransformer {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let (n, _, t) = x.dims3()?;
        if t != self.config.context {
            candle_core::bail!(
                "the model reads {} characters of context, the batch has {t}",
                self.config.context
            );
        }
        let ids = x.reshape((n, t))?.to_dtype(DType::U32)?;
        let mut h = self
            .tokens
            .forward(&ids)?
            .broadcast_add(&self.positions.to_dtype(self.tokens.embeddings().dtype())?)?;
        let mask = self.mask.to_dtype(h.dtype())?;
        for block in &self.blocks {
            h = block.forward(&h, &mask)?;
        }
        let last = self.ln_f.forward(&h)?.narrow(1, t - 1, 1)?.squeeze(1)?;
        self.head.forward(&last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn seeded_parameters_are_reproducible_and_follow_the_initialisation() {
        let config = CharTransformerConfig {
            vocabulary: 7,
            context: 4,
            width: 16,
            heads: 2,
            layers: 1,
        };
        let draw = |seed: u64| {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            CharTransformer::new(config, vb).unwrap();
            CharTransformer::seed_parameters(&varmap, seed).unwrap();
            let data = varmap.data().lock().unwrap();
            let mut all: Vec<(String, Vec<f32>)> = data
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                    )
                })
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let (a, b, c) = (draw(1), draw(1), draw(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let get = |name: &str| &a.iter().find(|(k, _)| k == name).unwrap().1;
        assert!(get("block0.ln1.weight").iter().all(|&w| w == 1.0));
        assert!(get("block0.qkv.weight").iter().all(|&w| w.abs() <= 0.25));
        assert!(get("block0.down.bias").iter().all(|&w| w.abs() <= 0.125));
        let positions = get("positions");
        assert!(positions.iter().all(|&w| w.abs() < 0.2));
    }

    #[test]
    fn windows_label_the_next_character_and_parts_do_not_overlap() {
        let corpus = CharCorpus::new("abcabcabcabcabcabcabcabcabcabc").unwrap();
        assert_eq!(corpus.vocabulary, vec!['a', 'b', 'c']);
        let split = corpus.split(4, 2, 0.3).unwrap();
        assert_eq!(split.train.cols, 4);
        // "abca" -> 'b', then from index 2: "cabc" -> 'a'.
        assert_eq!(&split.train.images[..4], &[0.0, 1.0, 2.0, 0.0]);
        assert_eq!(split.train.labels[0], 1);
        assert_eq!(split.train.labels[1], 0);
        // Training windows end before the test part begins (cut at 21).
        assert_eq!(split.train.len(), 9);
        assert!(!split.test.is_empty());
        assert!(CharCorpus::new("a").is_err());
        assert!(corpus.split(40, 1, 0.5).is_err());
    }

    #[test]
    fn every_parameter_gets_the_gradient_finite_differences_give() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let config = CharTransformerConfig {
            vocabulary: 5,
            context: 6,
            width: 8,
            heads: 2,
            layers: 2,
        };
        let model = CharTransformer::new(config, vb).unwrap();
        let x = Tensor::new(
            &[[[0f32, 1., 2., 3., 4., 0.]], [[4f32, 3., 2., 1., 0., 1.]]],
            &Device::Cpu,
        )
        .unwrap();
        let logits = model.forward_t(&x, true).unwrap();
        assert_eq!(logits.dims(), &[2, 5]);
        let y = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(norm > 0.0, "{name}: zero gradient");
        }
        // Gradients agree with central finite differences of the loss.
        let data = varmap.data().lock().unwrap();
        for name in [
            "block0.ln1.weight",
            "block1.qkv.weight",
            "positions",
            "tokens.weight",
        ] {
            let var = &data[name];
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let i = base.len() / 3;
            let loss_at = |delta: f64| {
                let mut w = base.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = candle_nn::loss::cross_entropy(&model.forward_t(&x, true).unwrap(), &y)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                l
            };
            let h = 1e-6;
            let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
            assert!(
                (numeric - g[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{name}: {numeric} vs {}",
                g[i]
            );
        }
        drop(data);
    }

    /// Why the model has its own layer norm: candle-nn's gives its parameters no gradient on
    /// a contiguous input (if this starts failing, candle has fixed it).
    #[test]
    fn candle_nns_layer_norm_has_no_backward_on_contiguous_inputs() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let ln = candle_nn::layer_norm(4, 1e-5, vb.pp("ln")).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3., 5.]], &Device::Cpu).unwrap();
        let loss = ln.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert!(grads.get(data["ln.weight"].as_tensor()).is_none());
        drop(data);
        let ours = LayerNorm::new(
            4,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("ours"),
        )
        .unwrap();
        let loss = ours.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert!(grads.get(data["ours.weight"].as_tensor()).is_some());
    }
}
