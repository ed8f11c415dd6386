#!/usr/bin/env python3
"""PyTorch reference Paramixer for LongMixer's parity tests (our own gather-based re-implementation).

Semantics follow the authors' code (wiedersehne/Paramixer, LRA/paramixer.py and
Synthetic-data-tasks/paramixer.py; see the Paramixer reference notes, sections 1-3):
  - factor m: out[b,i,:] = sum_k W[b,i,k] * V[b,(i+off_k) mod N,:], W = f_m(data), no softmax;
    duplicate links are separate slots and add up (torch_sparse.spmm = gather + scatter_add);
  - block: V = g(V); for m: V = factor_m(V) + V; V = dropout2(V);
  - model: data = embedding(tokens) or init_linear(features); [+ apc_embedding(arange(N))];
    data = dropout1(data); V = dropout1(data); blocks(V, data); FLATTEN or CLS; final Linear.
Attribute names (embedding, init_linear, apc_embedding, attention.<l>.g, attention.<l>.fs.<m>, final)
are those of the original module, and the Swift `Paramixer` uses the same dotted names.

Regenerate the fixtures (from the package root):

    python3 Scripts/reference/paramixer_reference.py --out Tests/Fixtures

The benchmarks' PyTorch side (Scripts/bench/torch_worker.py) builds its Paramixer from this module.

Each case writes Tests/Fixtures/paramixer_<case>.safetensors with
  input.tokens (int32 [B,N]) or input.features (float32 [B,N,F]),
  targets.classes (int32 [B]) or targets.values (float32 [B,C]),
  logits [B,C], loss [1], param.<name> and grad.<name> for every parameter,
and paramixer_<case>.json holding the Swift ParamixerConfiguration (same JSON keys).
The forward/backward runs in float64 from float32 initial weights; outputs are stored as float32.
"""
import argparse
import json
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file


def factor_count(n, rule):
    if n < 2:
        raise ValueError(f"sequence length N = {n} is too short; sparse factors need N >= 2")
    floor_log = n.bit_length() - 1
    if rule == "floor":
        return floor_log
    if rule == "ceil":
        return floor_log if (n & (n - 1)) == 0 else floor_log + 1
    raise ValueError(f"unknown factor-count rule {rule!r}")


def offset_table(protocol, n, rule):
    m_count = factor_count(n, rule)
    if protocol == "chord":
        return [[0] + [(2 ** k) % n for k in range(m_count)] for _ in range(m_count)]
    if protocol == "cdil":
        table = []
        for m in range(m_count):
            d = 2 ** m
            table.append([0] + [(k * d) % n for k in range(1, 5)] + [(-k * d) % n for k in range(1, 5)])
        return table
    raise ValueError(f"unknown link protocol {protocol!r}")


def factor_gather(w, v, offsets):
    """out[b,i,:] = sum_k w[b,i,k] v[b,(i+off_k)%N,:] by an explicit gather (B,N,L,D)."""
    n = v.shape[1]
    cols = (torch.arange(n).unsqueeze(1) + torch.tensor(offsets).unsqueeze(0)) % n  # [N, L]
    return (w.unsqueeze(-1) * v[:, cols, :]).sum(dim=2)


def factor_scatter(w, v, offsets):
    """The reference spmm semantics: gather rows by column index, scale, scatter_add into rows."""
    b, n, _ = v.shape
    l = len(offsets)
    rows = torch.arange(n).repeat_interleave(l)
    cols = ((torch.arange(n).unsqueeze(1) + torch.tensor(offsets).unsqueeze(0)) % n).reshape(-1)
    contrib = v[:, cols, :] * w.reshape(b, n * l, 1)
    out = torch.zeros_like(v)
    return out.index_add(1, rows, contrib)


def factor_shift(w, v, offsets):
    """Same product without the (B,N,L,D) gather: per slot, two in-place addcmul_ on shifted slices
    (the fastest torch formulation of the product). The benchmark worker uses it."""
    n = v.shape[1]
    out = w[:, :, 0:1] * v if offsets[0] == 0 else torch.zeros_like(v)
    start = 1 if offsets[0] == 0 else 0
    for k in range(start, len(offsets)):
        off = offsets[k]
        wk = w[:, :, k:k + 1]
        if off == 0:
            out = out + wk * v
            continue
        out[:, :n - off].addcmul_(wk[:, :n - off], v[:, off:])
        out[:, n - off:].addcmul_(wk[:, n - off:], v[:, :off])
    return out


FACTOR = factor_gather


def mlp(d_in, hidden, d_out):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class AttentionModule(nn.Module):
    def __init__(self, d, h, offsets, dropout2, residual="every-factor"):
        super().__init__()
        self.residual = residual
        self.g = mlp(d, h, d)
        self.fs = nn.ModuleList([mlp(d, h, len(o)) for o in offsets])
        self.dropout2 = nn.Dropout(dropout2)
        self.offsets = offsets

    def forward(self, v, data):
        v = self.g(v)
        block_input = v
        for f, off in zip(self.fs, self.offsets):
            # every-factor: the released code; block-input: "move res_conn=V outside this for loop".
            res = v if self.residual == "every-factor" else block_input
            v = FACTOR(f(data), v, off) + res
        return self.dropout2(v)


class ParamixerReference(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, n = cfg["embeddingSize"], cfg["length"]
        if cfg.get("vocabularySize") is not None:
            self.embedding = nn.Embedding(cfg["vocabularySize"], d, padding_idx=cfg.get("paddingIndex"))
        else:
            self.init_linear = nn.Linear(cfg["inputFeatures"], d, bias=True)
        if cfg["positionalEmbedding"]:
            self.apc_embedding = nn.Embedding(n, d)
        self.dropout1 = nn.Dropout(cfg["dropout1"])
        table = offset_table(cfg["linkProtocol"], n, cfg["factorCountRule"])
        self.attention = nn.ModuleList(
            [AttentionModule(d, cfg["hiddenSize"], table, cfg["dropout2"], cfg["residual"]) for _ in range(cfg["blocks"])])
        self.final = nn.Linear(n * d if cfg["pooling"] == "flatten" else d, cfg["outputCount"])
        self.cfg = cfg

    def forward(self, x):
        n = self.cfg["length"]
        data = self.embedding(x) if self.cfg.get("vocabularySize") is not None else self.init_linear(x)
        if self.cfg["positionalEmbedding"]:
            data = data + self.apc_embedding(torch.arange(n))
        data = self.dropout1(data)
        v = self.dropout1(data)
        for block in self.attention:
            v = block(v, data)
        if self.cfg["pooling"] == "cls":
            v = v[:, 0, :]
        return self.final(v.reshape(v.shape[0], -1))


def base_config(**kw):
    cfg = dict(vocabularySize=None, inputFeatures=None, length=16, embeddingSize=8, hiddenSize=8, blocks=1,
               linkProtocol="chord", factorCountRule="ceil", dropout1=0.0, dropout2=0.0, pooling="flatten",
               positionalEmbedding=False, paddingIndex=None, outputCount=3, residual="every-factor")
    cfg.update(kw)
    return cfg


CASES = {
    "chord_n16_flatten_1block": base_config(vocabularySize=10, length=16, positionalEmbedding=True, paddingIndex=8),
    "cdil_n16_cls_2blocks": base_config(vocabularySize=10, length=16, blocks=2, linkProtocol="cdil", pooling="cls",
                                        outputCount=4),
    "chord_n37_flatten_2blocks": base_config(vocabularySize=7, length=37, blocks=2, positionalEmbedding=True),
    "cdil_n37_cls_1block_floor": base_config(vocabularySize=7, length=37, linkProtocol="cdil", factorCountRule="floor",
                                             pooling="cls", positionalEmbedding=True, outputCount=2),
    "cdil_n8_flatten_2blocks": base_config(vocabularySize=5, length=8, blocks=2, linkProtocol="cdil"),
    "adding_n16_chord_flatten": base_config(inputFeatures=2, length=16, outputCount=1),
    "order_n32_blockinput_2blocks": base_config(vocabularySize=6, length=32, blocks=2, positionalEmbedding=True,
                                                outputCount=4, residual="block-input"),
    "adding_n21_cdil_blockinput": base_config(inputFeatures=2, length=21, linkProtocol="cdil", outputCount=1,
                                              residual="block-input"),
}


def make_case(name, cfg, seed, batch=2):
    torch.manual_seed(seed)
    model = ParamixerReference(cfg)
    params32 = {k: p.detach().clone().float() for k, p in model.named_parameters()}
    model = model.double()
    model.eval()  # dropout is 0 in every case; eval makes that explicit
    n = cfg["length"]
    tensors = {}
    if cfg.get("vocabularySize") is not None:
        tokens = torch.randint(0, cfg["vocabularySize"], (batch, n))
        if cfg.get("paddingIndex") is not None:
            tokens[:, -3:] = cfg["paddingIndex"]  # padded tail: its embedding row must get no gradient
        x = tokens
        tensors["input.tokens"] = tokens.to(torch.int32)
    else:
        # Adding problem: (value in (-1, 1], marker) pairs with two marked positions per sequence.
        values = 1 - 2 * torch.rand(batch, n, dtype=torch.float32)
        markers = torch.zeros(batch, n)
        for b in range(batch):
            p = torch.randperm(n)[:2]
            markers[b, p] = 1
        x32 = torch.stack([values, markers], dim=-1)
        x = x32.double()
        tensors["input.features"] = x32
    logits = model(x)
    if cfg.get("vocabularySize") is not None:
        targets = torch.randint(0, cfg["outputCount"], (batch,))
        loss = nn.functional.cross_entropy(logits, targets)
        tensors["targets.classes"] = targets.to(torch.int32)
    else:
        target_values = (0.5 + (x[:, :, 0] * x[:, :, 1]).sum(1, keepdim=True) / 4).float()
        loss = nn.functional.mse_loss(logits, target_values.double())
        tensors["targets.values"] = target_values
    loss.backward()
    tensors["logits"] = logits.detach().float()
    tensors["loss"] = loss.detach().float().reshape(1)
    for k, p in model.named_parameters():
        tensors["param." + k] = params32[k]
        tensors["grad." + k] = p.grad.detach().float()
    return tensors


def self_check():
    """Gather form == spmm scatter form, including CDIL duplicates (N = 8) and N not a power of two."""
    g = torch.Generator().manual_seed(0)
    for protocol, n in [("chord", 8), ("cdil", 8), ("chord", 13), ("cdil", 13), ("cdil", 16)]:
        for off in offset_table(protocol, n, "ceil"):
            w = torch.randn(2, n, len(off), generator=g, dtype=torch.float64)
            v = torch.randn(2, n, 5, generator=g, dtype=torch.float64)
            assert torch.allclose(factor_gather(w, v, off), factor_scatter(w, v, off)), (protocol, n, off)
    assert offset_table("cdil", 8, "ceil") == [[0, 1, 2, 3, 4, 7, 6, 5, 4], [0, 2, 4, 6, 0, 6, 4, 2, 0],
                                               [0, 4, 0, 4, 0, 4, 0, 4, 0]]
    assert offset_table("chord", 8, "ceil")[0] == [0, 1, 2, 4]
    for protocol, n in [("chord", 13), ("cdil", 8), ("cdil", 37)]:
        for off in offset_table(protocol, n, "ceil"):
            w = torch.randn(2, n, len(off), generator=g, dtype=torch.float64)
            v = torch.randn(2, n, 5, generator=g, dtype=torch.float64)
            assert torch.allclose(factor_shift(w, v, off), factor_gather(w, v, off)), (protocol, n, off)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="Tests/Fixtures")
    args = parser.parse_args()
    self_check()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, cfg) in enumerate(CASES.items()):
        tensors = make_case(name, cfg, seed=1000 + i)
        path = os.path.join(args.out, f"paramixer_{name}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        with open(os.path.join(args.out, f"paramixer_{name}.json"), "w") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True)
            fh.write("\n")
        n_params = sum(1 for k in tensors if k.startswith("param."))
        print(f"{path}: {n_params} parameters, loss {tensors['loss'].item():.6f}")


if __name__ == "__main__":
    main()
