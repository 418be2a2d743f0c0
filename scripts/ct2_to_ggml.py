#!/usr/bin/env python3
"""Converts a Whisper model from CTranslate2 format to whisper.cpp's ggml f16 or q8_0.

Usage: ct2_to_ggml.py --vocabulary vocabulary.txt --out ggml.bin [--quantize q8_0] model.bin [more parts...]

The model may come split in several files: they are read one after the other as
one stream. The output is written under a temporary name and renamed, so a
reader never sees a partial file. Needs numpy only.

Layouts:
- CTranslate2 model.bin (src/models/model.cc, python/ctranslate2/specs/model_spec.py):
  u32 binary version (>= 4 here), string spec name, u32 spec revision, u32 variable
  count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte
  count, raw little-endian data; then u32 alias count and (alias, target) strings.
  A string is a u16 length (NUL included) followed by its bytes.
- whisper.cpp ggml (models/convert-pt-to-ggml.py): magic, 11 i32 hyper-parameters,
  the mel filterbank (i32 n_mel, i32 n_fft, f32 data), the byte-level vocabulary
  (i32 count, then i32 length + bytes each), then per tensor: i32 n_dims, i32 name
  length, i32 ftype (0 f32, 1 f16, 8 q8_0), i32 dims innermost first, name, data.
- q8_0 (ggml-quants.c `quantize_row_q8_0_ref`; whisper.cpp examples/quantize): the
  matrices whisper.cpp makes of the file's weight type (every 2-D f16 tensor but the
  positional embeddings) in blocks of 32 along a row, each an f16 scale d = max|x| / 127
  and 32 i8 round(x / d); the header's ftype is 7 (mostly q8_0) + 1000 x the
  quantization version 2. The scale is taken of the f16 values the f16 file would hold.
"""

import argparse
import os
import struct
import sys

import numpy as np

GGML_MAGIC = 0x67676D6C
GGML_TYPE_Q8_0 = 8
GGML_FTYPE_MOSTLY_Q8_0 = 7
GGML_QNT_VERSION = 2
Q8_BLOCK = 32
SAMPLE_RATE = 16000
N_FFT = 400

# CTranslate2's DataType enum (include/ctranslate2/types.h).
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class Ct2Reader:
    """Reads the variables of a CTranslate2 model.bin held in memory."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"model.bin truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self):
        (n,) = self.unpack("H")
        if n == 0:
            raise ValueError("empty string in model.bin")
        return bytes(self.take(n)[:-1]).decode("utf-8")

    def variables(self):
        (version,) = self.unpack("I")
        if version < 4:
            raise ValueError(f"CTranslate2 binary version {version} is not supported (need >= 4)")
        spec = self.string()
        self.unpack("I")  # spec revision
        if spec != "WhisperSpec":
            raise ValueError(f"not a Whisper model: spec {spec}")
        (count,) = self.unpack("I")
        out = {}
        for _ in range(count):
            name = self.string()
            (rank,) = self.unpack("B")
            dims = self.unpack(f"{rank}I")
            dtype_id, nbytes = self.unpack("BI")
            if dtype_id not in CT2_DTYPES:
                raise ValueError(f"{name}: unsupported CTranslate2 dtype {dtype_id} (quantized model?)")
            arr = np.frombuffer(self.take(nbytes), dtype=np.dtype(CT2_DTYPES[dtype_id]).newbyteorder("<"))
            out[name] = arr.reshape(dims)
        if len(self.data) - self.pos >= 4:
            (aliases,) = self.unpack("I")
            for _ in range(aliases):
                alias, target = self.string(), self.string()
                out[alias] = out[target]
        return out


def mel_filters(n_mels, sr=SAMPLE_RATE, n_fft=N_FFT):
    """librosa.filters.mel(sr, n_fft, n_mels) with Slaney scale and norm, as
    openai/whisper's mel_filters.npz holds it (float32, same rounding steps)."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        return min_log_mel + np.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    def mel_to_hz(m):
        freqs = f_sp * m
        log_t = m >= min_log_mel
        freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
        return freqs

    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def byte_decoder():
    """GPT-2's byte-level alphabet, reversed: printable stand-in char -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def text_tokens(vocabulary_path):
    """The ordinary tokens as bytes, in id order. whisper.cpp takes them up to
    <|endoftext|> and names the special ones itself (the multilingual vocabulary
    has an empty token at 50256, which it expects)."""
    with open(vocabulary_path, encoding="utf-8") as f:
        words = f.read().split("\n")
    if "<|endoftext|>" not in words:
        raise ValueError(f"{vocabulary_path}: no <|endoftext|> token")
    dec = byte_decoder()
    return [bytes(dec[c] for c in w) for w in words[: words.index("<|endoftext|>")]]


def layer_count(v, stack):
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def tensors(v):
    """(ggml name, array) in the order the file lists them. CTranslate2 fuses
    self-attention q|k|v and cross-attention k|v; whisper.cpp wants them apart,
    with no key bias (CTranslate2 stores zeros there)."""
    d = v["encoder/conv1/weight"].shape[0]
    out = [
        ("encoder.positional_embedding", v["encoder/position_encodings/encodings"]),
        ("encoder.conv1.weight", v["encoder/conv1/weight"]),
        ("encoder.conv1.bias", v["encoder/conv1/bias"].reshape(-1, 1)),
        ("encoder.conv2.weight", v["encoder/conv2/weight"]),
        ("encoder.conv2.bias", v["encoder/conv2/bias"].reshape(-1, 1)),
    ]

    def ln(name, src):
        return [(f"{name}.weight", v[f"{src}/gamma"]), (f"{name}.bias", v[f"{src}/beta"])]

    def linear(name, src, rows=slice(None), bias=True):
        pairs = [(f"{name}.weight", v[f"{src}/weight"][rows])]
        if bias:
            pairs.append((f"{name}.bias", v[f"{src}/bias"][rows]))
        return pairs

    def fused(prefix, src, parts):
        pairs = []
        for i, part in enumerate(parts):
            pairs += linear(f"{prefix}.{part}", src, slice(i * d, (i + 1) * d), bias=part != "key")
        return pairs

    def mlp(p, src):
        return ln(f"{p}.mlp_ln", f"{src}/ffn/layer_norm") + linear(f"{p}.mlp.0", f"{src}/ffn/linear_0") + linear(f"{p}.mlp.2", f"{src}/ffn/linear_1")

    for i in range(layer_count(v, "encoder")):
        p, s = f"encoder.blocks.{i}", f"encoder/layer_{i}"
        out += ln(f"{p}.attn_ln", f"{s}/self_attention/layer_norm")
        out += fused(f"{p}.attn", f"{s}/self_attention/linear_0", ["query", "key", "value"])
        out += linear(f"{p}.attn.out", f"{s}/self_attention/linear_1")
        out += mlp(p, s)
    out += ln("encoder.ln_post", "encoder/layer_norm")
    out += [
        ("decoder.positional_embedding", v["decoder/position_encodings/encodings"]),
        ("decoder.token_embedding.weight", v["decoder/embeddings/weight"]),
    ]
    for i in range(layer_count(v, "decoder")):
        p, s = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        out += ln(f"{p}.attn_ln", f"{s}/self_attention/layer_norm")
        out += fused(f"{p}.attn", f"{s}/self_attention/linear_0", ["query", "key", "value"])
        out += linear(f"{p}.attn.out", f"{s}/self_attention/linear_1")
        out += ln(f"{p}.cross_attn_ln", f"{s}/attention/layer_norm")
        out += linear(f"{p}.cross_attn.query", f"{s}/attention/linear_0")
        out += fused(f"{p}.cross_attn", f"{s}/attention/linear_1", ["key", "value"])
        out += linear(f"{p}.cross_attn.out", f"{s}/attention/linear_2")
        out += mlp(p, s)
    out += ln("decoder.ln", "decoder/layer_norm")
    return out


def q8_0(data):
    """Blocks of 32 along the innermost axis: f16 scale, then 32 int8 values."""
    x = np.asarray(data, dtype=np.float16).astype(np.float32).reshape(-1, Q8_BLOCK)
    d = np.abs(x).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    blocks = np.empty(x.shape[0], dtype=[("d", "<f2"), ("qs", "i1", Q8_BLOCK)])
    blocks["d"] = d.astype(np.float16)
    # Half away from zero, as C's roundf in ggml's reference quantizer.
    blocks["qs"] = np.trunc(x * inv[:, None] + np.copysign(0.5, x)).astype(np.int8)
    return blocks.tobytes()


def hparams(v, quantize=None):
    n_vocab, n_text_state = v["decoder/embeddings/weight"].shape
    n_audio_state, n_mels, _ = v["encoder/conv1/weight"].shape
    return [
        n_vocab,
        v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state,
        int(v["encoder/num_heads"]),
        layer_count(v, "encoder"),
        v["decoder/position_encodings/encodings"].shape[0],
        n_text_state,
        int(v["decoder/num_heads"]),
        layer_count(v, "decoder"),
        n_mels,
        # ftype: f16 matrices (whisper-rs 0.16 aborts on f32 files), or q8_0.
        GGML_FTYPE_MOSTLY_Q8_0 + 1000 * GGML_QNT_VERSION if quantize == "q8_0" else 1,
    ]


def write_ggml(fout, v, tokens, quantize=None):
    hp = hparams(v, quantize)
    fout.write(struct.pack("<I", GGML_MAGIC))
    fout.write(struct.pack("<11i", *hp))
    filters = mel_filters(hp[9])
    fout.write(struct.pack("<2i", *filters.shape))
    fout.write(filters.astype("<f4").tobytes())
    fout.write(struct.pack("<i", len(tokens)))
    for t in tokens:
        fout.write(struct.pack("<i", len(t)))
        fout.write(t)
    for name, data in tensors(v):
        # Vectors, conv biases and positional embeddings stay f32, as whisper.cpp's
        # own converter keeps them; matrices are f16.
        small = data.ndim < 2 or name.endswith("conv1.bias") or name.endswith("conv2.bias") or name.endswith("positional_embedding")
        ftype = 0 if small else 1
        data = np.ascontiguousarray(data, dtype="<f4" if small else "<f2")
        payload = data.tobytes()
        if quantize == "q8_0" and ftype == 1 and data.ndim == 2 and data.shape[-1] % Q8_BLOCK == 0:
            ftype = GGML_TYPE_Q8_0
            payload = q8_0(data)
        encoded = name.encode("utf-8")
        fout.write(struct.pack("<3i", data.ndim, len(encoded), ftype))
        fout.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
        fout.write(encoded)
        fout.write(payload)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocabulary", required=True, help="CTranslate2 vocabulary.txt")
    ap.add_argument("--out", required=True, help="ggml file to write")
    ap.add_argument("--quantize", choices=["q8_0"], help="weight matrices as q8_0 instead of f16")
    ap.add_argument("model", nargs="+", help="model.bin, or its parts in order")
    args = ap.parse_args(argv)
    data = bytearray()
    for part in args.model:
        with open(part, "rb") as f:
            data += f.read()
    v = Ct2Reader(memoryview(data)).variables()
    tokens = text_tokens(args.vocabulary)
    tmp = f"{args.out}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fout:
            write_ggml(fout, v, tokens, args.quantize)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"ct2_to_ggml: {e}")
