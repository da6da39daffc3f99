"""HF Trainer stdout (no trainer_state.json): the printed ``{'loss': ...}`` dicts.

Layout facts: research/formats.md section 2.2. Lines carry no step: the step is the last tqdm
``N/M`` counter before the dict, else ``k * logging_steps`` (from a printed TrainingArguments
dump), else the dict's ordinal, with a warning saying which. Values may be quoted strings
(``'2.345'``) or ``nan``; they are parsed as text, never evaluated. Identical dicts printed by
several ranks are kept once; two dicts fused on one physical line are both read. DeepSpeed
overflow messages in the same file become loss-scale / skipped-step rows (see ``deepspeed``).
"""

from __future__ import annotations

import re
from pathlib import Path

from stabdiag.sources import deepspeed, textlog
from stabdiag.sources.raw import RawRun

FORMAT = "hf-stdout"

_SNIFF = re.compile(rb"\{'(?:loss|eval_loss|train_runtime)': ")


looks_like = textlog.sniffer(_SNIFF)


def read(path: Path) -> list[RawRun]:
    return deepspeed.read_stdout(path, FORMAT)
