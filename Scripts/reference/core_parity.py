"""PyTorch reference for the core parity test (Tests/LongMixerNNTests/CoreParityTests.swift and
CoreOptimizerParityTests.swift).

Regenerate the fixtures (from the package root):

    python3 Scripts/reference/core_parity.py

Network (float32, seed 0), per-token classification:

    Embedding(11, 16, padding_idx=0) → Linear(16, 32) → GELU(exact) → LayerNorm(32)
        → Dropout(p=0.1, eval mode: identity) → Linear(32, 5) → cross-entropy per token
          (mean over the tokens whose target is not ignore_index = -100)

Inputs: token ids [B=4, N=7] with padding (id 0) in several places; targets [4, 7] with -100 at every
padding position and on the whole of batch row 2 (an ignored row).

Writes
  Tests/Fixtures/core_parity_weights.safetensors  the initial state_dict (names = the Swift module
      tree's dotted names: embedding.weight, hidden.weight/bias, norm.weight/bias, output.weight/bias);
      LayerNorm's affine parameters and the biases are perturbed from their defaults so they matter.
  Tests/Fixtures/core_parity.safetensors
      tokens, targets (I64), logits [4, 7, 5], loss [], grad.<name> for every parameter,
      adam.<name> / adamw.<name>: the parameters after 3 steps of torch.optim.Adam(lr=1e-2) and
      (from the same initial weights) torch.optim.AdamW(lr=1e-2, weight_decay=0.1), recomputing the
      loss and gradients before each step; adam.losses / adamw.losses: the 3 losses those steps used.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
VOCAB, WIDTH, HIDDEN, CLASSES, PAD, IGNORE = 11, 16, 32, 5, 0, -100


class CoreNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, WIDTH, padding_idx=PAD)
        self.hidden = nn.Linear(WIDTH, HIDDEN)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(HIDDEN)
        self.dropout = nn.Dropout(p=0.1)
        self.output = nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens):
        x = self.embedding(tokens)
        x = self.activation(self.hidden(x))
        x = self.dropout(self.norm(x))
        return self.output(x)


def loss_of(model, tokens, targets):
    logits = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, CLASSES), targets.reshape(-1), ignore_index=IGNORE)
    return logits, loss


def smallest_relative_gradient(model):
    """min over nonzero gradient elements of |g| / max|g| of that tensor (Adam's sign(g) is
    sensitive to rounding only when a gradient is near zero relative to its tensor's scale)."""
    worst = float("inf")
    for p in model.parameters():
        g = p.grad.abs()
        nz = g[g > 0]
        if nz.numel():
            worst = min(worst, (nz.min() / g.max()).item())
    return worst


def run_optimizer(initial_state, tokens, targets, make_optimizer, prefix, out):
    model = CoreNet()
    model.load_state_dict(initial_state)
    model.eval()
    optimizer = make_optimizer(model.parameters())
    losses = []
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        _, loss = loss_of(model, tokens, targets)
        loss.backward()
        print(f"  {prefix} loss {loss.item():.6f}, smallest relative |grad| {smallest_relative_gradient(model):.2e}")
        losses.append(loss.item())
        optimizer.step()
    for name, p in model.named_parameters():
        out[f"{prefix}.{name}"] = p.detach().clone()
    out[f"{prefix}.losses"] = torch.tensor(losses, dtype=torch.float32)


def main():
    print(f"torch {torch.__version__}")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)

    model = CoreNet()
    with torch.no_grad():   # non-default affine parameters and biases, so each one is exercised
        model.norm.weight.copy_(1 + 0.2 * torch.randn(HIDDEN))
        model.norm.bias.copy_(0.1 * torch.randn(HIDDEN))
        model.hidden.bias.copy_(0.3 * torch.randn(HIDDEN))
    model.eval()   # dropout is the identity
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert torch.all(initial["embedding.weight"][PAD] == 0)

    tokens = torch.randint(1, VOCAB, (4, 7), dtype=torch.int64)
    tokens[0, 5:] = PAD
    tokens[1, 6] = PAD
    tokens[3, 3] = PAD
    targets = torch.randint(0, CLASSES, (4, 7), dtype=torch.int64)
    targets[tokens == PAD] = IGNORE
    targets[2, :] = IGNORE

    logits, loss = loss_of(model, tokens, targets)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    assert torch.all(grads["embedding.weight"][PAD] == 0), "padding row must get no gradient"
    print(f"loss {loss.item():.6f}, smallest relative |grad| {smallest_relative_gradient(model):.2e}")

    out = {"tokens": tokens, "targets": targets, "logits": logits.detach(), "loss": loss.detach().reshape(())}
    for name, g in grads.items():
        out[f"grad.{name}"] = g
    run_optimizer(initial, tokens, targets, lambda ps: torch.optim.Adam(ps, lr=1e-2), "adam", out)
    run_optimizer(initial, tokens, targets, lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), "adamw", out)

    os.makedirs(FIXTURES, exist_ok=True)
    weights_path = os.path.join(FIXTURES, "core_parity_weights.safetensors")
    save_file({k: v.contiguous() for k, v in initial.items()}, weights_path, metadata={"torch": torch.__version__})
    path = os.path.join(FIXTURES, "core_parity.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"torch": torch.__version__})
    print(f"wrote {weights_path} ({len(initial)} tensors) and {path} ({len(out)} tensors)")


if __name__ == "__main__":
    main()
