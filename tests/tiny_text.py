"""A tiny BERT triage classifier built in a second for the text-model tests: a deterministic WordPiece
vocabulary from the ``tokenizers`` BERT normaliser and pre-tokeniser (the WordPiece trainer is not
deterministic, huggingface/tokenizers#1794), a 2-layer, 2-head BERT trained a few steps, saved with
``save_pretrained``. Unknown words split into several pieces, which the word-merging tests need."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from tokenizers import normalizers, pre_tokenizers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = ["routine", "urgent"]
NOTES = Path(__file__).resolve().parents[1] / "api" / "demo" / "data" / "notes.csv"
MAX_TOKENS = 64


def notes(rows: int = 120) -> pd.DataFrame:
    return pd.read_csv(NOTES).head(rows)


def vocabulary(texts: list[str], max_words: int = 300, max_suffixes: int = 40) -> dict[str, int]:
    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    suffixes: Counter[str] = Counter()
    for word, count in words.items():
        for k in (2, 3, 4):
            if len(word) > k + 1:
                suffixes[word[-k:]] += count
    top_suffixes = [s for s, _ in sorted(suffixes.items(), key=lambda kv: (-kv[1], kv[0]))[:max_suffixes]]
    top_words = [w for w, n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if n >= 2][:max_words]
    vocab: dict[str, int] = {}
    for token in [
        *SPECIAL,
        *chars,
        *(f"##{c}" for c in chars),
        *(f"##{s}" for s in top_suffixes),
        *top_words,
    ]:
        vocab.setdefault(token, len(vocab))
    return vocab


def build_tiny_bert(out: Path, rows: int = 120, steps: int = 40, seed: int = 0) -> Path:
    """Train and save the tiny classifier into ``out``; returns ``out``."""
    data = notes(rows)
    texts, labels = data["text"].tolist(), data["label"].tolist()
    tokenizer = BertTokenizer(vocab=vocabulary(texts), model_max_length=MAX_TOKENS)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    target = torch.tensor([LABELS.index(v) for v in labels])
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(texts), generator=generator)[:32]
        loss = model(
            input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx], labels=target[idx]
        ).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_manifest(name: str = "triage") -> dict[str, object]:
    return {
        "name": name,
        "task": "text_classification",
        "classes": LABELS,
        "alert_class": "urgent",
        "max_tokens": MAX_TOKENS,
        "description": "Tiny test triage classifier",
    }
