//! The text side: the prompt tokenizers and umT5's relative-position buckets.

use crate::common::tmp;
use candle_core::Result;
use wan_t2v::{t5, tokenizer};

#[test]
fn t5_relative_buckets() {
    // 32 buckets, bidirectional: 16 per side, 8 exact, log-spaced up to distance 128.
    let b = |r| t5::relative_bucket(r, 32, 128);
    assert_eq!(b(0), 0);
    assert_eq!(b(-1), 1);
    assert_eq!(b(-7), 7);
    assert_eq!(b(-8), 8);
    assert_eq!(b(1), 17);
    assert_eq!(b(7), 23);
    assert_eq!(b(-16), 10); // 8 + trunc(ln 2 / ln 16 * 8) = 8 + 2
    assert_eq!(b(-127), 15);
    assert_eq!(b(-128), 15);
    assert_eq!(b(-10_000), 15);
    assert_eq!(b(10_000), 31);
}

#[test]
fn tokenizers_bytes_and_json() -> Result<()> {
    let b = tokenizer::PromptTokenizer::Bytes;
    // Whitespace collapsed as Wan's `clean='whitespace'`, bytes + 3, eos 1 appended.
    assert_eq!(
        b.encode("  a \n b ", 64, 259)?,
        vec![97 + 3, 32 + 3, 98 + 3, 1]
    );
    assert_eq!(b.encode("abcdef", 3, 259)?, vec![100, 101, 102]);
    assert_eq!(b.encode("", 8, 259)?, vec![1]);
    let e = b.encode("z", 8, 100).unwrap_err().to_string();
    assert!(e.contains("--tokenizer") && e.contains("t5.vocab"), "{e}");

    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
      "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
      "model":{"type":"WordLevel","vocab":{"<unk>":0,"a":5,"red":6,"fox":7},"unk_token":"<unk>"}}"#;
    let path = tmp("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let t = tokenizer::PromptTokenizer::from_file(&path)?;
    assert_eq!(t.encode("a red  fox jumps", 64, 259)?, vec![5, 6, 7, 0]);
    let e = tokenizer::PromptTokenizer::from_file(&tmp("missing_tokenizer.json")).unwrap_err();
    assert!(e.to_string().contains("--tokenizer"));
    Ok(())
}
