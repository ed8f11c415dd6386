#!/usr/bin/env python3
"""PyTorch side of every `longmixer bench` comparison: a worker that builds the same models as the
Swift side and times one call at a time, so that the two sides alternate round by round.

The Swift benchmark starts this script with two named pipes and sends one JSON request per line on
the first; each reply is one JSON line on the second:

  {"op": "hello"}                               -> {"ok", "version", "capability", "threads"}
  {"op": "build", "family": "encoder" | "paramixer", "config": {...}, "length": N, "pair": bool,
   "objective": "classes" | "binary" | "regression", "outputs": C, "tokens": {"low", "high", "cls"},
   "forward_batch": B1, "train_batch": B2, "seed": s}
                                                -> {"ok", "id", "parameters"}   (after one warm-up call of each case)
  {"op": "time", "id": k, "case": "forward" | "train"}
                                                -> {"ok", "seconds", "cpu"}     (wall and process CPU seconds of one call)
  {"op": "drop", "id": k}                       -> {"ok"}

`config` is the Swift model's configuration as it is written to config.json (EncoderConfiguration or
ParamixerConfiguration), so both sides build one model. The encoder is written the way a PyTorch user
would write it fast: softmax through scaled_dot_product_attention; the linear-attention mixers as
phi(Q) (phi(K)^T V) / phi(Q) sum_j phi(K_j); PermuteFormer's feature permutation as a gather with a
precomputed (H, N, F) index table; FAVOR+ with its random projection; RoPE on the features. Paramixer is
the reference of Scripts/reference/paramixer_reference.py with its fastest product (shifted slices).
Inputs are random ids in [low, high) (CLS first where given), never padding, so no key mask is applied.

"forward": eval mode under torch.no_grad, a batch of B1. "train": train mode, loss, backward and one
Adam step on a batch of B2. Errors are replies with "ok": false and "error"; the worker ends when the
request pipe closes.

Usage: torch_worker.py --requests PIPE --replies PIPE --threads T
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--requests", required=True)
parser.add_argument("--replies", required=True)
parser.add_argument("--threads", type=int, default=os.cpu_count())
args = parser.parse_args()

for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[key] = str(args.threads)

import torch  # noqa: E402  (after the thread environment)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

torch.set_num_threads(args.threads)


def load_reference(name):
    """A script of Scripts/reference as a module (its command line runs only as __main__)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARAMIXER = load_reference("paramixer_reference")
PARAMIXER.FACTOR = PARAMIXER.factor_shift
ATTENTION = load_reference("attention_reference")
split_heads, merge_heads = ATTENTION.split_heads, ATTENTION.merge_heads


# ---- Encoder (pre-LN, as the Swift EncoderClassifier) ----

def orthogonal_projection(m, f, gen):
    rows = []
    while len(rows) * f < m:
        q, _ = torch.linalg.qr(torch.randn(f, f, generator=gen, dtype=torch.float64))
        rows.append(q.T)
    omega = torch.cat(rows)[:m]
    norms = torch.randn(m, f, generator=gen, dtype=torch.float64).norm(dim=1)
    return (omega * norms[:, None]).float()


class Mixer(nn.Module):
    def __init__(self, d, heads, mixer, max_length, gen):
        super().__init__()
        self.kind, self.heads = mixer["kind"], heads
        known = ("softmax", "performer", "permuteFormer", "favor", "ropePerformer")
        if self.kind not in known:
            raise ValueError(f"the PyTorch side has no mixer {self.kind!r}; it has {', '.join(known)}")
        qk = d if self.kind == "softmax" else d * mixer.get("featureMultiplier", 1)
        self.f = qk // heads
        self.eps = mixer.get("kernelEpsilon", 1e-3)
        self.attention_dropout = mixer.get("attentionDropout", 0.0)
        self.query, self.key = nn.Linear(d, qk), nn.Linear(d, qk)
        self.value, self.output = nn.Linear(d, d), nn.Linear(d, d)
        if self.kind == "permuteFormer":
            perm = torch.stack([torch.randperm(self.f, generator=gen) for _ in range(heads)])
            table = torch.empty(heads, max_length, self.f, dtype=torch.long)
            table[:, 0] = torch.arange(self.f)
            for t in range(1, max_length):
                table[:, t] = table[:, t - 1].gather(-1, perm)
            self.register_buffer("table", table, persistent=False)
        if self.kind == "favor":
            m = mixer.get("randomFeatures") or self.f
            self.register_buffer("omega", orthogonal_projection(m, self.f, gen), persistent=False)
        if self.kind == "ropePerformer":
            base = mixer.get("ropeBase", 10000.0)
            theta = base ** (-2 * torch.arange(self.f // 2, dtype=torch.float64) / self.f)
            angles = torch.arange(max_length, dtype=torch.float64)[:, None] * theta[None, :]
            angles = angles.repeat_interleave(2, dim=-1)
            self.register_buffer("cos", torch.cos(angles).float(), persistent=False)
            self.register_buffer("sin", torch.sin(angles).float(), persistent=False)

    def favor_features(self, t, is_query):
        t = t * t.shape[-1] ** -0.25
        proj = t @ self.omega.T
        diag = (t * t).sum(-1, keepdim=True) / 2
        mx = proj.amax(dim=-1, keepdim=True) if is_query else proj.amax(dim=(-1, -2), keepdim=True)
        return (torch.exp(proj - diag - mx.detach()) + 1e-6) * self.omega.shape[0] ** -0.5

    def forward(self, x):
        n, h = x.shape[1], self.heads
        q, k, v = split_heads(self.query(x), h), split_heads(self.key(x), h), split_heads(self.value(x), h)
        if self.kind == "softmax":
            p = self.attention_dropout if self.training else 0.0
            return self.output(merge_heads(Fn.scaled_dot_product_attention(q, k, v, dropout_p=p)))
        if self.kind == "favor":
            q, k = self.favor_features(q, True), self.favor_features(k, False)
        else:
            q, k = torch.relu(q) + self.eps, torch.relu(k) + self.eps
        if self.kind == "permuteFormer":
            table = self.table[:, :n].unsqueeze(0).expand_as(q)
            q, k = q.gather(-1, table), k.gather(-1, table)
        den = q @ k.sum(-2).unsqueeze(-1)
        if self.kind == "ropePerformer":
            cos, sin = self.cos[:n], self.sin[:n]

            def rope(t):
                rotated = torch.stack((-t[..., 1::2], t[..., 0::2]), dim=-1).flatten(-2)
                return t * cos + rotated * sin
            num = rope(q) @ (rope(k).transpose(-1, -2) @ v)
        else:
            num = q @ (k.transpose(-1, -2) @ v)
        return self.output(merge_heads(num / den))


class Block(nn.Module):
    def __init__(self, cfg, max_length, gen):
        super().__init__()
        d, eps = cfg["dimensions"], cfg.get("layerNormEpsilon", 1e-12)
        self.attentionNorm = nn.LayerNorm(d, eps=eps)
        self.mixer = Mixer(d, cfg["heads"], cfg["mixer"], max_length, gen)
        self.feedForwardNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Linear(d, cfg["feedForwardDimensions"])
        self.output = nn.Linear(cfg["feedForwardDimensions"], d)
        self.dropout = nn.Dropout(cfg.get("dropout", 0))

    def forward(self, x):
        x = x + self.dropout(self.mixer(self.attentionNorm(x)))
        return x + self.dropout(self.output(Fn.gelu(self.intermediate(self.feedForwardNorm(x)))))


class Encoder(nn.Module):
    def __init__(self, cfg, max_length, gen):
        super().__init__()
        d = cfg["dimensions"]
        self.cfg, self.pooling, self.head_kind = cfg, cfg.get("pooling", "cls"), cfg["head"]
        if cfg.get("inputFeatures") is not None:
            self.inputProjection = nn.Linear(cfg["inputFeatures"], d)
        else:
            self.embedding = nn.Embedding(cfg["vocabularySize"], d, padding_idx=cfg.get("paddingIndex"))
        self.tokenType = nn.Parameter(torch.zeros(d))
        self.positions = nn.Embedding(cfg["maxPositions"], d) if cfg["positions"] == "learned" else None
        self.embeddingNorm = nn.LayerNorm(d, eps=cfg.get("layerNormEpsilon", 1e-12))
        self.embeddingDropout = nn.Dropout(cfg.get("dropout", 0))
        self.blocks = nn.ModuleList([Block(cfg, max_length, gen) for _ in range(cfg["layers"])])
        if self.pooling != "flatten":
            self.pooler = nn.Linear(d, d)
        width = max_length * d if self.pooling == "flatten" else d
        if self.head_kind == "retrieval":
            self.head = nn.Sequential(nn.Linear(2 * d, 4 * d), nn.ReLU(), nn.Linear(4 * d, 2 * d), nn.ReLU(), nn.Linear(2 * d, 1))
        elif self.head_kind == "classification":
            self.head = nn.Linear(width, cfg["classes"])
        elif self.head_kind == "regression":
            self.head = nn.Linear(width, cfg.get("outputs", 1))
        else:
            self.head = nn.Linear(width, 1)
        if cfg["mixer"]["kind"] == "ropePerformer" and cfg["positions"] == "sinusoidal":
            raise ValueError("sinusoidal positions are not on the PyTorch side")

    def pooled(self, x):
        n = x.shape[1]
        h = (self.inputProjection(x) if hasattr(self, "inputProjection") else self.embedding(x)) + self.tokenType
        if self.positions is not None:
            h = h + self.positions.weight[:n]
        h = self.embeddingDropout(self.embeddingNorm(h))
        for block in self.blocks:
            h = block(h)
        if self.pooling == "flatten":
            return h.reshape(h.shape[0], -1)
        summary = h.mean(dim=1) if self.pooling == "mean" else h[:, 0]
        return torch.tanh(self.pooler(summary))

    def forward(self, x):
        if self.head_kind == "retrieval":
            b, n = x.shape[0], x.shape[1] // 2
            p = self.pooled(torch.cat([x[:, :n], x[:, n:]], dim=0))   # both documents in one batch, as the Swift side
            return self.head(torch.cat([p[:b], p[b:]], dim=-1))
        return self.head(self.pooled(x))


# ---- Worker ----

class Case:
    def __init__(self, request):
        family, cfg = request["family"], request["config"]
        n, pair = request["length"], request.get("pair", False)
        gen = torch.Generator().manual_seed(request.get("seed", 42))
        torch.manual_seed(request.get("seed", 42))
        if family == "encoder":
            self.model = Encoder(cfg, n, gen)
            vocabulary = cfg["vocabularySize"]
        elif family == "paramixer":
            self.model = PARAMIXER.ParamixerReference(cfg)
            vocabulary = cfg.get("vocabularySize")
        else:
            raise ValueError(f"unknown family {family!r}")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        features = cfg.get("inputFeatures")
        objective, outputs = request["objective"], request["outputs"]

        tokens = request.get("tokens") or {}

        def inputs(batch):
            if features is not None:
                return torch.randn(batch, n, features, generator=gen)
            ids = torch.randint(tokens.get("low", 0), tokens.get("high", vocabulary), (batch, 2 * n if pair else n), generator=gen)
            if tokens.get("cls") is not None:
                ids[:, 0] = tokens["cls"]
                if pair:
                    ids[:, n] = tokens["cls"]
            return ids

        self.forward_input = inputs(request["forward_batch"])
        b = request["train_batch"]
        self.train_input = inputs(b)
        if objective == "classes":
            target = torch.randint(0, outputs, (b,), generator=gen)
            self.loss = lambda out: Fn.cross_entropy(out, target)
        elif objective == "binary":
            target = (torch.arange(b) % 2).float()[:, None]
            self.loss = lambda out: Fn.binary_cross_entropy_with_logits(out, target)
        else:
            target = torch.randn(b, outputs, generator=gen)
            self.loss = lambda out: Fn.mse_loss(out, target)
        self.run("forward")
        self.run("train")

    def run(self, case):
        if case == "forward":
            self.model.eval()
            with torch.no_grad():
                self.model(self.forward_input)
        elif case == "train":
            self.model.train()
            self.optimizer.zero_grad(set_to_none=False)
            self.loss(self.model(self.train_input)).backward()
            self.optimizer.step()
        else:
            raise ValueError(f"unknown case {case!r}")

    def time(self, case):
        c0, t0 = time.process_time(), time.perf_counter()
        self.run(case)
        return time.perf_counter() - t0, time.process_time() - c0


def main():
    cases, next_id = {}, 0
    a = torch.randn(512, 512)
    torch.mm(a, a)  # BLAS warm-up
    with open(args.requests, "r") as requests, open(args.replies, "w") as replies:
        for line in requests:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                op = r["op"]
                if op == "hello":
                    reply = {"version": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
                             "threads": torch.get_num_threads()}
                elif op == "build":
                    case = Case(r)
                    cases[next_id] = case
                    reply = {"id": next_id, "parameters": sum(p.numel() for p in case.model.parameters())}
                    next_id += 1
                elif op == "time":
                    seconds, cpu = cases[r["id"]].time(r["case"])
                    reply = {"seconds": seconds, "cpu": cpu}
                elif op == "drop":
                    cases.pop(r["id"], None)
                    reply = {}
                else:
                    raise ValueError(f"unknown op {op!r}")
                reply["ok"] = True
            except Exception as e:  # reported to the Swift side, which names the model it asked for
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


if __name__ == "__main__":
    sys.exit(main())
