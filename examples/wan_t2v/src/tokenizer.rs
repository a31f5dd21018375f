//! Prompt -> token ids: a `tokenizer.json` through the `tokenizers` crate (`--tokenizer`), or a
//! built-in byte tokenizer (id = byte + 3, T5's pad/eos/unk = 0/1/2, eos appended).

use candle_core::{Error, Result};
use std::path::Path;

pub const EOS: u32 = 1;

#[derive(Debug)]
pub enum PromptTokenizer {
    Bytes,
    Json(Box<tokenizers::Tokenizer>),
}

impl PromptTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Msg(format!("--tokenizer: cannot load {}: {e}", path.display())))?;
        Ok(Self::Json(Box::new(t)))
    }

    /// Token ids of `text` after Wan's whitespace clean-up, at most `max_len` of them, each
    /// checked against the text encoder's vocabulary size.
    pub fn encode(&self, text: &str, max_len: usize, vocab: usize) -> Result<Vec<u32>> {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut ids = match self {
            Self::Bytes => {
                let mut ids: Vec<u32> = text.bytes().map(|b| b as u32 + 3).collect();
                ids.push(EOS);
                ids
            }
            Self::Json(t) => t
                .encode(text.as_str(), true)
                .map_err(|e| Error::Msg(format!("--tokenizer: cannot encode the prompt: {e}")))?
                .get_ids()
                .to_vec(),
        };
        ids.truncate(max_len);
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Msg(format!(
                "--tokenizer: token id {bad} is outside the text encoder's vocabulary (t5.vocab = {vocab})"
            )));
        }
        if ids.is_empty() {
            ids.push(EOS.min(vocab as u32 - 1));
        }
        Ok(ids)
    }
}
