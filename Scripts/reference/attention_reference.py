#!/usr/bin/env python3
"""PyTorch reference of LongMixer's attention family (our own re-implementation) for the parity tests.

Semantics follow the PermuteFormer code (cpcp1998/PermuteFormer; the PermuteFormer reference notes,
sections 1-3 and 6), written independently of the Swift code and with the *naive* forms:
  - encoder (long_range_arena/models/performer_prenorm.py): word (pad 0) + token-type vector
    [+ learned | + sinusoidal positions] -> LayerNorm(eps 1e-12) -> dropout; pre-LN blocks
    x + Drop(Out(Attn(LN x))), x + Drop(Dense2(GELU(Dense1(LN x)))) with exact GELU; no final LN;
    pooler tanh(Dense(h[:, 0])); head Linear(D, C) | Linear(D, 1) | retrieval MLP(cat[p1, p2]).
    LongMixer's extensions for the synthetic tasks: real-valued input x [B, N, F] -> inputProjection
    Linear(F, D) in place of the word embedding (token-type vector, positions, LayerNorm unchanged, no
    mask); pooling "mean" (tanh(Dense(mean over non-padding positions))) or "flatten" (h as [B, N*D]
    straight into the head, no pooler); regression head Linear(., outputs) with MSE.
  - softmax: QK^T/sqrt(Dh) + (1 - mask) * -10000, softmax, @V.
  - performer: phi = relu + 1e-3, Q/K at featureMultiplier x Dh; padded keys zeroed after phi;
    out = phi(q)(phi(K)^T V) / phi(q).sum_j phi(k_j).
  - permuteFormer: the reference's expanded gather table (expanded[t] = expanded[t-1].gather(perm)),
    applied to q and k *before* phi as the original code (the Swift code permutes after phi).
  - permuteFormer2D: half-size permutation, table cat(expanded[:, x_ids], expanded[:, y_ids] + F/2)
    with CLS at (0, 0) and SEP at (W-1, H-1).
  - orthogonalFormer (w/o Property 3): R_h = U_h blockdiag(rot(theta)) U_h^T built explicitly and
    R_h^t by torch.linalg.matrix_power (the Swift code uses the rotation-block form).
  - ropePerformer (RoFormer eq. 19): rotate_every_two on phi(q), phi(k) in the numerator only.
  - favor (FAVOR+): x' = x F^-1/4, phi = m^-1/2 (exp(Omega x' - |x'|^2/2 - max) + 1e-6), max detached
    (per row for queries, per sequence and head for keys), normalised linear attention.
  - causalSoftmax (run_transformer.sh baseline): scaled dot product with a -inf future mask.
  - causal mixers (language_model/permute*/__init__.py): scores (phi(q_i) . phi(k_j)) r_h^(i-j) for
    j <= i built as an explicit N x N matrix, un-normalised or divided by its row sums.
  - LM (fairseq transformer_lm, pre-LN): embedding * sqrt(D) + sinusoidal(0..N-1), blocks with ReLU
    FFN, final LayerNorm, tied (or untied) output.
Attribute names equal the Swift property names, so dotted parameter names match 1:1.

Regenerate the fixtures (from the package root):

    python3 Scripts/reference/attention_reference.py --out Tests/Fixtures [--cases NAME ...]

--cases regenerates only the named cases (other PyTorch versions may round the existing files in the
last bit, so regenerate only what changed). Each case's seed is fixed by its position in CASE_ORDER:
append new cases at the end.

Each case writes Tests/Fixtures/attention_<case>.safetensors with input.tokens (int32) or input.features
(float32, [B, N, F]), targets.classes (int32) or targets.values (float32; BCE targets for the binary and
retrieval heads, MSE targets for the regression head), logits, loss [1], param.<name>, grad.<name> for
every parameter and buffer.<name> for every non-trainable buffer (permutation tables as float indices,
decay rates, random features, orthogonal bases and angles), and attention_<case>.json holding the Swift
configuration.
Weights are drawn at a larger scale than the N(0, 0.02) training init (so that ReLU features, permutations
and decays all matter); the forward/backward runs in float64 from float32 weights, stored as float32.
"""
import argparse
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as Fn
from safetensors.torch import save_file

MASK_BIAS = -10000.0


def split_heads(x, heads):
    b, n, w = x.shape
    return x.view(b, n, heads, w // heads).transpose(1, 2)


def merge_heads(x):
    b, h, n, e = x.shape
    return x.transpose(1, 2).reshape(b, n, h * e)


def sinusoidal(positions, d):
    half = d // 2
    scale = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -scale)
    angles = torch.tensor(positions, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def expand_permutation(length, permutation):
    """The reference's table: (H, length, F), expanded[t][j] = expanded[t-1][perm[j]]."""
    h, f = permutation.shape
    expanded = [torch.arange(f).expand(h, f)]
    for _ in range(length - 1):
        expanded.append(expanded[-1].gather(-1, permutation))
    return torch.stack(expanded, dim=1)


def rotate_every_two(x):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope(x, positions, base=10000.0):
    f = x.shape[-1]
    theta = base ** (-2 * torch.arange(f // 2, dtype=torch.float64) / f)
    angles = torch.tensor(positions, dtype=torch.float64)[:, None] * theta[None, :]
    angles = angles.repeat_interleave(2, dim=-1)        # (N, F): pair (2i, 2i+1) shares angle i
    return x * torch.cos(angles) + rotate_every_two(x) * torch.sin(angles)


class Mixer(nn.Module):
    def __init__(self, kind, d, heads, multiplier, cfg, gen):
        super().__init__()
        self.kind, self.heads = kind, heads
        softmax = kind in ("softmax", "causalSoftmax")
        qk = d if softmax else d * multiplier
        self.query, self.key = nn.Linear(d, qk), nn.Linear(d, qk)
        self.value, self.output = nn.Linear(d, d), nn.Linear(d, d)
        f = qk // heads
        self.features = f
        self.buffers_ = {}
        if kind in ("permuteFormer", "causalPermuteFormer", "causalPermuteFormerNoDecay"):
            self.buffers_["permutation"] = torch.stack([torch.randperm(f, generator=gen) for _ in range(heads)])
        if kind == "permuteFormer2D":
            self.buffers_["permutation"] = torch.stack([torch.randperm(f // 2, generator=gen) for _ in range(heads)])
            self.grid = cfg["grid"]
        if kind == "orthogonalFormer":
            us = []
            for _ in range(heads):
                q, r = torch.linalg.qr(torch.randn(f, f, generator=gen, dtype=torch.float64))
                us.append(q)
            self.buffers_["basis"] = torch.stack(us).float()
            self.buffers_["angles"] = (torch.rand(heads, f // 2, generator=gen, dtype=torch.float64) * 2 * math.pi).float()
        if kind == "favor":
            m = cfg["randomFeatures"]
            rows = []
            while len(rows) * f < m:
                q, _ = torch.linalg.qr(torch.randn(f, f, generator=gen, dtype=torch.float64))
                rows.append(q.T)
            omega = torch.cat(rows)[:m]
            norms = torch.randn(m, f, generator=gen, dtype=torch.float64).norm(dim=1)
            self.buffers_["projection"] = (omega * norms[:, None]).float()
        if kind in ("causalPermuteFormer", "causalDecayPerformer"):
            self.buffers_["decay"] = torch.sigmoid(torch.arange(heads, dtype=torch.float64) / heads * 3 + 2).float()
        self.normalized = cfg.get("normalized", False)

    def permutation_table(self, n):
        return expand_permutation(n, self.buffers_["permutation"].long())

    def forward(self, x, mask):
        kind, h = self.kind, self.heads
        b, n, _ = x.shape
        q, k, v = split_heads(self.query(x), h), split_heads(self.key(x), h), split_heads(self.value(x), h)
        maskk = mask[:, None, :, None] if mask is not None else None
        if kind in ("softmax", "causalSoftmax"):
            s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            if mask is not None:
                s = s + (1 - mask)[:, None, None, :] * MASK_BIAS
            if kind == "causalSoftmax":
                s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), float("-inf"))
            return self.output(merge_heads(torch.softmax(s, dim=-1) @ v))
        if kind in ("permuteFormer", "causalPermuteFormer", "causalPermuteFormerNoDecay"):
            table = self.permutation_table(n)[None].expand_as(q)
            q, k = q.gather(-1, table), k.gather(-1, table)
        if kind == "permuteFormer2D":
            g = self.grid
            width, height, prefix, suffix = g["width"], g["height"], g["prefix"], g["suffix"]
            expanded = expand_permutation(max(width, height), self.buffers_["permutation"].long())
            xs = [0] * prefix + [x_ for _ in range(height) for x_ in range(width)] + [width - 1] * suffix
            ys = [0] * prefix + [y_ for y_ in range(height) for _ in range(width)] + [height - 1] * suffix
            table = torch.cat([expanded[:, xs], expanded[:, ys] + self.features // 2], dim=-1)[None].expand_as(q)
            q, k = q.gather(-1, table), k.gather(-1, table)
        if kind == "favor":
            omega = self.buffers_["projection"].double()
            m = omega.shape[0]

            def feat(t, is_query):
                t = t * t.shape[-1] ** -0.25
                proj = t @ omega.T
                diag = (t * t).sum(-1, keepdim=True) / 2
                mx = proj.amax(dim=-1, keepdim=True) if is_query else proj.amax(dim=(-1, -2), keepdim=True)
                return (torch.exp(proj - diag - mx.detach()) + 1e-6) * m ** -0.5
            qf, kf = feat(q, True), feat(k, False)
        else:
            qf, kf = torch.relu(q) + 1e-3, torch.relu(k) + 1e-3
        if kind == "orthogonalFormer":
            u, theta = self.buffers_["basis"].double(), self.buffers_["angles"].double()
            f = self.features
            out_q, out_k = [], []
            for head in range(h):
                rot = torch.zeros(f, f, dtype=torch.float64)
                for i in range(f // 2):
                    c, s_ = math.cos(theta[head, i]), math.sin(theta[head, i])
                    rot[2 * i, 2 * i], rot[2 * i, 2 * i + 1], rot[2 * i + 1, 2 * i], rot[2 * i + 1, 2 * i + 1] = c, -s_, s_, c
                r = u[head] @ rot @ u[head].T
                powers = torch.stack([torch.linalg.matrix_power(r, t) for t in range(n)])      # (N, F, F)
                out_q.append(torch.einsum("tij,btj->bti", powers, qf[:, head]))
                out_k.append(torch.einsum("tij,btj->bti", powers, kf[:, head]))
            qf, kf = torch.stack(out_q, 1), torch.stack(out_k, 1)
        if kind.startswith("causal"):
            scores = qf @ kf.transpose(-1, -2)                                     # (B, H, N, N)
            i = torch.arange(n)
            causal = (i[:, None] >= i[None, :]).double()
            if "decay" in self.buffers_:
                r = self.buffers_["decay"].double()
                power = (i[:, None] - i[None, :]).clamp(min=0).double()
                causal = causal[None] * r[:, None, None] ** power[None]
            scores = scores * causal
            out = scores @ v
            if self.normalized:
                out = out / scores.sum(-1, keepdim=True)
            return self.output(merge_heads(out))
        if maskk is not None:
            kf = kf * maskk
        if kind == "ropePerformer":
            pos = list(range(n))
            num = rope(qf, pos) @ (rope(kf, pos).transpose(-1, -2) @ v)
            den = qf @ kf.sum(-2)[..., None]
            return self.output(merge_heads(num / den))
        num = qf @ (kf.transpose(-1, -2) @ v)
        den = qf @ kf.sum(-2)[..., None]
        return self.output(merge_heads(num / den))


class EncoderBlock(nn.Module):
    def __init__(self, cfg, gen):
        super().__init__()
        d = cfg["dimensions"]
        m = cfg["mixer"]
        self.attentionNorm = nn.LayerNorm(d, eps=cfg["layerNormEpsilon"])
        self.mixer = Mixer(m["kind"], d, cfg["heads"], m["featureMultiplier"], m, gen)
        self.feedForwardNorm = nn.LayerNorm(d, eps=cfg["layerNormEpsilon"])
        self.intermediate = nn.Linear(d, cfg["feedForwardDimensions"])
        self.output = nn.Linear(cfg["feedForwardDimensions"], d)

    def forward(self, x, mask):
        x = x + self.mixer(self.attentionNorm(x), mask)
        return x + self.output(Fn.gelu(self.intermediate(self.feedForwardNorm(x))))


class Encoder(nn.Module):
    def __init__(self, cfg, gen):
        super().__init__()
        d = cfg["dimensions"]
        self.cfg = cfg
        self.pooling = cfg.get("pooling", "cls")
        if "inputFeatures" in cfg:
            self.inputProjection = nn.Linear(cfg["inputFeatures"], d)
        else:
            self.embedding = nn.Embedding(cfg["vocabularySize"], d, padding_idx=cfg["paddingIndex"])
        self.tokenTypeEmbedding = nn.Embedding(1, d)
        if cfg["positions"] == "learned":
            self.positionEmbedding = nn.Embedding(cfg["maxPositions"], d)
        self.embeddingNorm = nn.LayerNorm(d, eps=cfg["layerNormEpsilon"])
        self.blocks = nn.ModuleList([EncoderBlock(cfg, gen) for _ in range(cfg["layers"])])
        width = cfg["length"] * d if self.pooling == "flatten" else d
        if self.pooling != "flatten":
            self.pooler = nn.Linear(d, d)
        if cfg["head"] == "classification":
            self.head = nn.Linear(width, cfg["classes"])
        elif cfg["head"] == "binary":
            self.head = nn.Linear(width, 1)
        elif cfg["head"] == "regression":
            self.head = nn.Linear(width, cfg.get("outputs", 1))
        else:
            self.head = nn.Sequential(nn.Linear(2 * d, 4 * d), nn.ReLU(), nn.Linear(4 * d, 2 * d), nn.ReLU(), nn.Linear(2 * d, 1))

    def pooled(self, x):
        n = x.shape[1]
        if "inputFeatures" in self.cfg:
            h = self.inputProjection(x) + self.tokenTypeEmbedding.weight[0]
            mask = None
        else:
            h = self.embedding(x) + self.tokenTypeEmbedding.weight[0]
            mask = (x != self.cfg["paddingIndex"]).double()
        if self.cfg["positions"] == "learned":
            h = h + self.positionEmbedding(torch.arange(n))
        elif self.cfg["positions"] == "sinusoidal":
            h = h + sinusoidal(list(range(n)), self.cfg["dimensions"])
        h = self.embeddingNorm(h)
        for block in self.blocks:
            h = block(h, mask)
        if self.pooling == "flatten":
            return h.reshape(h.shape[0], -1)
        if self.pooling == "mean":
            if mask is None:
                summary = h.mean(dim=1)
            else:
                summary = (h * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        else:
            summary = h[:, 0]
        return torch.tanh(self.pooler(summary))

    def forward(self, x):
        """x: token ids [B, N] (retrieval: [B, 2N], two documents side by side) or features [B, N, F]."""
        if self.cfg["head"] == "retrieval":
            n = x.shape[1] // 2
            p1, p2 = self.pooled(x[:, :n]), self.pooled(x[:, n:])
            return self.head(torch.cat([p1, p2], dim=-1))
        return self.head(self.pooled(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg, gen):
        super().__init__()
        d = cfg["dimensions"]
        m = cfg["mixer"]
        self.attentionNorm = nn.LayerNorm(d)
        self.mixer = Mixer(m["kind"], d, cfg["heads"], m["featureMultiplier"], m, gen)
        self.feedForwardNorm = nn.LayerNorm(d)
        self.intermediate = nn.Linear(d, cfg["feedForwardDimensions"])
        self.output = nn.Linear(cfg["feedForwardDimensions"], d)

    def forward(self, x):
        x = x + self.mixer(self.attentionNorm(x), None)
        return x + self.output(torch.relu(self.intermediate(self.feedForwardNorm(x))))


class LanguageModel(nn.Module):
    def __init__(self, cfg, gen):
        super().__init__()
        d = cfg["dimensions"]
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg["vocabularySize"], d, padding_idx=cfg["paddingIndex"])
        self.blocks = nn.ModuleList([DecoderBlock(cfg, gen) for _ in range(cfg["layers"])])
        self.finalNorm = nn.LayerNorm(d)
        if not cfg["tiedOutput"]:
            self.outputProjection = nn.Linear(d, cfg["vocabularySize"], bias=False)

    def forward(self, ids):
        n = ids.shape[1]
        h = self.embedding(ids) * math.sqrt(self.cfg["dimensions"])
        if self.cfg["sinusoidalPositions"]:
            h = h + sinusoidal(list(range(n)), self.cfg["dimensions"])
        for block in self.blocks:
            h = block(h)
        h = self.finalNorm(h)
        if self.cfg["tiedOutput"]:
            return h @ self.embedding.weight.T
        return self.outputProjection(h)


def scramble(model, gen, pad):
    """Weights at a scale where every part of the model matters (float32 values)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("Norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "mbedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
                if name == "embedding.weight":
                    p[pad].zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def named_buffers(model):
    out = {}
    for name, module in model.named_modules():
        for key, value in getattr(module, "buffers_", {}).items():
            out[f"{name}.{key}"] = value.float()
    return out


def encoder_config(kind, positions="none", head="classification", multiplier=None, extra=None, **options):
    """`options`: the extension keys (inputFeatures, pooling, length, outputs, maxPositions), written only when given."""
    mixer = {"kind": kind, "featureMultiplier": multiplier if multiplier is not None else (1 if kind == "favor" else 4)}
    mixer.update(extra or {})
    cfg = {
        "vocabularySize": 20, "dimensions": 16, "heads": 2, "layers": 2, "feedForwardDimensions": 24, "dropout": 0.1,
        "mixer": mixer, "positions": positions, "maxPositions": 12, "head": head, "classes": 3, "paddingIndex": 0,
        "layerNormEpsilon": 1e-12, "initializerRange": 0.02,
    }
    cfg.update(options)
    return cfg


def lm_config(kind, normalized=False, tied=True):
    return {
        "vocabularySize": 259, "dimensions": 16, "heads": 2, "layers": 2, "feedForwardDimensions": 32, "dropout": 0.1,
        "mixer": {"kind": kind, "featureMultiplier": 1, "normalized": normalized, "chunkSize": 4},
        "sinusoidalPositions": True, "tiedOutput": tied, "activation": "relu", "paddingIndex": 0,
    }


GRID = {"width": 3, "height": 3, "prefix": 1, "suffix": 1}

ENCODER_CASES = {
    "softmax_learned": encoder_config("softmax", "learned"),
    "softmax_sinusoidal_binary": encoder_config("softmax", "sinusoidal", head="binary"),
    "performer": encoder_config("performer", "learned"),
    "permuteformer": encoder_config("permuteFormer"),
    "permuteformer2d_binary": encoder_config("permuteFormer2D", head="binary", extra={"grid": GRID}),
    "ropeperformer": encoder_config("ropePerformer"),
    "favor": encoder_config("favor", "learned", extra={"randomFeatures": 12}),
    "orthogonalformer": encoder_config("orthogonalFormer", multiplier=1),
    "permuteformer_retrieval": encoder_config("permuteFormer", head="retrieval"),
    # The extensions: Adding-like features -> regression through FLATTEN (N = 16); padded tokens through
    # mean pooling; features with learned positions, mean pooling and a 2-output regression head.
    "permuteformer_features_flatten_regression": encoder_config(
        "permuteFormer", head="regression", inputFeatures=2, pooling="flatten", length=16, outputs=1),
    "softmax_sinusoidal_mean": encoder_config("softmax", "sinusoidal", pooling="mean"),
    "performer_features_learned_mean_regression": encoder_config(
        "performer", "learned", head="regression", inputFeatures=3, pooling="mean", outputs=2),
}

# Cases predating the encoder extensions (seeds 1000 + their index in CASE_ORDER).
ORIGINAL_ENCODER_CASES = [
    "softmax_learned", "softmax_sinusoidal_binary", "performer", "permuteformer", "permuteformer2d_binary",
    "ropeperformer", "favor", "orthogonalformer", "permuteformer_retrieval",
]

LM_CASES = {
    "lm_causalpermuteformer": lm_config("causalPermuteFormer"),
    "lm_causalpermuteformer_normalized_untied": lm_config("causalPermuteFormer", normalized=True, tied=False),
    "lm_causalpermuteformer_nodecay": lm_config("causalPermuteFormerNoDecay"),
    "lm_causaldecayperformer": lm_config("causalDecayPerformer", normalized=True),
    "lm_causalperformer": lm_config("causalPerformer"),
    "lm_causalsoftmax": lm_config("causalSoftmax"),
}


# Fixed order (it defines the seeds): new cases go at the end.
CASE_ORDER = ORIGINAL_ENCODER_CASES + list(LM_CASES) + [k for k in ENCODER_CASES if k not in ORIGINAL_ENCODER_CASES]


def adding_features(gen, b, n):
    """The Adding problem's (value, marker) pairs, values U(-1, 1), two markers per row; float64 [B, N, 2]."""
    x = torch.zeros(b, n, 2, dtype=torch.float64)
    x[:, :, 0] = torch.rand(b, n, generator=gen, dtype=torch.float64) * 2 - 1
    for r in range(b):
        p = torch.randperm(n, generator=gen)[:2]
        x[r, p, 1] = 1.0
    return x


def run_case(name, cfg, is_lm, seed):
    gen = torch.Generator().manual_seed(seed)
    model = (LanguageModel if is_lm else Encoder)(cfg, gen)
    scramble(model, gen, cfg["paddingIndex"])
    tensors = {f"param.{k}": v.detach().clone() for k, v in model.named_parameters()}
    tensors.update({f"buffer.{k}": v for k, v in named_buffers(model).items()})
    model = model.double()
    for mod in model.modules():
        if hasattr(mod, "buffers_"):
            mod.buffers_ = {k: (v.double() if v.is_floating_point() else v) for k, v in mod.buffers_.items()}
    if is_lm:
        n = 12
        ids = torch.randint(3, 259, (2, n), generator=gen)
        ids[:, 0] = 1
        ids[1, -2:] = 0                                  # padded targets are ignored by the loss
        logits = model(ids)
        loss = Fn.cross_entropy(logits[:, :-1].reshape(-1, cfg["vocabularySize"]), ids[:, 1:].reshape(-1), ignore_index=0)
    elif "inputFeatures" in cfg:
        n, f = cfg.get("length", 9), cfg["inputFeatures"]
        if f == 2:
            x = adding_features(gen, 2, n)
            targets = 0.5 + (x[:, :, 0] * x[:, :, 1]).sum(1, keepdim=True) / 4
        else:
            x = torch.randn(2, n, f, generator=gen, dtype=torch.float64)
        x = x.float().double()                           # the stored float32 input is what both sides read
        logits = model(x)
        if f != 2:
            targets = torch.randn(logits.shape, generator=gen, dtype=torch.float64).float().double()
        tensors["input.features"] = x.float()
        tensors["targets.values"] = targets.float()
        loss = Fn.mse_loss(logits, targets.float().double())
    else:
        if cfg["mixer"]["kind"] == "permuteFormer2D":
            n = GRID["prefix"] + GRID["width"] * GRID["height"] + GRID["suffix"]
        else:
            n = 6 if cfg["head"] == "retrieval" else 9
        ids = torch.randint(3, cfg["vocabularySize"], (2, n), generator=gen)
        ids[:, 0] = 1
        ids[:, -1] = 2
        if cfg["mixer"]["kind"] != "permuteFormer2D":
            ids[1, -3:] = 0
            ids[1, -4] = 2
        if cfg["head"] == "retrieval":
            other = torch.randint(3, cfg["vocabularySize"], (2, n), generator=gen)
            other[:, 0] = 1
            other[0, -2:] = 0
            other[0, -3] = 2
            other[1, -1] = 2
            ids = torch.cat([ids, other], dim=1)
        logits = model(ids)
        if cfg["head"] == "regression":
            raise ValueError("token-input regression cases are not generated")
        if cfg["head"] == "classification":
            targets = torch.tensor([0, 2])
            tensors["targets.classes"] = targets.int()
            loss = Fn.cross_entropy(logits, targets)
        else:
            targets = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
            tensors["targets.values"] = targets.float()
            loss = Fn.binary_cross_entropy_with_logits(logits, targets)
    loss.backward()
    if "input.features" not in tensors:
        tensors["input.tokens"] = ids.int()
    tensors["logits"] = logits.detach().float()
    tensors["loss"] = loss.detach().float().reshape(1)
    for k, p in model.named_parameters():
        tensors[f"grad.{k}"] = p.grad.float()
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="Tests/Fixtures")
    parser.add_argument("--cases", nargs="+", metavar="NAME", choices=CASE_ORDER,
                        help="generate only these cases (default: all)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    assert sorted(CASE_ORDER) == sorted(list(ENCODER_CASES) + list(LM_CASES)), "every case needs a place in CASE_ORDER"
    for index, name in enumerate(CASE_ORDER):
        if args.cases and name not in args.cases:
            continue
        is_lm = name in LM_CASES
        cfg = LM_CASES[name] if is_lm else ENCODER_CASES[name]
        tensors = run_case(name, cfg, is_lm, seed=1000 + index)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(args.out, f"attention_{name}.safetensors"))
        with open(os.path.join(args.out, f"attention_{name}.json"), "w") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True)
        scale = tensors["logits"].abs().max().item()
        print(f"attention_{name}: logits {list(tensors['logits'].shape)} max|.| {scale:.4g}, loss {tensors['loss'].item():.5f}")


if __name__ == "__main__":
    main()
