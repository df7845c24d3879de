"""A tiny random-weight llama GGUF for tests: loads in milliseconds, generates gibberish.

The file is a real llama-architecture model (2 layers, embedding 64, 4 heads) with a
SentencePiece-style vocabulary that holds only control tokens and the 256 byte-fallback
tokens, so any UTF-8 text tokenizes (byte by byte) and any output detokenizes. It carries
a ChatML chat template, so llama.cpp's ``/v1/chat/completions`` works on it. Weights are
drawn from a seeded generator: the same ``seed`` writes the same bytes.

It is for exercising the serving path (process, HTTP, streaming, logprobs), never for
judging answers: assert on structure, not on text or exact token counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter, TokenType

__all__ = ["TINY_CHAT_TEMPLATE", "write_tiny_gguf"]

_LAYERS: Final = 2
_DIM: Final = 64
_HEADS: Final = 4
_KV_HEADS: Final = 4
_FFN: Final = 128
_CONTEXT: Final = 2048

# ChatML, as SmolLM2 and many instruct models use; the control tokens are in the vocab.
TINY_CHAT_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# id: (text, type). Ids 0-4 are control tokens; 5-260 are <0x00>..<0xFF>.
_CONTROL: Final = (
    ("<unk>", TokenType.UNKNOWN),
    ("<s>", TokenType.CONTROL),
    ("</s>", TokenType.CONTROL),
    ("<|im_start|>", TokenType.CONTROL),
    ("<|im_end|>", TokenType.CONTROL),
)
_UNK, _BOS, _EOS, _IM_END = 0, 1, 2, 4


def _output_head(random: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero the control tokens' rows and sharpen the byte rows, so a reply runs to
    ``max_tokens`` instead of sampling an end-of-turn token after a step or two."""
    head = random * 2.5
    head[: len(_CONTROL)] = 0.0
    return head


def write_tiny_gguf(path: Path | str, *, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (parent dirs must exist) and return it as a Path.

    Deterministic in ``seed``; overwrites an existing file. The caller owns the file.
    """
    out = Path(path)
    writer = GGUFWriter(out, "llama")
    try:
        _add_hyperparameters(writer)
        vocab = _add_vocab(writer)
        _add_tensors(writer, np.random.default_rng(seed), vocab)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return out


def _add_hyperparameters(writer: GGUFWriter) -> None:
    writer.add_name("tiermesh-tiny")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_DIM)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_rope_dimension_count(_DIM // _HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32


def _add_vocab(writer: GGUFWriter) -> int:
    tokens = [text for text, _ in _CONTROL] + [f"<0x{b:02X}>" for b in range(256)]
    types = [int(kind) for _, kind in _CONTROL] + [int(TokenType.BYTE)] * 256
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_unk_token_id(_UNK)
    writer.add_bos_token_id(_BOS)
    writer.add_eos_token_id(_IM_END)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    return len(tokens)


def _add_tensors(writer: GGUFWriter, rng: np.random.Generator, vocab: int) -> None:
    kv_dim = _KV_HEADS * (_DIM // _HEADS)

    def weight(*shape: int) -> npt.NDArray[np.float32]:
        # numpy shape is (out, in); GGUF stores it reversed, as llama.cpp expects.
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def ones() -> npt.NDArray[np.float32]:
        return np.ones(_DIM, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, _DIM))
    for layer in range(_LAYERS):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones())
        writer.add_tensor(f"{blk}.attn_q.weight", weight(_DIM, _DIM))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(kv_dim, _DIM))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(kv_dim, _DIM))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(_DIM, _DIM))
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones())
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(_FFN, _DIM))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(_FFN, _DIM))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(_DIM, _FFN))
    writer.add_tensor("output_norm.weight", ones())
    writer.add_tensor("output.weight", _output_head(weight(vocab, _DIM)))
