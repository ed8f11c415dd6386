#!/usr/bin/env python3
"""PyTorch side of `longmixer bench attention`.

Builds the same LRA encoder as the Swift benchmark (text preset: D 512, 8 heads, FFN 2048, pre-LN,
binary head, vocabulary 259, dropout 0; Q/K of the Performer family at 4 x Dh = 256 features per head,
FAVOR+ at 1 x Dh with m = 64 random features; learned positions for softmax/performer/favor, none for
permuteFormer/ropePerformer) in the fast formulation a PyTorch user would write:

- softmax: torch.nn.functional.scaled_dot_product_attention;
- Performer: phi = relu + 1e-3, matmul-based linear attention  phi(Q) @ (phi(K)^T V) / phi(Q) @ sum_j phi(K_j);
- PermuteFormer: the same, with q/k features gathered by a precomputed (H, N, F) index table of
  pi_h^t (built once outside the timed region, as the reference code's `expand_permutation`);
- FAVOR+: exp(Omega x' - |x'|^2/2 - max) + 1e-6, scaled by m^-1/2 (query max per row, key max per head);
- RoPE-Performer: rotate phi(q), phi(k) with precomputed cos/sin tables, numerator only.

Times forward (eval, torch.no_grad) and forward+backward (train, BCE-with-logits loss, backward into
all parameters, no optimizer), best of --repeats samples, the mixers of one length interleaved round by
round. Thread count: OMP/MKL/OPENBLAS env vars (set before importing torch) and torch.set_num_threads;
one 1024^3 matmul warm-up, then one warm-up call per case. Prints JSON on stdout:
{"version", "threads", "capability", "rows": [{"mixer", "length", "forward", "training", "skipped", "forward_cpu",
"training_cpu"}]} (best wall seconds per call; *_cpu: best process CPU seconds per call, all threads).

Usage: attention_torch.py --lengths 1024,4096 --mixers softmax,performer --threads 2 --repeats 5
"""
import argparse
import json
import math
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--lengths", default="256,1024,4096,16384")
parser.add_argument("--mixers", default="softmax,performer,permuteFormer,favor,ropePerformer")
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--layers", type=int, default=1)
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--max-length", type=int, default=None, help="rows of the learned position table (default: longest length)")
parser.add_argument("--softmax-limit-gib", type=float, default=1.0)
args = parser.parse_args()

for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[key] = str(args.threads)

import torch  # noqa: E402  (after the thread environment)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

torch.set_num_threads(args.threads)

D, HEADS, FFN, VOCAB = 512, 8, 2048, 259
DH = D // HEADS
EPS = 1e-3
LEARNED = {"softmax", "performer", "favor"}


def split_heads(x):
    b, n, w = x.shape
    return x.view(b, n, HEADS, w // HEADS).transpose(1, 2)


def merge_heads(x):
    b, h, n, e = x.shape
    return x.transpose(1, 2).reshape(b, n, h * e)


def orthogonal_projection(m, f, gen):
    rows = []
    while len(rows) * f < m:
        q, _ = torch.linalg.qr(torch.randn(f, f, generator=gen, dtype=torch.float64))
        rows.append(q.T)
    omega = torch.cat(rows)[:m]
    norms = torch.randn(m, f, generator=gen, dtype=torch.float64).norm(dim=1)
    return (omega * norms[:, None]).float()


class Mixer(nn.Module):
    def __init__(self, kind, max_length, gen):
        super().__init__()
        self.kind = kind
        multiplier = 1 if kind in ("softmax", "favor") else 4
        qk = D * multiplier
        self.f = qk // HEADS
        self.query, self.key = nn.Linear(D, qk), nn.Linear(D, qk)
        self.value, self.output = nn.Linear(D, D), nn.Linear(D, D)
        if kind == "permuteFormer":
            perm = torch.stack([torch.randperm(self.f, generator=gen) for _ in range(HEADS)])
            # (H, N, F): table[h, t] = pi_h^t as an index array (expanded[t][j] = expanded[t-1][perm[j]]).
            table = torch.empty(HEADS, max_length, self.f, dtype=torch.long)
            table[:, 0] = torch.arange(self.f)
            for t in range(1, max_length):
                table[:, t] = table[:, t - 1].gather(-1, perm)
            self.register_buffer("table", table, persistent=False)
        if kind == "favor":
            self.register_buffer("omega", orthogonal_projection(self.f, self.f, gen), persistent=False)
        if kind == "ropePerformer":
            theta = 10000.0 ** (-2 * torch.arange(self.f // 2, dtype=torch.float64) / self.f)
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
        n = x.shape[1]
        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        if self.kind == "softmax":
            return self.output(merge_heads(Fn.scaled_dot_product_attention(q, k, v)))
        if self.kind == "favor":
            q, k = self.favor_features(q, True), self.favor_features(k, False)
        else:
            q, k = torch.relu(q) + EPS, torch.relu(k) + EPS
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
    def __init__(self, kind, max_length, gen):
        super().__init__()
        self.attentionNorm = nn.LayerNorm(D, eps=1e-12)
        self.mixer = Mixer(kind, max_length, gen)
        self.feedForwardNorm = nn.LayerNorm(D, eps=1e-12)
        self.intermediate, self.output = nn.Linear(D, FFN), nn.Linear(FFN, D)

    def forward(self, x):
        x = x + self.mixer(self.attentionNorm(x))
        return x + self.output(Fn.gelu(self.intermediate(self.feedForwardNorm(x))))


class Encoder(nn.Module):
    def __init__(self, kind, layers, max_length, gen):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, D, padding_idx=0)
        self.tokenType = nn.Parameter(torch.zeros(D))
        self.positions = nn.Embedding(max_length, D) if kind in LEARNED else None
        self.embeddingNorm = nn.LayerNorm(D, eps=1e-12)
        self.blocks = nn.ModuleList([Block(kind, max_length, gen) for _ in range(layers)])
        self.pooler, self.head = nn.Linear(D, D), nn.Linear(D, 1)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02, generator=gen)

    def forward(self, ids):
        n = ids.shape[1]
        h = self.embedding(ids) + self.tokenType
        if self.positions is not None:
            h = h + self.positions.weight[:n]
        h = self.embeddingNorm(h)
        for block in self.blocks:
            h = block(h)
        return self.head(torch.tanh(self.pooler(h[:, 0])))


def main():
    lengths = [int(s) for s in args.lengths.split(",")]
    kinds = [s.strip() for s in args.mixers.split(",") if s.strip()]
    known = {"softmax", "performer", "permuteFormer", "favor", "ropePerformer"}
    for k in kinds:
        if k not in known:
            sys.exit(f"unknown mixer {k!r}; mixers: {', '.join(sorted(known))}")
    max_length = args.max_length or max(lengths)
    a = torch.randn(1024, 1024)
    torch.mm(a, a)  # BLAS warm-up
    rows = []
    for n in lengths:
        gen = torch.Generator().manual_seed(1234 + n)
        ids = torch.randint(3, VOCAB, (args.batch, n), generator=gen)
        ids[:, 0] = 1
        targets = (torch.arange(args.batch) % 2).float()[:, None]
        cases = []
        for kind in kinds:
            row = {"mixer": kind, "length": n, "forward": None, "training": None, "skipped": None,
                   "forward_cpu": None, "training_cpu": None}
            rows.append(row)
            if kind == "softmax":
                gib = args.batch * HEADS * n * n * 4 / 2 ** 30
                if gib > args.softmax_limit_gib:
                    row["skipped"] = f"N^2 scores = {gib:.2f} GiB"
                    continue
            model = Encoder(kind, args.layers, max_length, torch.Generator().manual_seed(42))

            def forward(model=model):
                model.eval()
                with torch.no_grad():
                    model(ids)

            def training(model=model):
                model.train()
                model.zero_grad(set_to_none=True)
                loss = Fn.binary_cross_entropy_with_logits(model(ids), targets)
                loss.backward()
            cases += [(row, "forward", forward), (row, "training", training)]
        for _, _, body in cases:
            body()  # warm-up
        best = [math.inf] * len(cases)
        best_cpu = [math.inf] * len(cases)
        for _ in range(args.repeats):
            for i, (_, _, body) in enumerate(cases):
                c0, t0 = time.process_time(), time.perf_counter()
                body()
                best[i] = min(best[i], time.perf_counter() - t0)
                best_cpu[i] = min(best_cpu[i], time.process_time() - c0)
        for (row, key, _), t, c in zip(cases, best, best_cpu):
            row[key] = t
            row[key + "_cpu"] = c
    print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(),
                      "capability": torch.backends.cpu.get_cpu_capability(), "rows": rows}))


if __name__ == "__main__":
    main()
