"""Write a tiny random-weight llama-architecture GGUF that llama.cpp's llama-server loads and serves.

    python scripts/make_tiny_gguf.py OUT [--embd 64 --layers 2 --ff 128 --heads 4]

No download: the weights are random (a fixed seed: the same bytes on every run for the same
arguments), the vocabulary a byte-fallback SentencePiece one (3 control tokens, the 256 byte
tokens, printable ASCII and a few word pieces). Generations are gibberish, which is all a serving
test needs. The defaults give about 300 KB that loads in well under a second; larger sizes (more
layers, wider) make a model that decodes slowly enough on a CPU to keep a slot busy for a while.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import gguf
import numpy as np

SEED = 20261202
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ("the", "a", "and", "of", "to", "in", "is", "it", "hi", "hello", "ok", "GPU", "server", "model", "token")


def vocabulary() -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types: <unk> <s> </s>, <0x00>..<0xFF>, printable characters, word pieces."""
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
    pieces = ["\u2581", *[c for c in string.printable if c.strip()]]
    pieces += [f"\u2581{c}" for c in string.ascii_letters]
    pieces += [f"\u2581{w}" for w in WORDS] + list(WORDS)
    for piece in dict.fromkeys(pieces):  # ordered, no duplicates
        tokens.append(piece.encode())
        types.append(gguf.TokenType.NORMAL)
    # SentencePiece merges the highest-scoring piece first: longer pieces score higher.
    scores = [0.0] * 259 + [float(len(t.decode())) - i / 1e4 for i, t in enumerate(tokens[259:])]
    return tokens, scores, [int(t) for t in types]


def write(out: Path, embd: int, layers: int, ff: int, heads: int) -> None:
    if embd % heads:
        raise SystemExit(f"make_tiny_gguf: --embd {embd} is not a multiple of --heads {heads}")
    rng = np.random.default_rng(SEED)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(f"gpu-watchdog tiny test model ({layers}x{embd}, random weights)")
    writer.add_context_length(4096)
    writer.add_embedding_length(embd)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embd // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML)

    # numpy shapes are (rows, columns) = GGUF's (ne[1], ne[0]): llama.cpp's {n_embd, n_vocab} is (n_vocab, n_embd).
    writer.add_tensor("token_embd.weight", weight(n_vocab, embd))
    for layer in range(layers):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(embd, embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(embd, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(ff, embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(ff, embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(embd, ff))
    writer.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ff", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args(argv)
    write(args.out, args.embd, args.layers, args.ff, args.heads)
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
